"""The OTLP/gRPC TraceService receiver: decode, store durably, then acknowledge."""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass

import grpc
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_lightning_collector.assembler import RolloutAssembler
from otel_lightning_collector.spans import decode_request
from otel_lightning_collector.store import Store

logger = logging.getLogger(__name__)

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
# `opentelemetry-instrument` exports metrics and logs to the same endpoint by default; they are
# acknowledged and not kept (an empty Export*ServiceResponse is two zero bytes: no fields).
OTHER_SIGNAL_SERVICES = (
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "opentelemetry.proto.collector.logs.v1.LogsService",
)


@dataclass
class ReceiverCounters:
    requests: int = 0
    spans_stored: int = 0
    spans_duplicate: int = 0
    spans_late: int = 0
    spans_foreign: int = 0
    spans_rejected: int = 0
    requests_malformed: int = 0
    requests_refused: int = 0
    other_signal_requests: int = 0


class OtlpTraceReceiver:
    """Handles `TraceService/Export` on raw bytes, so a malformed request gets INVALID_ARGUMENT with
    the decoder's reason instead of a generic deserialization failure.

    Overload (more than `max_concurrent_exports` at once) and store failures answer UNAVAILABLE,
    which OTLP exporters retry with backoff: nothing is acknowledged that was not committed.
    """

    def __init__(self, store: Store, assembler: RolloutAssembler, *, max_concurrent_exports: int = 16) -> None:
        self.store = store
        self.assembler = assembler
        self.counters = ReceiverCounters()
        self._slots = threading.BoundedSemaphore(max_concurrent_exports)
        self._counter_lock = threading.Lock()

    def export(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        try:
            request = ExportTraceServiceRequest.FromString(raw)
        except DecodeError as error:
            self._count(requests_malformed=1)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed OTLP ExportTraceServiceRequest: {error}")
        if not self._slots.acquire(blocking=False):
            self._count(requests_refused=1)
            context.abort(grpc.StatusCode.UNAVAILABLE, "collector is at its concurrent export limit; retry later")
        try:
            decoded = decode_request(request)
            try:
                result = self.store.ingest(decoded.records)
            except sqlite3.Error as error:
                self._count(requests_refused=1)
                logger.error("store %s refused spans: %s", self.store.path, error)
                context.abort(grpc.StatusCode.UNAVAILABLE, f"collector store is not writable ({error}); retry later")
        finally:
            self._slots.release()
        self.assembler.submit(result.ready)
        self._count(
            requests=1,
            spans_stored=result.stored,
            spans_duplicate=result.duplicates,
            spans_late=result.late,
            spans_foreign=decoded.foreign_spans,
            spans_rejected=decoded.rejected_spans,
        )
        if result.late:
            logger.warning("%d span(s) arrived after their rollout was completed; kept, not trained on", result.late)
        response = ExportTraceServiceResponse()
        if decoded.rejected_spans:
            response.partial_success.rejected_spans = decoded.rejected_spans
            response.partial_success.error_message = "; ".join(decoded.reasons)
        return response.SerializeToString()

    def _count(self, **increments: int) -> None:
        with self._counter_lock:
            for name, value in increments.items():
                setattr(self.counters, name, getattr(self.counters, name) + value)

    def _ignore_other_signal(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        self._count(other_signal_requests=1)
        return b""

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        handlers = [
            grpc.method_handlers_generic_handler(
                TRACE_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self.export)}
            )
        ]
        handlers.extend(
            grpc.method_handlers_generic_handler(
                service, {"Export": grpc.unary_unary_rpc_method_handler(self._ignore_other_signal)}
            )
            for service in OTHER_SIGNAL_SERVICES
        )
        return handlers
