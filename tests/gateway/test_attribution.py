"""Which trace and which rollout a call through the gateway belongs to: the caller's `traceparent`,
the rollout's URL and its registered route, or W3C baggage."""

from __future__ import annotations

import http.server
import json
import threading
import time

import httpx
import openai
import pytest
from opentelemetry import baggage, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_lightning import semconv
from otel_lightning_gateway import Gateway, RolloutRoute
from tests.gateway.support import QUESTION, llm_spans, token_ids


def _ask(base_url: str, headers: dict[str, str] | None = None) -> str:
    """A call with exactly these trace headers (plain HTTP: an instrumented OpenAI client adds its own)."""
    reply = httpx.post(
        f"{base_url}/chat/completions", json={"model": "m", "messages": QUESTION}, headers=headers or {}, timeout=10
    )
    return reply.json()["choices"][0]["message"]["content"]


def test_an_instrumented_openai_client_is_joined_under_its_own_span(gateway, gateway_exporter, memory_exporter):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    client.chat.completions.create(model="m", messages=QUESTION)
    (span,) = llm_spans(gateway_exporter)
    client_spans = [s for s in memory_exporter.get_finished_spans() if s.context.trace_id == span.context.trace_id]
    if not client_spans:
        pytest.skip("the OpenAI instrumentor in this tree does not propagate trace context to the model server")
    assert span.parent.span_id in {s.context.span_id for s in client_spans}


def test_a_call_with_traceparent_joins_the_callers_trace(gateway, gateway_exporter):
    caller = TracerProvider().get_tracer("agent")
    with caller.start_as_current_span("agent step") as step:
        headers: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(headers)
        _ask(gateway.base_url, headers)
    (span,) = llm_spans(gateway_exporter)
    assert span.context.trace_id == step.get_span_context().trace_id
    assert span.parent.span_id == step.get_span_context().span_id
    assert span.kind == trace.SpanKind.CLIENT


def test_a_rollout_url_attributes_the_call_and_parents_it_under_the_rollout(gateway, gateway_exporter, vllm_stub):
    rollout_span = TracerProvider().get_tracer("worker").start_span("lightning.rollout")
    parent = rollout_span.get_span_context()
    gateway.register_rollout(
        RolloutRoute(
            rollout_id="r-7",
            task_id="t-7",
            attempt=2,
            parent=parent,
            attributes={semconv.POLICY_VERSION: "v3", "lightning.candidate": "b"},
            rewrite=lambda endpoint, body: (
                {**body, "model": "candidate-b"} if endpoint == "/chat/completions" else body
            ),
        )
    )
    assert gateway.rollout_base_url("r-7") == f"http://{gateway.address}/rollout/r-7/v1"
    assert _ask(gateway.rollout_base_url("r-7")) == "The answer is 42."
    (span,) = llm_spans(gateway_exporter)
    a = span.attributes
    assert (a[semconv.ROLLOUT_ID], a[semconv.TASK_ID], a[semconv.ATTEMPT]) == ("r-7", "t-7", 2)
    assert (a[semconv.POLICY_VERSION], a["lightning.candidate"]) == ("v3", "b")
    assert (span.context.trace_id, span.parent.span_id) == (parent.trace_id, parent.span_id)
    assert vllm_stub.received[-1][1]["model"] == "candidate-b" and span.name == "chat candidate-b"
    assert semconv.GATEWAY_UNKNOWN_ROLLOUT not in a

    # traceparent wins over the route's parent (the agent traces itself); the rollout stays the URL's.
    own = TracerProvider().get_tracer("agent").start_span("agent step")
    headers: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(headers, context=trace.set_span_in_context(own))
    _ask(gateway.rollout_base_url("r-7"), headers)
    second = llm_spans(gateway_exporter, 2)[1]
    assert second.parent.span_id == own.get_span_context().span_id and second.attributes[semconv.ROLLOUT_ID] == "r-7"

    gateway.unregister_rollout("r-7")
    _ask(gateway.rollout_base_url("r-7"))
    third = llm_spans(gateway_exporter, 3)[2]
    assert third.attributes[semconv.GATEWAY_UNKNOWN_ROLLOUT] is True


def test_an_unknown_rollout_is_still_served_attributed_and_counted(gateway, gateway_exporter):
    assert _ask(gateway.rollout_base_url("never-registered")) == "The answer is 42."
    (span,) = llm_spans(gateway_exporter)
    assert span.attributes[semconv.ROLLOUT_ID] == "never-registered"
    assert span.attributes[semconv.GATEWAY_UNKNOWN_ROLLOUT] is True
    assert span.parent is None
    assert list(span.attributes[semconv.RESPONSE_TOKEN_IDS]) == token_ids("The answer is 42.")
    assert gateway.stats["unknown_rollouts"] == 1
    assert httpx.get(f"http://{gateway.address}/_gateway/stats", timeout=5).json()["unknown_rollouts"] == 1
    # Other paths under a rollout URL reach the upstream too.
    assert httpx.get(f"{gateway.rollout_base_url('never-registered')}/models", timeout=5).status_code == 200


def test_baggage_names_the_rollout_when_the_url_does_not(gateway, gateway_exporter):
    context = Context()
    for key, value in (
        (semconv.BAGGAGE_ROLLOUT_ID, "r-bag"),
        (semconv.BAGGAGE_TASK_ID, "t-bag"),
        (semconv.BAGGAGE_ATTEMPT, "3"),
        (semconv.BAGGAGE_AGENT_NAME, "Math"),
    ):
        context = baggage.set_baggage(key, value, context)
    headers: dict[str, str] = {}
    W3CBaggagePropagator().inject(headers, context=context)
    _ask(gateway.base_url, headers)
    (span,) = llm_spans(gateway_exporter)
    a = span.attributes
    assert (a[semconv.ROLLOUT_ID], a[semconv.TASK_ID], a[semconv.ATTEMPT], a[semconv.AGENT_NAME]) == (
        "r-bag",
        "t-bag",
        3,
        "Math",
    )


def test_a_rollout_id_that_needs_quoting_in_its_url_is_read_back_whole(gateway, gateway_exporter):
    gateway.register_rollout(RolloutRoute("task 1/attempt#2", task_id="t-q"))
    assert "/rollout/task%201%2Fattempt%232/v1" in gateway.rollout_base_url("task 1/attempt#2")
    assert _ask(gateway.rollout_base_url("task 1/attempt#2")) == "The answer is 42."
    (span,) = llm_spans(gateway_exporter)
    assert (span.attributes[semconv.ROLLOUT_ID], span.attributes[semconv.TASK_ID]) == ("task 1/attempt#2", "t-q")
    assert gateway.stats["unknown_rollouts"] == 0


class _TraceRecordingModelServer(http.server.ThreadingHTTPServer):
    """A model server that answers every chat call the same and keeps each request's `traceparent`
    and `tracestate`."""

    def __init__(self) -> None:
        self.traceparents: list[str | None] = []
        self.tracestates: list[str | None] = []
        self.received_ns: list[int] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                server.traceparents.append(self.headers.get("traceparent"))
                server.tracestates.append(self.headers.get("tracestate"))
                server.received_ns.append(time.time_ns())
                body = json.dumps(
                    {
                        "id": "c1",
                        "model": "m",
                        "choices": [
                            {"index": 0, "message": {"role": "assistant", "content": "42"}, "finish_reason": "stop"}
                        ],
                        "prompt_token_ids": [1, 2],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.mark.parametrize("from_caller", [False, True], ids=["new-trace", "callers-trace"])
def test_the_model_server_is_told_the_calls_span_as_its_parent(gateway_provider, gateway_exporter, from_caller):
    """The span is started by the SDK after the call, but the model server still gets its exact context,
    and the span's times still hold the model server's turn."""
    model_server = _TraceRecordingModelServer()
    threading.Thread(target=model_server.serve_forever, daemon=True).start()
    headers: dict[str, str] = {}
    if from_caller:
        with TracerProvider().get_tracer("agent").start_as_current_span("agent step"):
            TraceContextTextMapPropagator().inject(headers)
        headers["tracestate"] = "vendor=abc,other=1"  # the caller's trace state goes on with its trace
    try:
        with Gateway(f"http://127.0.0.1:{model_server.server_address[1]}/v1", tracer_provider=gateway_provider) as gw:
            assert _ask(gw.base_url, headers) == "42"
    finally:
        model_server.shutdown()
    (span,) = llm_spans(gateway_exporter)
    context = span.get_span_context()
    assert model_server.traceparents == [f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"]
    assert model_server.tracestates == ["vendor=abc,other=1" if from_caller else None]
    if from_caller:
        assert headers["traceparent"].split("-")[1] == f"{context.trace_id:032x}"
    assert span.start_time <= model_server.received_ns[0] <= span.end_time
