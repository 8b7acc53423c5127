"""The model server's side: URLs, the headers that cross, what a failed call raises, and the aiohttp
session (a keep-alive pool) for everything that is not a model call."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Mapping

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from otel_lightning_gateway.model_server_client import ModelServerError

# Hop-by-hop headers (RFC 9110 7.6.1) and those the gateway or aiohttp set themselves.
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
        "expect",  # the gateway has the whole body by then
    }
)
# On model calls the gateway reads and rewrites the body (JSON, uncompressed) and sets the trace headers.
_NOT_FORWARDED_ON_MODEL_CALLS = _NOT_FORWARDED | {
    "accept-encoding",
    "content-type",
    "content-encoding",
    "traceparent",
    "tracestate",
}
_NOT_RETURNED = frozenset({*_NOT_FORWARDED, "content-encoding", "date", "server"})

# What a failed upstream call raises: refused or broken connections, timeouts, a bad URL or header.
UPSTREAM_ERRORS = (aiohttp.ClientError, ModelServerError, OSError, asyncio.TimeoutError, ValueError)


def split_base(base_url: str) -> tuple[str, str]:
    """("http://host:8000", "/v1") for "http://host:8000/v1": paths under /v1 go under the base URL,
    others (/health, /metrics) under the server's root."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        return base[:-3], base[-3:]
    return base, ""


@functools.lru_cache(maxsize=4096)  # the same few URLs on every call: parsed once
def upstream_url(base_url: str, raw_path: str, query: str) -> URL:
    """The upstream's URL for a request's path and query, both as the caller sent them (still %-encoded)."""
    root, v1 = split_base(base_url)
    if raw_path == "/v1" or raw_path.startswith("/v1/"):
        url = root + v1 + raw_path[3:] if v1 else root + raw_path
    else:
        url = root + raw_path
    return URL(f"{url}?{query}" if query else url, encoded=True)


def forwarded_headers(headers: Mapping[str, str], model_call: bool) -> list[tuple[str, str]]:
    dropped = _NOT_FORWARDED_ON_MODEL_CALLS if model_call else _NOT_FORWARDED
    return [(name, value) for name, value in headers.items() if name.lower() not in dropped]


def returned_headers(headers: Iterable[tuple[str, str]], keep_encoding: bool = False) -> CIMultiDict[str]:
    dropped = _NOT_FORWARDED if keep_encoding else _NOT_RETURNED
    return CIMultiDict((name, value) for name, value in headers if name.lower() not in dropped)


def new_session(connect_timeout_s: float, read_timeout_s: float | None) -> aiohttp.ClientSession:
    """One session for every call: its pool keeps connections to the model server open between calls.

    Made inside the serving loop (the pool belongs to it). No cookie jar (a proxy must not carry one
    caller's cookies to another), no environment proxies, bodies passed on as the server encoded them."""
    connector = aiohttp.TCPConnector(limit=1024, limit_per_host=0, keepalive_timeout=30.0)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s, sock_read=read_timeout_s)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,
        # Only the caller's own headers (aiohttp would add its user agent and gzip to every request).
        skip_auto_headers=("User-Agent", "Accept-Encoding", "Accept"),
    )
