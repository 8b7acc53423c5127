"""The forwarder as the OpenTelemetry Collector's exporter helper behaves: an on-disk queue that survives
kill -9, several consumers, gzip, only retryable answers retried, the upstream's RetryInfo /
Retry-After honoured, a max elapsed time after which a request is dropped, counted and logged."""

from __future__ import annotations

import collections
import gzip
import logging
import sqlite3
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_lightning_collector.forwarder import OtlpForwarder, RetryPolicy
from tests.collector.test_faults import CollectorProcess
from tests.support import SpanFactory, export_request, free_port, wait_until

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
FAST = dict(initial_interval_s=0.05, max_interval_s=0.2)


class CountingUpstream:
    """An OTLP/gRPC backend that counts every span it receives by id; `answers` scripts refusals first."""

    def __init__(self, port: int = 0, answers: list[status_pb2.Status] | None = None, hold: int = 0) -> None:
        self.spans: collections.Counter[bytes] = collections.Counter()
        self.answers = list(answers or [])
        self.requests = 0
        self.concurrent = 0
        self.most_concurrent = 0
        self._hold = threading.Barrier(hold) if hold else None
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    "opentelemetry.proto.collector.trace.v1.TraceService",
                    {"Export": grpc.unary_unary_rpc_method_handler(self._export)},
                ),
            )
        )
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        self.server.start()

    def _export(self, raw: bytes, context: grpc.ServicerContext) -> bytes:
        with self._lock:
            self.requests += 1
            answer = self.answers.pop(0) if self.answers else None
            self.concurrent += 1
            self.most_concurrent = max(self.most_concurrent, self.concurrent)
        try:
            if answer is not None:
                context.abort_with_status(rpc_status.to_status(answer))
            if self._hold is not None:
                self._hold.wait(10)  # returns once `hold` requests are in flight together
            request = ExportTraceServiceRequest.FromString(raw)
            with self._lock:
                self.spans.update(s.span_id for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans)
            return ExportTraceServiceResponse().SerializeToString()
        finally:
            with self._lock:
                self.concurrent -= 1

    def stop(self) -> None:
        self.server.stop(0).wait()


def refusal(code: int, retry_delay_s: float | None = None) -> status_pb2.Status:
    details = []
    if retry_delay_s is not None:
        delay = duration_pb2.Duration()
        delay.FromNanoseconds(int(retry_delay_s * 1e9))
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(detail)
    return status_pb2.Status(code=code, message="scripted", details=details)


def one_request(index: int) -> bytes:
    return export_request(SpanFactory(rollout_id=f"r{index}").llm("q", "a")).SerializeToString()


def test_kill_9_while_the_upstream_is_down_then_every_span_arrives_exactly_once(tmp_path):
    """Upstream down; 20 exports acknowledged; the collector killed -9 and restarted; 20 more; the
    upstream comes back: each of the 40 spans (rollout spans and the user's other spans) arrives once."""
    upstream_port = free_port()
    store = tmp_path / "c.db"
    collector = CollectorProcess(
        store, free_port(), "--forward-to", f"127.0.0.1:{upstream_port}", "--forward-max-elapsed-s", "0"
    ).start()
    export = grpc.insecure_channel(collector.address).unary_unary(EXPORT)
    sent: list[bytes] = []
    try:
        for index in range(40):
            if index == 20:
                collector.kill()
                collector.start()
                export = grpc.insecure_channel(collector.address).unary_unary(EXPORT)
            spans = SpanFactory(rollout_id=f"r{index:03d}")
            span = spans.llm("q", "a")
            if index % 2:
                del span.attributes[:]  # the user's own spans are forwarded too
            export(export_request(span).SerializeToString(), timeout=30)
            sent.append(span.span_id)
        upstream = CountingUpstream(upstream_port)
        try:
            assert wait_until(lambda: set(upstream.spans) == set(sent), timeout_s=90)
            queue = sqlite3.connect(f"{store}.forward.db")
            # Nothing is left to send, so nothing more will come.
            assert wait_until(lambda: queue.execute("SELECT COUNT(*) FROM forward_queue").fetchone()[0] == 0, 30)
            queue.close()
            duplicates = sum(count - 1 for count in upstream.spans.values())
            assert duplicates == 0, f"{duplicates} span(s) arrived twice"
            assert sorted(upstream.spans) == sorted(sent)
        finally:
            upstream.stop()
    finally:
        collector.stop()


def test_several_consumers_send_at_once():
    upstream = CountingUpstream(hold=4)  # answers only once 4 requests are in flight together
    forwarder = OtlpForwarder(f"127.0.0.1:{upstream.port}", consumers=4, retry=RetryPolicy(**FAST)).start()
    try:
        for index in range(8):
            forwarder(one_request(index))
        assert forwarder.flush(30)
        assert upstream.most_concurrent == 4 and sum(upstream.spans.values()) == 8
    finally:
        forwarder.stop()
        upstream.stop()


def test_retry_info_is_honoured_and_only_retryable_codes_are_retried(caplog):
    upstream = CountingUpstream(
        answers=[
            refusal(code_pb2.UNAVAILABLE, retry_delay_s=0.3),  # retried after what the upstream asked
            refusal(code_pb2.RESOURCE_EXHAUSTED, retry_delay_s=0.2),  # retryable: it says when
            refusal(code_pb2.RESOURCE_EXHAUSTED),  # no RetryInfo: not retryable, dropped
            refusal(code_pb2.INVALID_ARGUMENT),  # never retried
        ]
    )
    forwarder = OtlpForwarder(f"127.0.0.1:{upstream.port}", consumers=1, retry=RetryPolicy(**FAST)).start()
    try:
        with caplog.at_level(logging.WARNING):
            forwarder(one_request(0))  # UNAVAILABLE, RESOURCE_EXHAUSTED, then delivered
            assert forwarder.flush(30)
            forwarder(one_request(1))  # RESOURCE_EXHAUSTED without RetryInfo
            forwarder(one_request(2))  # INVALID_ARGUMENT
            assert forwarder.flush(30)
        counters = forwarder.counters
        assert (counters.requests_forwarded, counters.retries, counters.requests_refused_upstream) == (1, 2, 2)
        assert "retrying in 0.30s" in caplog.text and "retrying in 0.20s" in caplog.text
        assert upstream.requests == 5
    finally:
        forwarder.stop()
        upstream.stop()


def test_a_request_failing_past_the_max_elapsed_time_is_dropped_counted_and_logged(caplog):
    policy = RetryPolicy(initial_interval_s=0.05, max_interval_s=0.1, max_elapsed_s=0.5)
    forwarder = OtlpForwarder(f"127.0.0.1:{free_port()}", consumers=1, retry=policy).start()  # nobody listens
    try:
        with caplog.at_level(logging.ERROR):
            forwarder(one_request(0))
            assert forwarder.flush(30)
        assert forwarder.counters.requests_dropped_retry_expired == 1
        assert forwarder.counters.retries >= 2
        assert "still failing after" in caplog.text
    finally:
        forwarder.stop()


class _ScriptedHttp(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    answers: list[tuple[int, dict[str, str]]] = []
    received: list[tuple[str, bytes]] = []

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.headers.get("Content-Encoding", ""), body))
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()


def test_http_upstream_gets_gzip_and_its_429_retry_after_is_honoured(caplog):
    _ScriptedHttp.answers = [(429, {"Retry-After": "1"}), (503, {}), (400, {})]
    _ScriptedHttp.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedHttp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    forwarder = OtlpForwarder(url, consumers=1, retry=RetryPolicy(**FAST)).start()
    try:
        with caplog.at_level(logging.WARNING):
            first = one_request(0)
            forwarder(first)  # 429 (Retry-After: 1), 503, then 200
            assert forwarder.flush(30)
            forwarder(one_request(1))  # 400: not retried
            assert forwarder.flush(30)
        assert "retrying in 1.00s" in caplog.text
        assert [encoding for encoding, _ in _ScriptedHttp.received] == ["gzip"] * 4
        assert gzip.decompress(_ScriptedHttp.received[2][1]) == first
        assert (forwarder.counters.requests_forwarded, forwarder.counters.requests_refused_upstream) == (1, 1)
    finally:
        forwarder.stop()
        server.shutdown()


def test_the_queue_on_disk_survives_a_restart_and_counts_possible_duplicates(tmp_path):
    """Requests left in the queue are sent by the next forwarder on the same file; one that was being
    sent when the process ended is counted as a possible duplicate."""
    path = tmp_path / "queue.db"
    down = OtlpForwarder(f"127.0.0.1:{free_port()}", queue_path=path, consumers=1, retry=RetryPolicy(**FAST)).start()
    for index in range(5):
        down(one_request(index))
    assert wait_until(lambda: down.counters.retries >= 1, timeout_s=10)  # one is being sent (attempted)
    down.stop(timeout_s=0.5)
    upstream = CountingUpstream()
    again = OtlpForwarder(f"127.0.0.1:{upstream.port}", queue_path=path, retry=RetryPolicy(**FAST)).start()
    try:
        assert again.counters.requests_possibly_duplicated == 1
        assert again.flush(30)
        assert sum(upstream.spans.values()) == 5
    finally:
        again.stop()
        upstream.stop()
