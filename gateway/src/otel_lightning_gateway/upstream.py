"""The connection to the model server: one pooled async HTTP client, URLs and the headers that cross."""

from __future__ import annotations

import socket
from collections.abc import Iterable

import httpx

# Hop-by-hop headers (RFC 9110 7.6.1) and those the gateway sets itself.
_NOT_FORWARDED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
# On model calls the gateway reads the body, so it asks for it uncompressed and sets the trace headers.
_NOT_FORWARDED_ON_MODEL_CALLS = _NOT_FORWARDED | {"accept-encoding", "traceparent", "tracestate"}
_NOT_RETURNED = frozenset({*_NOT_FORWARDED, "content-encoding", "date", "server"})


def split_base(base_url: str) -> tuple[str, str]:
    """("http://host:8000", "/v1") for "http://host:8000/v1": paths under /v1 go under the base URL,
    others (/health, /metrics) under the server's root."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        return base[:-3], base[-3:]
    return base, ""


def upstream_url(base_url: str, path: str, query: bytes) -> str:
    root, v1 = split_base(base_url)
    if path == "/v1" or path.startswith("/v1/"):
        url = root + v1 + path[3:] if v1 else root + path
    else:
        url = root + path
    return f"{url}?{query.decode('latin-1')}" if query else url


def forwarded_headers(headers: Iterable[tuple[bytes, bytes]], model_call: bool) -> list[tuple[bytes, bytes]]:
    dropped = _NOT_FORWARDED_ON_MODEL_CALLS if model_call else _NOT_FORWARDED
    return [(name, value) for name, value in headers if name.lower().decode("latin-1") not in dropped]


def returned_headers(response: httpx.Response, keep_encoding: bool = False) -> list[tuple[bytes, bytes]]:
    dropped = _NOT_FORWARDED if keep_encoding else _NOT_RETURNED
    return [(name, value) for name, value in response.headers.raw if name.lower().decode("latin-1") not in dropped]


def new_client(connect_timeout_s: float, read_timeout_s: float | None) -> httpx.AsyncClient:
    """One client for every call: its pool keeps connections to the model server open between calls."""
    limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256, keepalive_expiry=30.0)
    # Request headers and body go out in two writes: with Nagle's algorithm on, the body waits for the
    # server's delayed ACK of the headers (~40 ms a call).
    transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    return httpx.AsyncClient(
        transport=transport,
        timeout=httpx.Timeout(connect=connect_timeout_s, read=read_timeout_s, write=60.0, pool=60.0),
        # Never route the model server through an HTTP(S)_PROXY meant for the internet.
        trust_env=False,
        follow_redirects=False,
    )
