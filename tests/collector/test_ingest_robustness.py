"""The collector under awkward input: order, duplicates, splits, malformed bytes, rejected spans."""

from __future__ import annotations

import gzip
import random

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_lightning import semconv
from tests.support import SpanFactory, export_request, rollouts, transitions, wait_for_rollouts

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def exporter(address: str, compression: grpc.Compression | None = None):
    channel = grpc.insecure_channel(address, compression=compression)
    return channel.unary_unary(
        EXPORT,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=ExportTraceServiceResponse.FromString,
    )


def three_step_rollout(rollout_id: str) -> list:
    spans = SpanFactory(rollout_id=rollout_id, task_id=f"task-{rollout_id}")
    return [
        spans.llm("q0", "a0"),
        spans.reward(0.5),
        spans.llm("q1", "a1"),
        spans.reward(0.25),
        spans.llm("q2", "a2"),
        spans.root(),
    ]


def summary(events) -> list[tuple]:
    return [
        (t.rollout_id, t.step, t.state_json, t.action_json, t.reward, t.done, t.next_state_json)
        for t in transitions(events)
    ]


def test_shuffled_duplicated_and_split_exports_give_the_same_transitions(tmp_path):
    from otel_lightning_collector import CollectorConfig, CollectorServer

    results = []
    for trial in range(3):
        spans = three_step_rollout("r-shuffle")
        # The root goes last (a rollout completes when its root arrives); all else in any order,
        # some spans twice (exporter retries), across several requests.
        body = spans[:-1] * 2
        random.Random(trial).shuffle(body)
        config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / f"trial-{trial}.db")
        with CollectorServer(config) as server:
            export = exporter(server.address)
            for start in range(0, len(body), 3):
                export(export_request(*body[start : start + 3]))
            response = export(export_request(spans[-1], spans[0]))
            assert not response.partial_success.rejected_spans
            events = wait_for_rollouts(server.address, 1)
            assert server.indexer.counters.spans_duplicate == 6
        results.append(summary(events))
    assert results[0] == results[1] == results[2]
    # Rewards that follow individual steps are credited per step ("auto" rule).
    assert [row[4] for row in results[0]] == [0.5, 0.25, 0.0]
    assert [row[5] for row in results[0]] == [False, False, True]


def test_spans_after_completion_are_kept_as_late_not_lost(collector):
    spans = SpanFactory(rollout_id="r-late")
    export = exporter(collector.address)
    export(export_request(spans.llm("q", "a"), spans.root()))
    wait_for_rollouts(collector.address, 1)
    export(export_request(spans.llm("q-late", "a-late")))
    assert collector.flush()
    assert collector.indexer.counters.spans_late == 1
    assert collector.store.rollout("r-late").late_span_count == 1
    assert len(transitions(wait_for_rollouts(collector.address, 1))) == 1


def test_malformed_bytes_get_invalid_argument_and_the_server_keeps_serving(collector):
    channel = grpc.insecure_channel(collector.address)
    raw_export = channel.unary_unary(EXPORT)  # bytes in, bytes out
    with pytest.raises(grpc.RpcError) as caught:
        raw_export(b"\x0a\xff\xff\xff\xff\x0f garbage")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed OTLP" in caught.value.details()
    spans = SpanFactory(rollout_id="after-garbage")
    exporter(collector.address)(export_request(spans.llm("q", "a"), spans.root()))
    assert len(transitions(wait_for_rollouts(collector.address, 1))) == 1
    assert collector.receiver.counters.requests_malformed == 1


def test_invalid_spans_are_kept_aside_with_reasons_and_the_rest_used(collector, caplog):
    spans = SpanFactory(rollout_id="r-partial")
    bad_id = spans.llm("q", "a")
    bad_id.span_id = b"\x01\x02"
    bad_type = spans.llm("q", "a")
    for kv in bad_type.attributes:
        if kv.key == semconv.ATTEMPT:
            kv.value.string_value = "not-a-number"
    foreign = SpanFactory(rollout_id="unused").llm("q", "a")
    del foreign.attributes[:]  # in a trace of no rollout: not ours (a rollout is a trace)
    response = exporter(collector.address)(
        export_request(bad_id, bad_type, foreign, spans.llm("good", "yes"), spans.root())
    )
    # Acknowledged whole; the bad id is found at once (partial_success), the bad attribute type only
    # when the span is indexed, after the acknowledgement: both are kept aside with the reason.
    assert response.partial_success.rejected_spans == 1
    assert "span_id must be 8 bytes" in response.partial_success.error_message
    [step] = transitions(wait_for_rollouts(collector.address, 1))
    assert '"good"' in step.state_json
    assert collector.flush()
    assert (collector.indexer.counters.spans_rejected, collector.indexer.counters.spans_foreign) == (2, 0)
    # The span of another trace waits loose for a rollout of its trace (dropped, counted, if none comes).
    loose = collector.store.reader().execute("SELECT rollout_id FROM spans WHERE span_id = ?", (foreign.span_id.hex(),))
    assert loose.fetchall() == [("",)]
    kept = dict(collector.store.rejected_spans())
    assert sorted(kept.values()) == sorted([bad_id.SerializeToString(), bad_type.SerializeToString()])
    reasons = " ".join(kept)
    assert "span_id must be 8 bytes" in reasons and f"{semconv.ATTEMPT} must be an int" in reasons
    assert "2 span(s) rejected and kept aside" in caplog.text


def test_requests_without_rollout_spans_are_not_stored(collector):
    spans = SpanFactory(rollout_id="unused")
    foreign = [spans.llm("q", "a"), spans.llm("q2", "a2")]
    for span in foreign:
        del span.attributes[:]
    exporter(collector.address)(export_request(*foreign))
    assert collector.receiver.counters.spans_foreign == 2
    assert collector.store.pending_batch_ids() == [] and collector.indexer.counters.batches_indexed == 0


def test_gzip_compressed_exports_are_accepted(collector):
    spans = SpanFactory(rollout_id="r-gzip")
    request = export_request(spans.llm("q" * 2000, "a"), spans.root())
    assert len(gzip.compress(request.SerializeToString())) < request.ByteSize()
    exporter(collector.address, grpc.Compression.Gzip)(request)
    assert len(transitions(wait_for_rollouts(collector.address, 1))) == 1


def test_rollout_without_root_is_completed_incomplete_after_timeout(tmp_path):
    from otel_lightning_collector import CollectorConfig, CollectorServer

    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", rollout_timeout_s=0.2)
    with CollectorServer(config) as server:
        spans = SpanFactory(rollout_id="r-orphan")
        exporter(server.address)(export_request(spans.llm("q", "a")))
        events = wait_for_rollouts(server.address, 1, timeout_s=10)
    [done] = rollouts(events)
    assert done.status == "incomplete"
    assert [t.rollout_status for t in transitions(events)] == ["incomplete"]


def test_multi_agent_steps_link_within_each_agent(collector):
    spans = SpanFactory(rollout_id="r-agents")
    exporter(collector.address)(
        export_request(
            spans.llm("p0", "x0", agent="planner"),
            spans.llm("c0", "y0", agent="coder"),
            spans.llm("p1", "x1", agent="planner"),
            spans.reward(1.0),
            spans.root(),
        )
    )
    steps = transitions(wait_for_rollouts(collector.address, 1))
    by_agent = {(t.agent, t.step): t for t in steps}
    assert sorted(by_agent) == [("coder", 0), ("planner", 0), ("planner", 1)]
    assert by_agent[("planner", 0)].next_state_json == by_agent[("planner", 1)].state_json
    assert by_agent[("coder", 0)].done and not by_agent[("planner", 0)].done
    assert [t.reward for t in steps] == [1.0, 1.0, 1.0]


def test_overloaded_collector_answers_unavailable_which_exporters_retry(tmp_path, monkeypatch):
    import threading

    from otel_lightning_collector import CollectorConfig, CollectorServer

    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "busy.db", max_concurrent_exports=1)
    with CollectorServer(config) as server:
        entered, release = threading.Event(), threading.Event()
        real_append = server.store.append_batch

        def slow_append(raw):
            entered.set()
            release.wait(10)
            return real_append(raw)

        monkeypatch.setattr(server.store, "append_batch", slow_append)
        first = SpanFactory(rollout_id="r-first")
        export = exporter(server.address)
        pending = export.future(export_request(first.llm("q", "a"), first.root()))
        assert entered.wait(10)
        second = SpanFactory(rollout_id="r-second")
        with pytest.raises(grpc.RpcError) as caught:
            export(export_request(second.llm("q", "a"), second.root()))
        # Over the concurrent export limit: the client sends more than it may at once (HTTP 429's
        # gRPC twin), with RetryInfo, which makes it retryable for OTLP exporters.
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        release.set()
        pending.result(timeout=10)
        monkeypatch.setattr(server.store, "append_batch", real_append)
        export(export_request(second.llm("q", "a"), second.root()))  # the retry goes through
        assert sorted(r.rollout_id for r in rollouts(wait_for_rollouts(server.address, 2))) == [
            "r-first",
            "r-second",
        ]


def test_unwritable_store_answers_unavailable_and_keeps_what_it_has(collector, monkeypatch):
    import sqlite3

    spans = SpanFactory(rollout_id="r-kept")
    export = exporter(collector.address)
    export(export_request(spans.llm("q", "a"), spans.root()))
    wait_for_rollouts(collector.address, 1)

    def disk_full(raw):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(collector.store, "append_batch", disk_full)
    other = SpanFactory(rollout_id="r-refused")
    with pytest.raises(grpc.RpcError) as caught:
        export(export_request(other.llm("q", "a"), other.root()))
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "not writable" in caught.value.details()
    assert [r.rollout_id for r in rollouts(wait_for_rollouts(collector.address, 1))] == ["r-kept"]


def test_a_backlog_of_unindexed_spans_is_refused_as_retryable_until_it_drains(tmp_path, monkeypatch):
    import threading

    from otel_lightning_collector import CollectorConfig, CollectorServer

    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "backlog.db", max_pending_spans=2)
    with CollectorServer(config) as server:
        release = threading.Event()
        real_ingest = server.store.ingest

        def stuck_ingest(*args):
            release.wait(10)
            return real_ingest(*args)

        monkeypatch.setattr(server.store, "ingest", stuck_ingest)
        export = exporter(server.address)
        first, second = SpanFactory(rollout_id="r-first"), SpanFactory(rollout_id="r-second")
        export(export_request(first.llm("q", "a"), first.root()))  # acknowledged: committed whole
        with pytest.raises(grpc.RpcError) as caught:
            export(export_request(second.llm("q", "a"), second.root()))
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "waiting to be indexed" in caught.value.details()
        release.set()
        assert server.flush()
        export(export_request(second.llm("q", "a"), second.root()))
        assert sorted(r.rollout_id for r in rollouts(wait_for_rollouts(server.address, 2))) == ["r-first", "r-second"]


def test_acknowledged_requests_not_yet_indexed_are_indexed_after_a_restart(tmp_path):
    from otel_lightning_collector import CollectorConfig, CollectorServer
    from otel_lightning_collector.store import Store

    # What a collector killed between acknowledging and indexing leaves behind: the batch alone.
    spans = SpanFactory(rollout_id="r-crashed")
    store = Store(tmp_path / "crash.db")
    store.append_batch(export_request(spans.llm("q", "a"), spans.reward(1.0), spans.root()).SerializeToString())
    store.close()
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "crash.db")
    with CollectorServer(config) as server:
        events = wait_for_rollouts(server.address, 1)
        assert server.store.pending_batch_ids() == []
    [step] = transitions(events)
    assert (step.rollout_id, step.reward) == ("r-crashed", 1.0)


def test_a_request_that_cannot_be_indexed_holds_back_no_other(tmp_path, caplog):
    from otel_lightning_collector import CollectorConfig, CollectorServer
    from otel_lightning_collector.store import Store

    spans = SpanFactory(rollout_id="r-good")
    store = Store(tmp_path / "mixed.db")
    corrupt = store.append_batch(b"\x0a\xff\xff\xff\xff\x0f not protobuf")  # e.g. a damaged disk
    store.append_batch(export_request(spans.llm("q", "a"), spans.root()).SerializeToString())
    store.close()
    with CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "mixed.db")) as server:
        [done] = rollouts(wait_for_rollouts(server.address, 1))
        assert server.flush()
        assert server.store.pending_batch_ids() == [corrupt]  # kept, not dropped
    assert done.rollout_id == "r-good"
    assert f"could not index export request {corrupt}" in caplog.text


def test_an_llm_call_recorded_at_two_layers_is_one_step_the_inner_one(collector):
    """A framework's LLM span with a client's LLM span inside (LangChain over the OpenAI client, each
    instrumented by someone) is one call: the inner span, with token ids, is the step."""
    spans = SpanFactory(rollout_id="r-layers")
    outer = spans.llm("q", "framework view", agent="math")
    inner = spans.llm("q", "wire view", parent=outer.span_id, **{semconv.RESPONSE_TOKEN_IDS: [1, 2]})
    cycle_a, cycle_b = spans.llm("a", "b"), spans.llm("c", "d")  # a broken parent cycle must not hang
    cycle_a.parent_span_id, cycle_b.parent_span_id = cycle_b.span_id, cycle_a.span_id
    exporter(collector.address)(export_request(outer, inner, cycle_a, cycle_b, spans.reward(1.0), spans.root()))
    steps = transitions(wait_for_rollouts(collector.address, 1))
    layered = [t for t in steps if t.span_id in (outer.span_id.hex(), inner.span_id.hex())]
    found = [(t.span_id, t.agent, list(t.response_token_ids)) for t in layered]
    assert found == [(inner.span_id.hex(), "math", [1, 2])]
    assert "wire view" in layered[0].action_json
