"""OtlpForwarder: passes every export request the collector receives on to an upstream OTLP endpoint.

Adding otel-lightning to a pipeline must not take the user's traces away from their backend
(Jaeger, Tempo, a vendor). Requests are forwarded as received (the bytes, not re-encoded), from a
bounded queue, by one thread that retries what the upstream answers as retryable (gRPC
UNAVAILABLE and the like; HTTP 429/502/503/504; connection errors) with exponential backoff.
The collector's own acknowledgement never waits on the upstream. When the queue is full the oldest
request is dropped, counted and logged: an upstream that is down for long cannot exhaust memory.
"""

from __future__ import annotations

import collections
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

import grpc

logger = logging.getLogger(__name__)

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# Each OTLP signal's gRPC method and HTTP path: metrics and logs are forwarded like traces.
SIGNAL_METHODS = {
    "traces": EXPORT_METHOD,
    "metrics": "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
    "logs": "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
}
_RETRYABLE_GRPC = frozenset(
    (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    )
)
_RETRYABLE_HTTP = frozenset((429, 502, 503, 504))


class RetryableError(Exception):
    pass


@dataclass
class ForwardCounters:
    requests_forwarded: int = 0
    bytes_forwarded: int = 0
    retries: int = 0
    requests_dropped_queue_full: int = 0
    requests_refused_upstream: int = 0


def grpc_sender(target: str, timeout_s: float, method: str = EXPORT_METHOD) -> Callable[[bytes], None]:
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
    export = channel.unary_unary(method)  # bytes in, bytes out

    def send(raw: bytes) -> None:
        try:
            export(raw, timeout=timeout_s)
        except grpc.RpcError as error:
            if error.code() in _RETRYABLE_GRPC:
                raise RetryableError(f"{error.code().name}: {error.details()}") from None
            raise

    return send


def http_sender(url: str, timeout_s: float) -> Callable[[bytes], None]:
    def send(raw: bytes) -> None:
        request = urllib.request.Request(url, data=raw, headers={"Content-Type": "application/x-protobuf"})
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as error:
            if error.code in _RETRYABLE_HTTP:
                raise RetryableError(f"HTTP {error.code}") from None
            raise
        except (urllib.error.URLError, OSError) as error:
            raise RetryableError(str(error)) from None

    return send


def sender_for(endpoint: str, timeout_s: float = 10.0, signal: str = "traces") -> Callable[[bytes], None]:
    """`http(s)://host:port[/v1/traces]` forwards over OTLP/HTTP (protobuf, to `/v1/<signal>`);
    `host:port` or `grpc://host:port` over OTLP/gRPC (plaintext)."""
    if endpoint.startswith(("http://", "https://")):
        base = endpoint.rstrip("/").removesuffix("/v1/traces")
        return http_sender(f"{base}/v1/{signal}", timeout_s)
    return grpc_sender(endpoint.removeprefix("grpc://"), timeout_s, SIGNAL_METHODS[signal])


class OtlpForwarder:
    def __init__(
        self,
        endpoint: str,
        *,
        max_queue_bytes: int = 64 * 1024 * 1024,
        max_backoff_s: float = 5.0,
        send: Callable[[bytes], None] | None = None,
        signal: str = "traces",
    ) -> None:
        self.endpoint = endpoint
        self.max_queue_bytes = max_queue_bytes
        self.max_backoff_s = max_backoff_s
        self.counters = ForwardCounters()
        self._send = send or sender_for(endpoint, signal=signal)
        self._queue: collections.deque[bytes] = collections.deque()
        self._queued_bytes = 0
        self._changed = threading.Condition()
        self._stopping = False
        self._sending = False
        self._thread = threading.Thread(target=self._run, name="otlp-forwarder", daemon=True)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def start(self) -> OtlpForwarder:
        self._thread.start()
        return self

    def __call__(self, raw: bytes) -> None:
        """Queue one export request (never blocks)."""
        with self._changed:
            self._queue.append(raw)
            self._queued_bytes += len(raw)
            dropped = 0
            # The oldest goes first, except a request being sent right now.
            oldest = 1 if self._sending else 0
            while self._queued_bytes > self.max_queue_bytes and len(self._queue) > oldest + 1:
                self._queued_bytes -= len(self._queue[oldest])
                del self._queue[oldest]
                dropped += 1
            self.counters.requests_dropped_queue_full += dropped
            self._changed.notify()
        if dropped:
            logger.warning(
                "forwarding queue to %s is full (%d bytes): dropped the %d oldest request(s); %d dropped so far",
                self.endpoint,
                self.max_queue_bytes,
                dropped,
                self.counters.requests_dropped_queue_full,
            )

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until the queue is empty and nothing is being sent; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._queue and not self._sending, timeout=timeout_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop after sending what is queued (for at most `timeout_s`)."""
        self.flush(timeout_s)
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._thread.join(timeout=timeout_s)
        if self._queue:
            logger.warning("stopped with %d request(s) not forwarded to %s", len(self._queue), self.endpoint)

    def _run(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return
                raw = self._queue[0]
                self._sending = True
            delivered = self._deliver(raw)
            with self._changed:
                if delivered is not None:
                    self._queue.popleft()
                    self._queued_bytes -= len(raw)
                self._sending = False
                self._changed.notify_all()

    def _deliver(self, raw: bytes) -> bool | None:
        """True once sent, False if the upstream refused it for good; None when stopping."""
        backoff = 0.1
        while True:
            try:
                self._send(raw)
            except RetryableError as error:
                self.counters.retries += 1
                logger.warning("forwarding to %s failed (%s); retrying in %.1fs", self.endpoint, error, backoff)
            except Exception as error:  # the upstream refused this request: retrying would not help
                self.counters.requests_refused_upstream += 1
                logger.error("upstream %s refused a forwarded request (%s); it is not sent again", self.endpoint, error)
                return False
            else:
                self.counters.requests_forwarded += 1
                self.counters.bytes_forwarded += len(raw)
                return True
            with self._changed:
                if self._changed.wait_for(lambda: self._stopping, timeout=backoff):
                    return None
            backoff = min(backoff * 2, self.max_backoff_s)
