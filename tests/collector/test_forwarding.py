"""Forwarding: every request the collector receives reaches the user's upstream backend too."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_lightning_collector import CollectorConfig, CollectorServer
from otel_lightning_collector.forwarder import OtlpForwarder, RetryableError, RetryPolicy
from tests.collector.test_ingest_robustness import exporter
from tests.support import SpanFactory, export_request, free_port, transitions, wait_for_rollouts, wait_until


class Upstream:
    """A bare OTLP/gRPC backend (Jaeger, Tempo...) that keeps every span id it receives."""

    def __init__(self, port: int = 0) -> None:
        self.span_ids: list[bytes] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
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

    def _export(self, raw: bytes, context) -> bytes:
        request = ExportTraceServiceRequest.FromString(raw)
        with self._lock:
            self.span_ids.extend(s.span_id for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans)
        return ExportTraceServiceResponse().SerializeToString()

    def stop(self) -> None:
        self.server.stop(0).wait()


def test_every_span_reaches_the_upstream_and_foreign_spans_are_not_kept(tmp_path):
    upstream = Upstream()
    config = CollectorConfig(
        listen="127.0.0.1:0", store_path=tmp_path / "c.db", forward_to=f"127.0.0.1:{upstream.port}"
    )
    try:
        with CollectorServer(config) as server:
            spans = SpanFactory(rollout_id="r-fwd")
            ours = [spans.llm("q", "a"), spans.reward(1.0), spans.root()]
            foreign = SpanFactory(rollout_id="unused").llm("q", "a")
            del foreign.attributes[:]  # the user's own service spans, in a trace of no rollout
            export = exporter(server.address)
            export(export_request(*ours))
            export(export_request(foreign))
            assert len(transitions(wait_for_rollouts(server.address, 1))) == 1
            assert server.forwarder.flush()
            assert sorted(upstream.span_ids) == sorted(s.span_id for s in [*ours, foreign])
            assert server.flush()
            with server.store.reader() as db:
                kept = {row[0] for row in db.execute("SELECT span_id FROM spans")}
            assert kept == {s.span_id.hex() for s in ours}
            assert server.receiver.counters.spans_foreign == 1
    finally:
        upstream.stop()


def test_an_upstream_that_is_down_gets_the_spans_once_it_is_back(tmp_path):
    port = free_port()
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", forward_to=f"127.0.0.1:{port}")
    with CollectorServer(config) as server:
        server.forwarder.max_backoff_s = 0.2
        spans = SpanFactory(rollout_id="r-later")
        sent = [spans.llm("q", "a"), spans.root()]
        exporter(server.address)(export_request(*sent))  # acknowledged while the upstream is down
        assert len(transitions(wait_for_rollouts(server.address, 1))) == 1
        assert wait_until(lambda: server.forwarder.counters.retries >= 2, timeout_s=15)
        upstream = Upstream(port)
        try:
            assert server.forwarder.flush(15)
            assert sorted(upstream.span_ids) == sorted(s.span_id for s in sent)
            assert server.forwarder.counters.requests_forwarded == 1
        finally:
            upstream.stop()


def test_forwarding_over_http_to_another_collector(tmp_path):
    downstream_config = CollectorConfig(
        listen="127.0.0.1:0", http_listen="127.0.0.1:0", store_path=tmp_path / "downstream.db"
    )
    with CollectorServer(downstream_config) as downstream:
        config = CollectorConfig(
            listen="127.0.0.1:0", store_path=tmp_path / "c.db", forward_to=downstream.http.endpoint
        )
        with CollectorServer(config) as server:
            spans = SpanFactory(rollout_id="r-both")
            exporter(server.address)(export_request(spans.llm("q", "a"), spans.reward(1.0), spans.root()))
            here = transitions(wait_for_rollouts(server.address, 1))
            there = transitions(wait_for_rollouts(downstream.address, 1))
    assert [(t.rollout_id, t.state_json, t.reward) for t in here] == [
        (t.rollout_id, t.state_json, t.reward) for t in there
    ]


def test_the_queue_is_bounded_and_drops_the_oldest_loudly(caplog):
    attempts: list[bytes] = []

    def unreachable(raw: bytes) -> None:
        attempts.append(raw)
        raise RetryableError("connection refused")

    fast = RetryPolicy(initial_interval_s=0.05, max_interval_s=0.05)
    forwarder = OtlpForwarder("upstream:4317", max_queue_bytes=3000, consumers=1, retry=fast, send=unreachable).start()
    try:
        for index in range(10):
            forwarder(bytes([index]) * 1000)
        assert forwarder.queued_bytes <= 3000
        assert forwarder.counters.requests_dropped_queue_full == 7
        assert "dropped the 1 oldest request(s)" in caplog.text
        assert wait_until(lambda: forwarder.counters.retries >= 2, timeout_s=15)
        assert len(set(attempts)) == 1  # one request, retried: nothing behind it is skipped
    finally:
        forwarder.stop(timeout_s=0.2)
