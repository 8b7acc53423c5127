"""Fuzzing the OTLP receivers and our own gRPC services: every request gets an answer, every span is
accounted for (stored, rejected with a reason, foreign or a duplicate), and the server stays up."""

from __future__ import annotations

import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_lightning import semconv
from otel_lightning_collector import CollectorConfig, CollectorServer
from tests.collector.test_faults import export_with_retries
from tests.collector.test_ingest_robustness import EXPORT
from tests.support import SpanFactory, export_request, read_all

FUZZ = settings(
    max_examples=int(os.environ.get("LIGHTNING_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory) -> CollectorServer:
    path: Path = tmp_path_factory.mktemp("fuzz") / "c.db"
    config = CollectorConfig(listen="127.0.0.1:0", http_listen="127.0.0.1:0", store_path=path, rollout_timeout_s=3600)
    with CollectorServer(config) as server:
        yield server


def raw_export(address: str):
    return grpc.insecure_channel(address).unary_unary(EXPORT)


def still_serving(server: CollectorServer) -> None:
    spans = SpanFactory(rollout_id=f"alive-{os.urandom(4).hex()}")
    response = raw_export(server.address)(export_request(spans.llm("q", "a"), spans.root()).SerializeToString())
    assert ExportTraceServiceResponse.FromString(response) == ExportTraceServiceResponse()


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_get_ok_or_invalid_argument(fuzzed, data):
    try:
        raw_export(fuzzed.address)(data, timeout=10)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
        assert "malformed OTLP" in error.details()


@FUZZ
@given(st.integers(min_value=0, max_value=10_000), st.randoms())
def test_truncated_and_bit_flipped_requests(fuzzed, cut, rng):
    spans = SpanFactory(rollout_id=f"cut-{cut}")
    raw = bytearray(export_request(spans.llm("q" * 50, "a"), spans.reward(1.0), spans.root()).SerializeToString())
    raw = raw[: cut % (len(raw) + 1)]
    for _ in range(rng.randint(0, 3)):
        if raw:
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
    try:
        raw_export(fuzzed.address)(bytes(raw), timeout=10)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


any_value = st.one_of(
    st.text(max_size=30).map(lambda v: AnyValue(string_value=v)),
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda v: AnyValue(int_value=v)),
    st.floats(allow_nan=True).map(lambda v: AnyValue(double_value=v)),
    st.booleans().map(lambda v: AnyValue(bool_value=v)),
    st.binary(max_size=10).map(lambda v: AnyValue(bytes_value=v)),
    st.just(AnyValue()),
)
keys = st.sampled_from(
    [
        semconv.ROLLOUT_ID,
        semconv.TASK_ID,
        semconv.ATTEMPT,
        semconv.SPAN_KIND,
        semconv.REWARD_VALUE,
        semconv.GEN_AI_INPUT_MESSAGES,
        semconv.GEN_AI_OUTPUT_MESSAGES,
        semconv.PROMPT_TOKEN_IDS,
        "user.attribute",
    ]
)


@st.composite
def spans(draw) -> Span:
    span = Span(
        trace_id=draw(st.one_of(st.binary(min_size=16, max_size=16), st.binary(max_size=20))),
        span_id=draw(st.one_of(st.binary(min_size=8, max_size=8), st.binary(max_size=10))),
        parent_span_id=draw(st.one_of(st.just(b""), st.binary(min_size=8, max_size=8), st.binary(max_size=10))),
        name=draw(st.text(max_size=20)),
        # Clock skew: any order, zero, far future.
        start_time_unix_nano=draw(st.integers(min_value=0, max_value=2**64 - 1)),
        end_time_unix_nano=draw(st.integers(min_value=0, max_value=2**64 - 1)),
    )
    if draw(st.booleans()):  # mostly rollout spans, of a few rollouts, with plausible values
        span.attributes.append(
            KeyValue(key=semconv.ROLLOUT_ID, value=AnyValue(string_value=draw(st.sampled_from("abc"))))
        )
        span.attributes.append(
            KeyValue(
                key=semconv.SPAN_KIND,
                value=AnyValue(string_value=draw(st.sampled_from(["llm", "reward", "rollout", "tool"]))),
            )
        )
    for key, value in draw(st.lists(st.tuples(keys, any_value), max_size=6)):
        span.attributes.append(KeyValue(key=key, value=value))
    return span


@FUZZ
@given(st.lists(spans(), min_size=1, max_size=12))
def test_every_span_of_a_decodable_request_is_accounted_for(fuzzed, generated):
    for span in generated:  # fresh rollout ids per example: completions of one example do not leak into the next
        for kv in span.attributes:
            if kv.key == semconv.ROLLOUT_ID and kv.value.WhichOneof("value") == "string_value":
                kv.value.string_value += f"-{id(generated)}"
    before = {**vars(fuzzed.intake.counters), **{f"i.{k}": v for k, v in vars(fuzzed.indexer.counters).items()}}
    response = raw_export(fuzzed.address)(export_request(*generated).SerializeToString(), timeout=10)
    assert fuzzed.flush()
    after = {**vars(fuzzed.intake.counters), **{f"i.{k}": v for k, v in vars(fuzzed.indexer.counters).items()}}
    delta = {key: after[key] - before[key] for key in after}
    # The acknowledgement reports the spans it can see are unusable; the indexer rejects those and maybe more.
    rejected_at_ack = ExportTraceServiceResponse.FromString(response).partial_success.rejected_spans
    assert rejected_at_ack == delta["spans_rejected_at_ack"] <= delta["i.spans_rejected"]
    accounted = (
        delta["spans_foreign"]
        + delta["i.spans_foreign"]
        + delta["i.spans_rejected"]
        + delta["i.spans_stored"]
        + delta["i.spans_duplicate"]
    )
    assert accounted == len(generated), str(delta)


@FUZZ
@given(st.binary(max_size=1024), st.sampled_from(["application/x-protobuf", "application/json"]))
def test_http_answers_200_or_400_never_a_server_error(fuzzed, body, content_type):
    request = urllib.request.Request(fuzzed.http.endpoint, data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200
    except urllib.error.HTTPError as error:
        assert error.code == 400, error.read()


@FUZZ
@given(
    st.sampled_from(
        [
            "/otel_lightning.v1.TaskPool/Submit",
            "/otel_lightning.v1.TaskPool/Claim",
            "/otel_lightning.v1.TaskPool/Complete",
            "/otel_lightning.v1.TaskPool/Heartbeat",
            "/otel_lightning.v1.CollectorStatus/GetStatus",
        ]
    ),
    st.binary(max_size=512),
)
def test_our_services_answer_garbage_with_an_error_and_keep_serving(fuzzed, method, data):
    call = grpc.insecure_channel(fuzzed.address).unary_unary(method)
    try:
        call(data, timeout=10)
    except grpc.RpcError as error:
        assert error.code() in (
            grpc.StatusCode.INVALID_ARGUMENT,
            grpc.StatusCode.INTERNAL,  # grpc's own answer to a request it cannot deserialize
            grpc.StatusCode.NOT_FOUND,
            grpc.StatusCode.FAILED_PRECONDITION,
        ), error


@FUZZ
@given(st.binary(max_size=512))
def test_the_transition_stream_refuses_garbage_subscriptions(fuzzed, data):
    call = grpc.insecure_channel(fuzzed.address).stream_stream("/otel_lightning.v1.TransitionStream/Subscribe")
    try:
        for _ in call(iter([data]), timeout=5):
            break
    except grpc.RpcError as error:
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED), error


def test_absurd_sizes_are_taken_or_refused_with_a_reason(fuzzed):
    export = raw_export(fuzzed.address)
    # A 5 MB attribute.
    spans = SpanFactory(rollout_id="huge-attribute")
    export(export_request(spans.llm("x" * (5 << 20), "a"), spans.root()).SerializeToString(), timeout=60)
    # 100k spans in one request: more than the backlog ever holds (50k), refused for good with the reason.
    too_many = SpanFactory(rollout_id="too-many-spans")
    bulk = [too_many.reward(0.0) for _ in range(100_000)]
    with pytest.raises(grpc.RpcError) as refused:
        export(export_request(*bulk, too_many.llm("q", "a"), too_many.root()).SerializeToString(), timeout=120)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "the request has 100002 spans; the collector takes at most 50000" in refused.value.details()
    # 50k spans, the most one request may hold: taken.
    many = SpanFactory(rollout_id="many-spans")
    bulk = [many.reward(0.0) for _ in range(49_998)]
    export(export_request(*bulk, many.llm("q", "a"), many.root()).SerializeToString(), timeout=120)
    # A 5,000-deep span tree.
    deep = SpanFactory(rollout_id="deep-tree")
    chain = [deep.llm("q0", "a0")]
    for level in range(1, 5000):
        chain.append(deep.llm(f"q{level}", "a", parent=chain[-1].span_id))
    # Refused while the 100k spans are being indexed (a backlog over its bound): retried, as exporters do.
    export_with_retries(fuzzed.address, export_request(*chain, deep.root()).SerializeToString(), deadline_s=120)
    # Beyond the message size limit: a clear RESOURCE_EXHAUSTED, not a hang.
    with pytest.raises(grpc.RpcError) as caught:
        export(b"\x0a" + b"\xff" * 5 + b"x" * (70 << 20), timeout=60)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    wanted = {"huge-attribute", "many-spans", "deep-tree"}
    deadline = time.monotonic() + 120
    while True:  # the module's collector has completed other tests' rollouts too
        done = {e.rollout.rollout_id: e.rollout for e in read_all(fuzzed.address) if e.HasField("rollout")}
        if wanted <= set(done) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert done["huge-attribute"].status == "succeeded"
    assert done["many-spans"].span_count == 50_000
    assert done["deep-tree"].transition_count == 1  # nested LLM spans are one call: the innermost
    still_serving(fuzzed)
