"""OTLP/HTTP: the real SDK's HTTP exporter, hand-made OTLP/JSON, and every kind of bad request."""

from __future__ import annotations

import base64
import gzip
import json
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

import otel_lightning as ol
from otel_lightning import semconv
from otel_lightning_collector import CollectorConfig, CollectorServer
from tests.support import SpanFactory, export_request, rollouts, transitions, wait_for_rollouts


@pytest.fixture
def http_collector(tmp_path: Path) -> Iterator[CollectorServer]:
    config = CollectorConfig(listen="127.0.0.1:0", http_listen="127.0.0.1:0", store_path=tmp_path / "c.db")
    with CollectorServer(config) as server:
        yield server


def post(url: str, body: bytes, content_type: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type, **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def to_otlp_json(request) -> bytes:
    """The OTLP/JSON encoding of a request: camelCase names, ids as hex (not base64), plus a field
    this receiver does not know (the spec says receivers ignore those)."""
    document = json_format.MessageToDict(request)
    for resource_spans in document["resourceSpans"]:
        resource_spans["someFutureField"] = {"x": 1}
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in span:
                        span[name] = base64.b64decode(span[name]).hex()
    return json.dumps(document).encode()


def test_the_sdk_http_exporter_trains_like_grpc(http_collector, route_spans):
    processor = route_spans(http_collector.http.endpoint)
    tracer = trace.get_tracer("test")

    @ol.reward
    def judge(answer: str) -> float:
        return 1.0

    with ol.rollout(task_id="task-http"):
        with tracer.start_as_current_span("chat", attributes={semconv.SPAN_KIND: semconv.SPAN_KIND_LLM}) as span:
            span.set_attribute(semconv.GEN_AI_INPUT_MESSAGES, '[{"role":"user","content":"2+2?"}]')
            span.set_attribute(semconv.GEN_AI_OUTPUT_MESSAGES, '[{"role":"assistant","content":"4"}]')
        judge("4")
    assert processor.force_flush(10_000)
    [step] = transitions(wait_for_rollouts(http_collector.address, 1))
    assert (step.task_id, step.reward, step.done) == ("task-http", 1.0, True)
    assert http_collector.receiver.counters.requests >= 1


def test_json_requests_give_the_same_transitions_as_protobuf(tmp_path):
    results = []
    spans = SpanFactory(rollout_id="r-json")
    request = export_request(spans.llm("q", "a", **{semconv.PROMPT_TOKEN_IDS: [5, 6]}), spans.reward(0.5), spans.root())
    for encoding in ("protobuf", "json"):
        config = CollectorConfig(
            listen="127.0.0.1:0", http_listen="127.0.0.1:0", store_path=tmp_path / f"{encoding}.db"
        )
        with CollectorServer(config) as server:
            if encoding == "json":
                status, headers, body = post(server.http.endpoint, to_otlp_json(request), "application/json")
                assert headers["Content-Type"] == "application/json"
                assert json.loads(body) == {}  # an empty ExportTraceServiceResponse: everything accepted
            else:
                status, headers, body = post(
                    server.http.endpoint, request.SerializeToString(), "application/x-protobuf"
                )
                assert headers["Content-Type"] == "application/x-protobuf"
                assert not ExportTraceServiceResponse.FromString(body).HasField("partial_success")
            assert status == 200
            events = wait_for_rollouts(server.address, 1)
        results.append(
            [(t.span_id, t.trace_id, t.state_json, t.reward, list(t.prompt_token_ids)) for t in transitions(events)]
        )
        results[-1].append(rollouts(events)[0].status)
    assert results[0] == results[1]
    assert results[0][0][3:] == (0.5, [5, 6])


def test_gzip_bodies_are_accepted(http_collector):
    spans = SpanFactory(rollout_id="r-gzip")
    body = gzip.compress(export_request(spans.llm("q" * 3000, "a"), spans.root()).SerializeToString())
    status, _, _ = post(http_collector.http.endpoint, body, "application/x-protobuf", **{"Content-Encoding": "gzip"})
    assert status == 200
    assert len(transitions(wait_for_rollouts(http_collector.address, 1))) == 1


@pytest.mark.parametrize(
    ("body", "content_type", "expected_status", "reason"),
    [
        (b"\x0a\xff\xff\xff\xff\x0f garbage", "application/x-protobuf", 400, "malformed OTLP"),
        (b'{"resourceSpans": [', "application/json", 400, "malformed OTLP/JSON"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": "zz"}]}]}]}', "application/json", 400, "not hex"),
        (b'{"resourceSpans": "not a list"}', "application/json", 400, "malformed OTLP/JSON"),
        (b"<xml/>", "text/xml", 415, "Content-Type must be"),
    ],
)
def test_bad_requests_get_a_clear_error_and_the_receiver_keeps_serving(
    http_collector, body, content_type, expected_status, reason
):
    status, _, answer = post(http_collector.http.endpoint, body, content_type)
    assert status == expected_status
    if content_type == "application/json":
        assert reason in json.loads(answer)["message"]
    else:
        assert reason in status_pb2.Status.FromString(answer).message
    spans = SpanFactory(rollout_id="after-bad")
    status, _, _ = post(
        http_collector.http.endpoint,
        export_request(spans.llm("q", "a"), spans.root()).SerializeToString(),
        "application/x-protobuf",
    )
    assert status == 200
    assert len(transitions(wait_for_rollouts(http_collector.address, 1))) == 1


def test_unknown_paths_and_other_signals(http_collector):
    base = http_collector.http.endpoint.removesuffix("/v1/traces")
    assert post(base + "/v2/traces", b"", "application/x-protobuf")[0] == 404
    # opentelemetry-instrument also sends metrics and logs: acknowledged, not kept.
    assert post(base + "/v1/metrics", b"", "application/x-protobuf")[0] == 200
    assert http_collector.receiver.counters.other_signal_requests == 1


def test_invalid_spans_are_kept_aside_and_the_rest_used(http_collector):
    spans = SpanFactory(rollout_id="r-partial")
    bad = spans.llm("q", "a")
    bad.trace_id = b"\x00" * 16
    request = export_request(bad, spans.llm("good", "yes"), spans.root())
    status, _, body = post(http_collector.http.endpoint, to_otlp_json(request), "application/json")
    assert status == 200
    assert json.loads(body)["partialSuccess"]["rejectedSpans"] == "1"  # int64: a string in OTLP/JSON
    [step] = transitions(wait_for_rollouts(http_collector.address, 1))
    assert '"good"' in step.state_json
    assert http_collector.flush()
    [(reason, kept)] = http_collector.store.rejected_spans()
    assert "trace_id must be 16 bytes" in reason and kept == bad.SerializeToString()


def test_a_refused_export_is_503_with_retry_after(http_collector, monkeypatch):
    def disk_full(raw):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(http_collector.store, "append_batch", disk_full)
    spans = SpanFactory(rollout_id="r-refused")
    status, headers, body = post(
        http_collector.http.endpoint,
        export_request(spans.llm("q", "a"), spans.root()).SerializeToString(),
        "application/x-protobuf",
    )
    assert status == 503
    assert headers["Retry-After"] == "1"
    assert "not writable" in status_pb2.Status.FromString(body).message


def test_an_oversized_body_is_413(tmp_path):
    config = CollectorConfig(
        listen="127.0.0.1:0", http_listen="127.0.0.1:0", store_path=tmp_path / "c.db", max_message_bytes=1000
    )
    with CollectorServer(config) as server:
        spans = SpanFactory(rollout_id="r-big")
        body = export_request(spans.llm("q" * 5000, "a")).SerializeToString()
        assert post(server.http.endpoint, body, "application/x-protobuf")[0] == 413
