"""Rewards from standard signals and late feedback, over the real transports: the Feedback service
(gRPC and HTTP), gen_ai.evaluation.result log records over OTLP/HTTP (protobuf and JSON) and the
real OTLP log exporter, --feedback-wait-s, and logs and metrics forwarded with --forward-to."""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning.v1 import feedback_pb2 as fb
from otel_lightning.v1 import feedback_pb2_grpc as fb_grpc
from otel_lightning_collector.server import CollectorConfig, CollectorServer
from otel_lightning_collector.spans import key_value
from tests.collector.test_ingest_robustness import exporter
from tests.support import SpanFactory, export_request, rollouts, wait_for_rollouts, wait_until


def _events(address: str) -> list:
    with TransitionStreamClient(address, follow=False, auto_ack=True, reward_updates=True) as client:
        return list(client)


def _evaluation_logs(trace_id: bytes, span_id: bytes, score: float, name: str = "judge") -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    record = (
        request.resource_logs.add()
        .scope_logs.add()
        .log_records.add(trace_id=trace_id, span_id=span_id, event_name="gen_ai.evaluation.result", time_unix_nano=5)
    )
    record.attributes.extend(
        [key_value("gen_ai.evaluation.name", name), key_value("gen_ai.evaluation.score.value", score)]
    )
    return request


def _post(url: str, body: bytes, content_type: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def server(tmp_path: Path):
    config = CollectorConfig(listen="127.0.0.1:0", http_listen="127.0.0.1:0", store_path=tmp_path / "c.db")
    with CollectorServer(config) as running:
        yield running


def test_feedback_over_grpc_before_and_after_completion(server) -> None:
    spans = SpanFactory(rollout_id="r-late")
    export = exporter(server.address)
    export(export_request(spans.llm("2+2?", "4"), spans.reward(1.0)))
    stub = fb_grpc.FeedbackStub(grpc.insecure_channel(server.address))
    # Open rollout (no root yet): the reward waits and is part of its completion.
    early = stub.Record(fb.FeedbackRequest(trace_id=spans.trace_id.hex(), score=0.5, name="user"), timeout=10)
    assert wait_until(lambda: server.indexer.flush(1), 5)
    export(export_request(spans.root()))
    (done,) = rollouts(wait_for_rollouts(server.address, 1))
    assert (early.rollout_id, early.rollout_completed) in (("r-late", False), ("", False))
    assert done.total_reward == pytest.approx(1.5)
    # Complete: a RewardUpdate on the stream, for subscribers that ask.
    late = stub.Record(fb.FeedbackRequest(rollout_id="r-late", score=-1.0, name="thumbs"), timeout=10)
    assert (late.rollout_id, late.rollout_completed) == ("r-late", True)
    updates = [e.reward_update for e in _events(server.address) if e.HasField("reward_update")]
    assert [(u.rollout_id, u.task_id, u.name, u.value, u.origin, u.span_id) for u in updates] == [
        ("r-late", "t1", "thumbs", -1.0, "feedback", "")  # a reward of the whole rollout names no step
    ]
    with pytest.raises(grpc.RpcError) as unknown:
        stub.Record(fb.FeedbackRequest(rollout_id="nope", score=1.0), timeout=10)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    for ambiguous in (fb.FeedbackRequest(score=1.0), fb.FeedbackRequest(rollout_id="r-late", trace_id="ab", score=1)):
        with pytest.raises(grpc.RpcError) as invalid:
            stub.Record(ambiguous, timeout=10)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_feedback_over_http_and_evaluation_logs_over_otlp_http(server) -> None:
    base = f"http://{server.http.address}"
    spans = SpanFactory(rollout_id="r-http")
    llm = spans.llm("2+2?", "4")
    exporter(server.address)(export_request(llm, spans.root()))
    wait_for_rollouts(server.address, 1)
    # An evaluation record after completion (protobuf): a reward update attached by trace.
    status, _ = _post(
        f"{base}/v1/logs",
        _evaluation_logs(spans.trace_id, llm.span_id, 0.25).SerializeToString(),
        "application/x-protobuf",
    )
    assert status == 200
    # The same in OTLP/JSON (ids in hex).
    document = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "traceId": spans.trace_id.hex(),
                                "spanId": llm.span_id.hex(),
                                "eventName": "gen_ai.evaluation.result",
                                "attributes": [
                                    {"key": "gen_ai.evaluation.name", "value": {"stringValue": "style"}},
                                    {"key": "gen_ai.evaluation.score.value", "value": {"doubleValue": 0.5}},
                                ],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    assert _post(f"{base}/v1/logs", json.dumps(document).encode(), "application/json")[0] == 200
    status, answer = _post(
        f"{base}/v1/feedback", json.dumps({"rollout_id": "r-http", "score": 1}).encode(), "application/json"
    )
    assert status == 200 and json.loads(answer) == {"rollout_id": "r-http", "rollout_completed": True}
    assert _post(f"{base}/v1/feedback", b'{"score": "high"}', "application/json")[0] == 400
    assert _post(f"{base}/v1/feedback", b'{"rollout_id": "zz", "score": 1}', "application/json")[0] == 404
    assert _post(f"{base}/v1/logs", b"\xff\x00garbage", "application/x-protobuf")[0] == 400
    updates = [e.reward_update for e in _events(server.address) if e.HasField("reward_update")]
    assert [(u.name, u.value, u.origin) for u in updates] == [
        ("judge", 0.25, "evaluation"),
        ("style", 0.5, "evaluation"),
        ("", 1.0, "feedback"),
    ]


def test_feedback_wait_lets_a_late_evaluation_join_the_completion(tmp_path: Path) -> None:
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", feedback_wait_s=1.5)
    with CollectorServer(config) as server:
        spans = SpanFactory(rollout_id="r-wait")
        llm = spans.llm("2+2?", "4")
        exporter(server.address)(export_request(llm, spans.root()))
        logs = grpc.insecure_channel(server.address).unary_unary(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
        )
        logs(_evaluation_logs(spans.trace_id, llm.span_id, 0.75).SerializeToString(), timeout=10)
        (done,) = rollouts(wait_for_rollouts(server.address, 1, timeout_s=10))
        assert done.has_reward and done.total_reward == pytest.approx(0.75)
        assert not [e for e in _events(server.address) if e.HasField("reward_update")]


class _Upstream:
    """An OTLP/gRPC endpoint that records which signals it was sent."""

    def __init__(self) -> None:
        self.received: list[str] = []
        self._lock = threading.Lock()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        services = {
            "opentelemetry.proto.collector.trace.v1.TraceService": "traces",
            "opentelemetry.proto.collector.logs.v1.LogsService": "logs",
            "opentelemetry.proto.collector.metrics.v1.MetricsService": "metrics",
        }
        self.server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler(
                    service, {"Export": grpc.unary_unary_rpc_method_handler(self._export(signal))}
                )
                for service, signal in services.items()
            ]
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _export(self, signal: str):
        def export(raw: bytes, context) -> bytes:
            with self._lock:
                self.received.append(signal)
            return b""

        return export


def test_logs_and_metrics_are_forwarded_like_traces(tmp_path: Path) -> None:
    upstream = _Upstream()
    config = CollectorConfig(
        listen="127.0.0.1:0", store_path=tmp_path / "c.db", forward_to=f"127.0.0.1:{upstream.port}"
    )
    try:
        with CollectorServer(config) as server:
            channel = grpc.insecure_channel(server.address)
            spans = SpanFactory()
            exporter(server.address)(export_request(spans.llm("q", "a"), spans.root()))
            channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")(
                _evaluation_logs(spans.trace_id, b"", 1.0).SerializeToString(), timeout=10
            )
            channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")(
                ExportMetricsServiceRequest().SerializeToString(), timeout=10
            )
            assert wait_until(lambda: sorted(upstream.received) == ["logs", "metrics", "traces"], 10), upstream.received
    finally:
        upstream.server.stop(0)


def test_an_evaluation_from_the_real_otlp_http_log_exporter_is_the_reward(server) -> None:
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context

    spans = SpanFactory(rollout_id="r-exporter")
    llm = spans.llm("2+2?", "4")
    exporter(server.address)(export_request(llm))
    provider = LoggerProvider()
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"http://{server.http.address}/v1/logs"))
    )
    rated = SpanContext(int.from_bytes(spans.trace_id, "big"), int.from_bytes(llm.span_id, "big"), False, TraceFlags(1))
    provider.get_logger("judge").emit(
        event_name="gen_ai.evaluation.result",
        attributes={"gen_ai.evaluation.name": "judge", "gen_ai.evaluation.score.value": 0.5},
        context=set_span_in_context(NonRecordingSpan(rated)),
    )
    provider.shutdown()
    assert server.extras.signals.counters.evaluations_recorded == 1
    exporter(server.address)(export_request(spans.root()))
    (done,) = rollouts(wait_for_rollouts(server.address, 1))
    assert done.has_reward and done.total_reward == pytest.approx(0.5)


def test_logs_and_feedback_no_rollout_claims_are_dropped_and_counted(server) -> None:
    import os
    import time

    from otel_lightning_collector.feedback import EVALUATION

    stray_trace = os.urandom(16)
    grpc.insecure_channel(server.address).unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")(
        _evaluation_logs(stray_trace, b"", 1.0).SerializeToString(), timeout=10
    )
    server.extras.signals.export_logs(_evaluation_logs(stray_trace, b"", 2.0))
    plain = ExportLogsServiceRequest()
    plain.resource_logs.add().scope_logs.add().log_records.add(trace_id=stray_trace, span_id=b"\x01" * 8)
    server.extras.signals.export_logs(plain)
    server.extras.recorder.record(score=1.0, trace_id=stray_trace.hex(), origin=EVALUATION)
    loose = server.extras.loose
    loose.keep_s = 0.0
    loose._unclaimed_at = -1e9  # due now
    time.sleep(0.01)
    loose.sweep()
    assert (loose.counters.log_records_dropped, loose.counters.feedback_dropped) == (1, 3)
    with server.store.reader() as db:
        assert db.execute("SELECT COUNT(*) FROM logs").fetchone() == (0,)
        assert db.execute("SELECT COUNT(*) FROM feedback").fetchone() == (0,)
