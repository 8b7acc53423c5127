"""Who may call what: bearer tokens per role, checked on every gRPC method and HTTP endpoint.

Roles: `exporter` (sends spans: OTLP), `worker` (claims and completes tasks), `trainer` (submits
tasks, reads the transition stream). The status service answers any of them. With no token
configured nothing is checked (the collector listens on 127.0.0.1 unless told otherwise).
Exporters send theirs the OpenTelemetry way: OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer <token>".
"""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping
from typing import Any

import grpc

EXPORTER, WORKER, TRAINER = "exporter", "worker", "trainer"
ROLES = (EXPORTER, WORKER, TRAINER)

_OTLP = "/opentelemetry.proto.collector"
_POOL = "/otel_lightning.v1.TaskPool/"
METHOD_ROLES: dict[str, frozenset[str]] = {
    f"{_OTLP}.trace.v1.TraceService/Export": frozenset({EXPORTER}),
    f"{_OTLP}.metrics.v1.MetricsService/Export": frozenset({EXPORTER}),
    f"{_OTLP}.logs.v1.LogsService/Export": frozenset({EXPORTER}),
    f"{_POOL}Submit": frozenset({TRAINER}),
    f"{_POOL}Claim": frozenset({WORKER}),
    f"{_POOL}Heartbeat": frozenset({WORKER}),
    f"{_POOL}Complete": frozenset({WORKER}),
    f"{_POOL}SampleStates": frozenset({WORKER, TRAINER}),
    f"{_POOL}Stats": frozenset({WORKER, TRAINER}),
    "/otel_lightning.v1.TransitionStream/Subscribe": frozenset({TRAINER}),
    "/otel_lightning.v1.CollectorStatus/GetStatus": frozenset(ROLES),
    # Late feedback comes from the application (an exporter) or from whoever trains.
    "/otel_lightning.v1.Feedback/Record": frozenset({EXPORTER, TRAINER}),
}


class TokenCheck:
    def __init__(self, tokens: Mapping[str, str]) -> None:
        unknown = set(tokens) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown roles {sorted(unknown)}; roles are {', '.join(ROLES)}")
        self.tokens = {role: token for role, token in tokens.items() if token}

    @property
    def enabled(self) -> bool:
        return bool(self.tokens)

    def role_of(self, authorization: str | None) -> str | None:
        """The role whose token this `Authorization` value carries (compared in constant time)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        found = None
        for role, expected in self.tokens.items():
            if hmac.compare_digest(token.strip().encode(), expected.encode()):
                found = role
        return found

    def check(self, method: str, authorization: str | None) -> tuple[grpc.StatusCode, str] | None:
        """None when the call may go ahead; else the status and a message that says what to do."""
        if not self.enabled:
            return None
        role = self.role_of(authorization)
        if role is None:
            return (
                grpc.StatusCode.UNAUTHENTICATED,
                "send 'authorization: Bearer <token>' with a token of this collector",
            )
        allowed = METHOD_ROLES.get(method, frozenset())
        if role not in allowed:
            return grpc.StatusCode.PERMISSION_DENIED, f"the {role} token may not call {method}"
        return None


def _refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler` that only refuses."""

    def refuse(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, message)

    kwargs = {"request_deserializer": None, "response_serializer": None}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse, **kwargs)
    return grpc.unary_unary_rpc_method_handler(refuse, **kwargs)


class BearerTokenInterceptor(grpc.ServerInterceptor):
    def __init__(self, check: TokenCheck) -> None:
        self.check = check

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        if handler is None:
            return handler
        metadata = dict(details.invocation_metadata or ())
        refused = self.check.check(details.method, metadata.get("authorization"))
        return handler if refused is None else _refusing(handler, *refused)
