"""The OTLP/gRPC TraceService receiver: decode, hand to the TraceIntake, answer in gRPC terms."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_lightning_collector.export_activity import ExportActivity
from otel_lightning_collector.export_tickets import ExportTicket
from otel_lightning_collector.trace_intake import ExportRefusedError, IntakeCounters, RequestTooLargeError, TraceIntake

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
# `opentelemetry-instrument` exports metrics and logs to the same endpoint by default; they are
# acknowledged and not kept (an empty Export*ServiceResponse is two zero bytes: no fields).
OTHER_SIGNAL_SERVICES = (
    "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "opentelemetry.proto.collector.logs.v1.LogsService",
)


def refused_status(refused: ExportRefusedError) -> grpc.Status:
    """The gRPC status of a refused export: its code, reason and a RetryInfo detail (in the status
    details, as the Collector's exporters read it, and as `google.rpc.retryinfo-bin`, where the
    OpenTelemetry Python exporter looks)."""
    delay = duration_pb2.Duration()
    delay.FromNanoseconds(int(refused.retry_after_s * 1e9))
    retry_info = error_details_pb2.RetryInfo(retry_delay=delay)
    detail = any_pb2.Any()
    detail.Pack(retry_info)
    code = code_pb2.RESOURCE_EXHAUSTED if refused.throttled else code_pb2.UNAVAILABLE
    status = rpc_status.to_status(status_pb2.Status(code=code, message=str(refused), details=[detail]))
    return status._replace(
        trailing_metadata=(*status.trailing_metadata, ("google.rpc.retryinfo-bin", retry_info.SerializeToString()))
    )


# The ticket ExportTicketInterceptor opened when this call arrived (None: no interceptor).
_ARRIVAL_TICKET: contextvars.ContextVar[ExportTicket | None] = contextvars.ContextVar("arrival_ticket", default=None)
# A call whose handler has not started this long after it arrived was cancelled: its ticket is dropped.
_UNSTARTED_S = 60.0
TRACE_EXPORT_PATH = f"/{TRACE_SERVICE}/Export"


class ExportTicketInterceptor(grpc.ServerInterceptor):
    """Numbers each trace export when its call arrives, on gRPC's serving thread, in arrival order:
    grpc-python receives a request's body on a pool thread before the handler runs, so a ticket
    opened by the handler would miss a request still arriving while a root's request is acknowledged."""

    def __init__(self, activity: ExportActivity) -> None:
        self.activity = activity

    def intercept_service(
        self, continuation: Callable[[Any], Any], handler_call_details: grpc.HandlerCallDetails
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method != TRACE_EXPORT_PATH or handler.unary_unary is None:
            return handler
        ticket = self.activity.tickets.open(unstarted_for_s=_UNSTARTED_S)
        behavior = handler.unary_unary

        def with_ticket(request: bytes, context: grpc.ServicerContext) -> bytes:
            self.activity.tickets.start(ticket)
            token = _ARRIVAL_TICKET.set(ticket)
            try:
                return behavior(request, context)
            finally:
                _ARRIVAL_TICKET.reset(token)
                if ticket.barrier is None:  # refused before the receiver ran (a bad token): nothing to wait for
                    self.activity.tickets.end_request(ticket)

        return grpc.unary_unary_rpc_method_handler(
            with_ticket,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


class OtlpTraceReceiver:
    """Handles `TraceService/Export` on raw bytes, so a malformed request gets INVALID_ARGUMENT with
    the decoder's reason instead of a generic deserialization failure, and the bytes are stored
    (and forwarded) as they came. A refused export answers UNAVAILABLE (the collector cannot take it
    now) or RESOURCE_EXHAUSTED (over the concurrent export limit), with RetryInfo saying when to
    retry, as the OTLP spec's throttling asks (exporters retry RESOURCE_EXHAUSTED only with RetryInfo).
    """

    def __init__(self, intake: TraceIntake) -> None:
        self.intake = intake
        # The collector's SignalIntake (logs kept, metrics forwarded); None: acknowledged, not kept.
        self.signals: Any = None

    @property
    def counters(self) -> IntakeCounters:
        return self.intake.counters

    def export(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        with self.intake.activity.exporting(_ARRIVAL_TICKET.get()) as ticket:
            try:
                request = ExportTraceServiceRequest.FromString(raw)
            except DecodeError as error:
                self.intake.count(requests_malformed=1)
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed OTLP ExportTraceServiceRequest: {error}")
            try:
                return self.intake.export(request, raw, ticket).SerializeToString()
            except ExportRefusedError as refused:
                context.abort_with_status(refused_status(refused))
            except RequestTooLargeError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))

    def _ignore_other_signal(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        self.intake.count(other_signal_requests=1)
        return b""

    def _other_signal(self, service: str) -> Callable[[bytes, grpc.ServicerContext], bytes]:
        """Logs are kept and metrics forwarded by the collector's SignalIntake (`self.signals`, set
        by the server); without one they are acknowledged and not kept."""
        signal = "logs" if ".logs." in service else "metrics"

        def export(raw: bytes, context: grpc.ServicerContext) -> bytes:
            signals = self.signals
            if signals is None:
                return self._ignore_other_signal(raw, context)
            self.intake.count(other_signal_requests=1)
            try:
                signals.export(signal, raw)
            except ExportRefusedError as refused:
                context.abort_with_status(refused_status(refused))
            except ValueError as error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
            return b""

        return export

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        handlers = [
            grpc.method_handlers_generic_handler(
                TRACE_SERVICE, {"Export": grpc.unary_unary_rpc_method_handler(self.export)}
            )
        ]
        handlers.extend(
            grpc.method_handlers_generic_handler(
                service, {"Export": grpc.unary_unary_rpc_method_handler(self._other_signal(service))}
            )
            for service in OTHER_SIGNAL_SERVICES
        )
        return handlers
