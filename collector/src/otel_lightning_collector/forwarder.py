"""OtlpForwarder: passes every export request the collector receives on to an upstream OTLP endpoint.

Adding otel-lightning to a pipeline must not take the user's traces away from their backend
(Jaeger, Tempo, Phoenix, a vendor). It behaves like the OpenTelemetry Collector's exporter helper:

- requests are forwarded as received (the bytes, not re-encoded), gzip-compressed by default;
- a queue on disk beside the store (ForwardQueue), committed before the collector acknowledges the
  export, so a restart (even kill -9) loses nothing the upstream had not taken; bounded by bytes,
  the oldest dropped first, counted and logged;
- several consumers send at once;
- only retryable answers are retried (gRPC UNAVAILABLE, CANCELLED, DEADLINE_EXCEEDED, ABORTED,
  OUT_OF_RANGE, DATA_LOSS, and RESOURCE_EXHAUSTED when the upstream says when to retry; HTTP 429,
  502, 503, 504; no connection), with exponential backoff and jitter, waiting what the upstream asks
  for (RetryInfo, Retry-After) instead; any other answer drops the request, counted and logged;
- a request still failing after `max_elapsed_s` (counted from its first attempt in this process)
  is dropped, counted and logged.

The collector's own acknowledgement never waits on the upstream.
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from otel_lightning_collector.forward_queue import ForwardQueue

logger = logging.getLogger(__name__)

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# Each OTLP signal's gRPC method and HTTP path: metrics and logs are forwarded like traces.
SIGNAL_METHODS = {
    "traces": EXPORT_METHOD,
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
# The OTLP spec's retryable gRPC codes; RESOURCE_EXHAUSTED only with RetryInfo (see _grpc_retry).
_RETRYABLE_GRPC = frozenset(
    (
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    )
)
_RETRYABLE_HTTP = frozenset((429, 502, 503, 504))


class RetryableError(Exception):
    """The upstream may take the request later; `retry_after_s`: when it said to try again."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UpstreamRefusedError(Exception):
    """The upstream answered with an error that sending again would not fix."""


@dataclass
class ForwardCounters:
    requests_forwarded: int = 0
    bytes_forwarded: int = 0
    retries: int = 0
    requests_dropped_queue_full: int = 0
    requests_refused_upstream: int = 0
    # Still failing after max_elapsed_s: given up on.
    requests_dropped_retry_expired: int = 0
    # Found on disk at start after an attempt: the upstream may have them already (sent again).
    requests_possibly_duplicated: int = 0


@dataclass
class RetryPolicy:
    """The Collector's exporter helper's backoff: each wait is `interval` times a random factor in
    [1 - jitter, 1 + jitter], the interval grows by `multiplier` up to `max_interval_s`; after
    `max_elapsed_s` (0: never) the request is dropped."""

    initial_interval_s: float = 1.0
    max_interval_s: float = 30.0
    multiplier: float = 1.5
    jitter: float = 0.5
    max_elapsed_s: float = 300.0


def _grpc_retry(error: grpc.RpcError) -> RetryableError | None:
    """A RetryableError for a retryable gRPC failure (with the upstream's RetryInfo), else None."""
    delay: float | None = None
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # the details do not match the code: ignore them
        status = None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            delay = info.retry_delay.ToNanoseconds() / 1e9
    if delay is None:
        raw = dict(error.trailing_metadata() or ()).get("google.rpc.retryinfo-bin")
        if raw:
            delay = error_details_pb2.RetryInfo.FromString(raw).retry_delay.ToNanoseconds() / 1e9
    code = error.code()
    if code in _RETRYABLE_GRPC or (code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None):
        return RetryableError(f"{code.name}: {error.details()}", delay)
    return None


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def grpc_sender(
    target: str, timeout_s: float, method: str = EXPORT_METHOD, compression: str = "gzip"
) -> Callable[[bytes], None]:
    channel = grpc.insecure_channel(
        target,
        options=[("grpc.max_send_message_length", 64 * 1024 * 1024)],
        compression=grpc.Compression.Gzip if compression == "gzip" else grpc.Compression.NoCompression,
    )
    export = channel.unary_unary(method)  # bytes in, bytes out

    def send(raw: bytes) -> None:
        try:
            export(raw, timeout=timeout_s)
        except grpc.RpcError as error:
            retry = _grpc_retry(error)
            if retry is not None:
                raise retry from None
            raise UpstreamRefusedError(f"{error.code().name}: {error.details()}") from None

    return send


def http_sender(url: str, timeout_s: float, compression: str = "gzip") -> Callable[[bytes], None]:
    headers = {"Content-Type": "application/x-protobuf"}
    if compression == "gzip":
        headers["Content-Encoding"] = "gzip"

    def send(raw: bytes) -> None:
        body = gzip.compress(raw, compresslevel=6) if compression == "gzip" else raw
        request = urllib.request.Request(url, data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as error:
            if error.code in _RETRYABLE_HTTP:
                raise RetryableError(f"HTTP {error.code}", _retry_after(error.headers.get("Retry-After"))) from None
            raise
        except (urllib.error.URLError, OSError) as error:
            raise RetryableError(str(error)) from None

    return send


def sender_for(
    endpoint: str, timeout_s: float = 10.0, signal: str = "traces", compression: str = "gzip"
) -> Callable[[bytes], None]:
    """`http(s)://host:port[/v1/traces]` forwards over OTLP/HTTP (protobuf, to `/v1/<signal>`);
    `host:port` or `grpc://host:port` over OTLP/gRPC (plaintext)."""
    if compression not in ("gzip", "none"):
        raise ValueError(f"forwarding compression must be gzip or none, not {compression!r}")
    if endpoint.startswith(("http://", "https://")):
        base = endpoint.rstrip("/").removesuffix("/v1/traces")
        return http_sender(f"{base}/v1/{signal}", timeout_s, compression)
    return grpc_sender(endpoint.removeprefix("grpc://"), timeout_s, SIGNAL_METHODS[signal], compression)


class OtlpForwarder:
    def __init__(
        self,
        endpoint: str,
        *,
        max_queue_bytes: int = 64 * 1024 * 1024,
        queue_path: str | Path | None = None,
        consumers: int = 4,
        retry: RetryPolicy | None = None,
        compression: str = "gzip",
        send: Callable[[bytes], None] | None = None,
        signal: str = "traces",
    ) -> None:
        """`queue_path`: the on-disk queue (None: in memory, lost on restart)."""
        self.endpoint = endpoint
        self.retry = retry or RetryPolicy()
        self.consumers = consumers
        self.counters = ForwardCounters()
        self._send = send or sender_for(endpoint, signal=signal, compression=compression)
        self._queue = ForwardQueue(queue_path, max_queue_bytes)
        self.counters.requests_possibly_duplicated = self._queue.found_attempted
        if len(self._queue):
            logger.warning(
                "%d request(s) (%d bytes) left to forward to %s from the last run; %d of them were being sent"
                " (the upstream may receive those twice)",
                len(self._queue),
                self._queue.queued_bytes,
                endpoint,
                self._queue.found_attempted,
            )
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._counter_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, name=f"otlp-forwarder-{index}", daemon=True)
            for index in range(consumers)
        ]

    @property
    def max_queue_bytes(self) -> int:
        return self._queue.max_bytes

    @property
    def max_backoff_s(self) -> float:
        return self.retry.max_interval_s

    @max_backoff_s.setter
    def max_backoff_s(self, value: float) -> None:
        self.retry.max_interval_s = value
        self.retry.initial_interval_s = min(self.retry.initial_interval_s, value)

    @property
    def queued_bytes(self) -> int:
        return self._queue.queued_bytes

    @property
    def queued_requests(self) -> int:
        return len(self._queue)

    def start(self) -> OtlpForwarder:
        for thread in self._threads:
            thread.start()
        return self

    def __call__(self, raw: bytes) -> None:
        """Queue one export request (committed on disk before this returns; never waits on the upstream)."""
        dropped = self._queue.put(raw)
        with self._changed:
            self.counters.requests_dropped_queue_full += dropped
            self._changed.notify()
        if dropped:
            logger.warning(
                "forwarding queue to %s is full (%d bytes): dropped the %d oldest request(s); %d dropped so far",
                self.endpoint,
                self._queue.max_bytes,
                dropped,
                self.counters.requests_dropped_queue_full,
            )

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is empty and nothing is being sent; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not len(self._queue), timeout=timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after sending what is queued (for at most `timeout_s`); the rest stays on disk."""
        self.flush(timeout_s)
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        for thread in self._threads:
            thread.join(timeout=timeout_s)
        if len(self._queue):
            where = "kept for the next start" if self._queue.path != ":memory:" else "lost (the queue is in memory)"
            logger.warning("stopped with %d request(s) not forwarded to %s: %s", len(self._queue), self.endpoint, where)
        if not any(thread.is_alive() for thread in self._threads):  # one still sending may yet finish its row
            self._queue.close()

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._changed:
                item = self._queue.take()
                if item is None:
                    self._changed.wait(0.5)
                    continue
            row_id, raw = item
            if self._deliver(raw):
                self._queue.done(row_id)
            else:
                self._queue.release(row_id)
            with self._changed:
                self._changed.notify_all()

    def _count(self, **increments: int) -> None:
        with self._counter_lock:
            for name, value in increments.items():
                setattr(self.counters, name, getattr(self.counters, name) + value)

    def _deliver(self, raw: bytes) -> bool:
        """True once the request is done with (sent, or dropped for good); False when stopping first."""
        policy = self.retry
        started = time.monotonic()
        interval = policy.initial_interval_s
        while True:
            try:
                self._send(raw)
            except RetryableError as error:
                if error.retry_after_s is not None:
                    delay = error.retry_after_s  # the upstream said when
                else:
                    delay = interval * random.uniform(1 - policy.jitter, 1 + policy.jitter)
                    interval = min(interval * policy.multiplier, policy.max_interval_s)
                elapsed = time.monotonic() - started
                if policy.max_elapsed_s and elapsed + delay > policy.max_elapsed_s:
                    self._count(requests_dropped_retry_expired=1)
                    logger.error(
                        "dropped a request of %d bytes for %s: still failing after %.0fs (%s); %d dropped so far",
                        len(raw),
                        self.endpoint,
                        elapsed,
                        error,
                        self.counters.requests_dropped_retry_expired,
                    )
                    return True
                self._count(retries=1)
                logger.warning("forwarding to %s failed (%s); retrying in %.2fs", self.endpoint, error, delay)
            except Exception as error:  # the upstream refused this request: retrying would not help
                self._count(requests_refused_upstream=1)
                logger.error("upstream %s refused a forwarded request (%s); it is not sent again", self.endpoint, error)
                return True
            else:
                self._count(requests_forwarded=1, bytes_forwarded=len(raw))
                return True
            if self._stopping.wait(delay):
                return False
