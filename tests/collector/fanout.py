"""A Python stand-in for the OpenTelemetry Collector's `loadbalancing` exporter, for tests.

It receives OTLP/gRPC and sends each span on to one of several collectors, chosen by a hash of
its trace id (`routing_key: traceID`) or of its rollout id attribute: the routing rule that keeps
every rollout whole on one collector. Resource and scope are kept per span.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_lightning import semconv
from otel_lightning_collector.forwarder import EXPORT_METHOD
from otel_lightning_collector.spans import any_value


def _route_key(span, by: str) -> bytes:
    if by == "traceID":
        return span.trace_id
    for kv in span.attributes:
        if kv.key == semconv.ROLLOUT_ID:
            return str(any_value(kv.value)).encode()
    return span.trace_id  # spans outside any rollout: by trace, as the exporter would


class TraceFanOut:
    def __init__(self, targets: Sequence[str], by: str = "traceID") -> None:
        self.by = by
        self.exports = [grpc.insecure_channel(target).unary_unary(EXPORT_METHOD) for target in targets]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService",
                    {"Export": grpc.unary_unary_rpc_method_handler(self._export)},
                ),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"

    def backend_of(self, key: bytes) -> int:
        return int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % len(self.exports)

    def _export(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        request = ExportTraceServiceRequest.FromString(raw)
        parts = [ExportTraceServiceRequest() for _ in self.exports]
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    part = parts[self.backend_of(_route_key(span, self.by))]
                    target_resource = part.resource_spans.add(resource=resource_spans.resource)
                    target_resource.scope_spans.add(scope=scope_spans.scope).spans.append(span)
        for export, part in zip(self.exports, parts, strict=True):
            if part.resource_spans:
                export(part.SerializeToString(), timeout=10)  # an error fails the export: the SDK retries
        return ExportTraceServiceResponse().SerializeToString()

    def __enter__(self) -> TraceFanOut:
        self.server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.stop(0).wait()
