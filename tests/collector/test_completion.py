"""Completion waits for what was acknowledged with the root; one rollout that cannot be built holds back no other.

A rollout's spans may straddle export requests in flight together (rollouts interleave, exporters
send several requests at once), and the root's request may be indexed before the others: the
rollout must still arrive whole, with no settle time.
"""

from __future__ import annotations

import threading
from concurrent import futures

import grpc

from benchmarks.collector_ingest import EXPORT, build_requests
from otel_lightning_collector import CollectorConfig, CollectorServer
from otel_lightning_collector.transitions import MALFORMED, SUCCEEDED
from tests.support import SpanFactory, export_request, rollouts, transitions, wait_for_rollouts, wait_until


def raw_exporter(address: str):
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
    return channel.unary_unary(EXPORT)  # bytes in, bytes out


def assert_whole(events, rollout_count: int, steps: int) -> None:
    completed = rollouts(events)
    assert len(completed) == rollout_count
    assert {r.status for r in completed} == {SUCCEEDED}, [(r.rollout_id, r.error_message) for r in completed][:3]
    per_rollout: dict[str, int] = {}
    for transition in transitions(events):
        per_rollout[transition.rollout_id] = per_rollout.get(transition.rollout_id, 0) + 1
    assert set(per_rollout.values()) == {steps} and len(per_rollout) == rollout_count
    assert {r.late_span_count for r in completed} == {0}


def test_root_indexed_first_waits_for_the_request_in_flight_with_it(tmp_path):
    """Deterministic: the request with a rollout's LLM spans is held inside the collector (before it
    is committed) while the request with its root is acknowledged and indexed."""
    spans = SpanFactory(rollout_id="r-straddle")
    llm_request = export_request(spans.llm("q0", "a0"), spans.reward(1.0), spans.llm("q1", "a1"))
    root_request = export_request(spans.root())
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", settle_s=0.0)
    with CollectorServer(config) as server:
        held, release = threading.Event(), threading.Event()
        append_batch = server.store.append_batch

        def append_holding_the_llm_request(raw: bytes) -> int:
            if raw == llm_request.SerializeToString():
                held.set()
                release.wait(30)
            return append_batch(raw)

        server.store.append_batch = append_holding_the_llm_request  # type: ignore[method-assign]
        export = raw_exporter(server.address)
        with futures.ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(export, llm_request.SerializeToString(), timeout=30)
            assert held.wait(30)
            export(root_request.SerializeToString(), timeout=30)  # acknowledged while the other is in flight
            assert wait_until(lambda: server.indexer.counters.spans_stored == 1, timeout_s=30)  # the root alone
            assert server.assembler.completed == 0
            release.set()
            in_flight.result()
        events = wait_for_rollouts(server.address, 1, timeout_s=30)
        assert_whole(events, 1, steps=2)
        assert server.indexer.counters.spans_late == 0


def test_interleaved_concurrent_exports_deliver_every_rollout_whole(tmp_path):
    """benchmarks/collector_ingest.py's pattern: rollouts interleaved, 512 spans a request, 4 in flight,
    --settle-ms 0. Every rollout arrives once, with all of its transitions."""
    rollout_count, steps = 1500, 4
    requests, span_count = build_requests(rollout_count, steps)
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", settle_s=0.0)
    with CollectorServer(config) as server:
        export = raw_exporter(server.address)
        with futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda raw: export(raw, timeout=120), requests))
        assert server.flush(120)
        events = wait_for_rollouts(server.address, rollout_count, timeout_s=120)
        assert server.indexer.counters.spans_stored == span_count
        assert server.indexer.counters.spans_late == 0
    assert_whole(events, rollout_count, steps)


def test_interleaved_concurrent_exports_over_http(tmp_path):
    """The same over OTLP/HTTP (each request numbered when the intake takes it)."""
    import urllib.request

    rollout_count, steps = 400, 4
    requests, _ = build_requests(rollout_count, steps)
    config = CollectorConfig(
        listen="127.0.0.1:0", http_listen="127.0.0.1:0", store_path=tmp_path / "c.db", settle_s=0.0
    )
    with CollectorServer(config) as server:
        url = f"http://127.0.0.1:{server.http.port}/v1/traces"

        def post(raw: bytes) -> int:
            request = urllib.request.Request(url, data=raw, headers={"Content-Type": "application/x-protobuf"})
            with urllib.request.urlopen(request, timeout=120) as response:
                return response.status

        with futures.ThreadPoolExecutor(4) as pool:
            assert set(pool.map(post, requests)) == {200}
        events = wait_for_rollouts(server.address, rollout_count, timeout_s=120)
    assert_whole(events, rollout_count, steps)


def test_a_rollout_that_cannot_be_built_ends_malformed_and_holds_back_no_other(tmp_path):
    """One rollout's stored span is damaged (its bytes are no Span): building it raises. It ends
    `malformed` with the reason; the rollouts completed in the same batch succeed as usual."""
    good = [SpanFactory(rollout_id=f"r-good-{index}") for index in range(5)]
    bad = SpanFactory(rollout_id="r-bad")
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", settle_s=0.0)
    with CollectorServer(config) as server:
        export = raw_exporter(server.address)
        bodies = [factory.llm("q", "a") for factory in [*good, bad]]
        export(export_request(*bodies).SerializeToString(), timeout=30)
        assert server.flush(30)
        with server.store.transaction() as db:
            db.execute("UPDATE spans SET body = ? WHERE rollout_id = 'r-bad'", (b"\xff\xff not a span",))
        # All roots in one request: the six rollouts are ready together and completed as one batch.
        roots = [factory.root() for factory in [*good[:3], bad, *good[3:]]]
        export(export_request(*roots).SerializeToString(), timeout=30)
        events = wait_for_rollouts(server.address, 6, timeout_s=30)
    by_id = {r.rollout_id: r for r in rollouts(events)}
    assert len(by_id) == 6
    assert by_id["r-bad"].status == MALFORMED
    assert by_id["r-bad"].error_type == "DecodeError" and "could not be built" in by_id["r-bad"].error_message
    assert by_id["r-bad"].span_count == 2
    assert all(by_id[f"r-good-{index}"].status == SUCCEEDED for index in range(5))
    assert {t.rollout_id for t in transitions(events)} == {f"r-good-{index}" for index in range(5)}
