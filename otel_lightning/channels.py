"""gRPC channels to a collector: plaintext or TLS, with this process's bearer token if it has one.

    channel = open_channel("collector:4317")   # LIGHTNING_TOKEN and LIGHTNING_TLS_CA from the environment

`LIGHTNING_TOKEN`: the token of this process's role (worker, trainer); `LIGHTNING_TLS_CA`: the CA
certificate (PEM file) that signed the collector's; set it and the channel is TLS.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

ENV_TOKEN = "LIGHTNING_TOKEN"
ENV_TLS_CA = "LIGHTNING_TLS_CA"


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call (plaintext channels cannot carry call credentials)."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self.header]
        return details._replace(metadata=metadata) if hasattr(details, "_replace") else _Details(details, metadata)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


class _Details(grpc.ClientCallDetails):
    def __init__(self, details: grpc.ClientCallDetails, metadata: list[tuple[str, str]]) -> None:
        self.method = details.method
        self.timeout = details.timeout
        self.metadata = metadata
        self.credentials = details.credentials
        self.wait_for_ready = getattr(details, "wait_for_ready", None)
        self.compression = getattr(details, "compression", None)


def open_channel(
    target: str,
    *,
    token: str | None = None,
    tls_ca: str | Path | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to `target`; `token`/`tls_ca` default to LIGHTNING_TOKEN / LIGHTNING_TLS_CA."""
    token = token if token is not None else os.environ.get(ENV_TOKEN) or None
    tls_ca = tls_ca if tls_ca is not None else os.environ.get(ENV_TLS_CA) or None
    if tls_ca:
        credentials = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
        if token:
            credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
        return grpc.secure_channel(target, credentials, options=list(options))
    channel = grpc.insecure_channel(target, options=list(options))
    return grpc.intercept_channel(channel, _BearerToken(token)) if token else channel
