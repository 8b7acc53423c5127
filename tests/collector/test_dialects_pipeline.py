"""Third-party instrumentation end to end, as the worker runs an agent: a leased rollout, the model
gateway in front of a vLLM-like model (token ids only when asked), and a plain OpenAI-client agent in
a process of its own whose only instrumentation is another project's (OpenInference, OpenLLMetry's
0.62, the contrib GenAI 2.x with its messages in log records), exporting spans and logs over the real
OTLP exporters under the rollout's W3C context. Each call is one transition with the exact token ids
the upstream returned (the gateway's span, matched to the client's by response id) and the client's
messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

import otel_lightning as ol
from otel_lightning.testing.openai_stub import StubOpenAIServer, _text_of, token_ids
from otel_lightning_collector.task_pool import TaskSpec
from otel_lightning_gateway import Gateway, RolloutRoute
from tests.support import rollouts, transitions, wait_for_rollouts

RECORDER = Path(__file__).with_name("dialect_recorder.py")


def _expected_prompt_ids(body: dict) -> list[int]:
    """What the stub returns as prompt token ids for a chat request (vLLM: the rendered prompt)."""
    return token_ids("\n".join(f"{m.get('role')}: {_text_of(m.get('content'))}" for m in body["messages"]))


@pytest.mark.parametrize("dialect", ["openinference", "openllmetry", "genai"])
def test_third_party_instrumentation_through_the_gateway_trains_with_exact_token_ids(
    dialect: str, collector, otlp_export
) -> None:
    gateway_provider = TracerProvider()
    gateway_provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector.address, insecure=True))
    )
    with StubOpenAIServer(policy_version=None) as stub:
        gateway = Gateway(upstream=stub.base_url, tracer_provider=gateway_provider)
        gateway.start()
        try:
            collector.task_pool.submit([TaskSpec(task_id=f"calc-{dialect}", input_json='"What is 17 * 23?"')])
            lease = collector.task_pool.claim("test-worker", lease_s=120)
            with ol.rollout(task_id=lease.task_id, attempt=lease.attempt, rollout_id=lease.rollout_id):
                context = trace.get_current_span().get_span_context()
                gateway.register_rollout(
                    RolloutRoute(
                        rollout_id=lease.rollout_id, task_id=lease.task_id, attempt=lease.attempt, parent=context
                    )
                )
                carrier: dict[str, str] = {}
                TraceContextTextMapPropagator().inject(carrier)
                env = {**os.environ, "TRACEPARENT": carrier["traceparent"]}
                env.pop("LIGHTNING_REQUEST_TOKEN_IDS", None)
                subprocess.run(
                    [
                        sys.executable,
                        str(RECORDER),
                        dialect,
                        gateway.rollout_base_url(lease.rollout_id),
                        f"otlp:{collector.address}",
                    ],
                    env=env,
                    check=True,
                    timeout=120,
                )
            gateway_provider.force_flush()
            otlp_export.flush()
            collector.task_pool.complete(lease.lease_id, "succeeded")
        finally:
            gateway.stop()
    events = wait_for_rollouts(collector.address, 1, timeout_s=20)
    (completed,) = rollouts(events)
    assert completed.status == "succeeded", completed
    assert completed.steps_without_token_ids == 0 and completed.token_ids_note == ""
    steps = transitions(events)
    assert [t.step for t in steps] == [0, 1]  # one step per call, not one per span
    calls = [body for path, body in stub.received if path.endswith("/chat/completions")]
    assert len(calls) == 2 and all(body.get("return_token_ids") for body in calls)  # the gateway asked
    for step, body in zip(steps, calls, strict=True):
        assert list(step.prompt_token_ids) == _expected_prompt_ids(body)
        assert not step.token_ids_absent
    first, second = steps
    first_action = json.loads(first.action_json)
    call = first_action["tool_calls"][0]
    assert list(first.response_token_ids) == token_ids(
        json.dumps({"name": "calculator", "arguments": call["function"]["arguments"]})
    )
    assert bytes(second.response_token_ids).decode() == "The answer is 391."
    assert json.loads(first.state_json)["messages"] == [
        {"role": "system", "content": "You are a calculator."},
        {"role": "user", "content": "What is 17 * 23?"},
    ]
    assert [m["role"] for m in json.loads(second.state_json)["messages"]] == ["system", "user", "assistant", "tool"]
    assert json.loads(second.action_json)["content"] == "The answer is 391."
