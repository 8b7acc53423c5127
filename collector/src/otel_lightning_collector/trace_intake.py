"""TraceIntake: what an OTLP trace export does, whatever carried it (gRPC or HTTP).

Decode, commit the request whole, acknowledge; the spans are checked and stored one by one later
by the SpanIndexer. Overload and store failures raise `ExportRefusedError`, which each transport maps to
its retryable answer (gRPC UNAVAILABLE, HTTP 503): nothing is acknowledged that was not committed.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_lightning_collector.export_activity import ExportActivity
from otel_lightning_collector.export_tickets import ExportTicket
from otel_lightning_collector.indexer import SpanIndexer
from otel_lightning_collector.spans import has_rollout_spans
from otel_lightning_collector.store import Store

logger = logging.getLogger(__name__)


class ExportRefusedError(Exception):
    """The request was not accepted and may be sent again later (the exporter retries)."""


@dataclass
class IntakeCounters:
    requests: int = 0
    # Spans of requests committed for indexing (some may turn out foreign or rejected there).
    spans_accepted: int = 0
    # Spans of requests with no rollout span at all: forwarded if configured, not kept.
    spans_foreign: int = 0
    requests_malformed: int = 0
    requests_refused: int = 0
    other_signal_requests: int = 0


class TraceIntake:
    def __init__(
        self,
        store: Store,
        indexer: SpanIndexer,
        *,
        max_concurrent_exports: int = 16,
        forward: Callable[[bytes], None] | None = None,
        activity: ExportActivity | None = None,
    ) -> None:
        # Each transport marks its whole request (decoding included) as an export in flight.
        self.activity = activity or ExportActivity()
        self.store = store
        self.indexer = indexer
        self.forward = forward
        self.counters = IntakeCounters()
        # A rollout is a trace: a request with no rollout span is kept too when this says so (a span
        # of it belongs to a known rollout trace, or --episodes keeps all traffic); see trace_membership.
        self.keeps: Callable[[ExportTraceServiceRequest], bool] | None = None
        # Told the spans not kept (counted, logged at most once a minute, shown by status).
        self.not_kept: Callable[[int], None] | None = None
        self._slots = threading.BoundedSemaphore(max_concurrent_exports)
        self._counter_lock = threading.Lock()

    def export(
        self, request: ExportTraceServiceRequest, raw: bytes | None = None, ticket: ExportTicket | None = None
    ) -> ExportTraceServiceResponse:
        """Accept a parsed request (`raw`: its wire bytes, if it came as protobuf).

        Only what acknowledging needs is done here: the request is committed whole when any span
        may belong to a rollout. Each span is checked when it is indexed; one that cannot be used is
        kept aside with the reason (`rejected_spans` in the store), logged and counted, so per-span
        problems do not come back as a `partial_success`. `ticket`: the one its transport opened
        (`ExportActivity.exporting`); without one, the request is marked in flight here.
        """
        if ticket is None:
            with self.activity.exporting() as own_ticket:
                return self.export(request, raw, own_ticket)
        if raw is None:
            raw = request.SerializeToString()
        span_count = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        if not self._slots.acquire(blocking=False):
            self.refuse("collector is at its concurrent export limit; retry later")
        try:
            if has_rollout_spans(raw) or (self.keeps is not None and self.keeps(request)):
                if not self.indexer.has_room():
                    self.refuse(f"collector has {self.indexer.pending_spans} spans waiting to be indexed; retry later")
                try:
                    batch_id = self.store.append_batch(raw)
                except sqlite3.Error as error:
                    logger.error("store %s refused an export request: %s", self.store.path, error)
                    self.refuse(f"collector store is not writable ({error}); retry later")
                # From here the indexer closes the ticket, once the request's spans are stored.
                ticket.handed_over = True
                self.indexer.submit(batch_id, request, span_count, ticket)
                self.count(requests=1, spans_accepted=span_count)
            else:
                self.count(requests=1, spans_foreign=span_count)
                if self.not_kept is not None:
                    self.not_kept(span_count)
        finally:
            self._slots.release()
        if self.forward is not None:
            self.forward(raw)
        return ExportTraceServiceResponse()

    def refuse(self, reason: str) -> None:
        self.count(requests_refused=1)
        raise ExportRefusedError(reason)

    def count(self, **increments: int) -> None:
        with self._counter_lock:
            for name, value in increments.items():
                setattr(self.counters, name, getattr(self.counters, name) + value)
