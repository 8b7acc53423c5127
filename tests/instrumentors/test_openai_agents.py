"""The Agents SDK instrumentor on a real two-agent app (handoff + tool) over the real OpenAI client
and the local stub model: span tree, attributes, and the per-agent transitions the collector builds."""

from __future__ import annotations

import asyncio
import json

import agents
import pytest
from openai import AsyncOpenAI

import otel_lightning as ol
from examples.openai_agents.agent import build_agents, solve
from otel_lightning import semconv
from otel_lightning_collector import CollectorConfig, CollectorServer
from otel_lightning_instrumentation_openai_agents import OpenAIAgentsInstrumentor
from tests.instrumentors.framework_support import (
    EXAMPLES,
    TASK,
    action_text,
    by_kind,
    run_example_through_worker,
    use_stub_model,
)
from tests.support import rollouts, transitions, wait_for_rollouts


@pytest.fixture(scope="module", autouse=True)
def instrumented():
    agents.set_trace_processors([])  # no export to OpenAI's tracing backend from tests
    instrumentor = OpenAIAgentsInstrumentor()
    instrumentor.instrument()
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture(autouse=True)
def model_server(openai_stub, monkeypatch):
    use_stub_model(monkeypatch, openai_stub, token_ids=True)  # the stub, as vLLM, gives ids only when asked


def test_agents_tools_and_handoffs_become_spans_around_the_llm_calls(memory_exporter):
    with ol.rollout("t1"):
        answer = asyncio.run(solve(TASK))
    assert "42" in answer
    spans = memory_exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    triage, math = by_kind(spans, semconv.SPAN_KIND_AGENT)
    assert (triage.name, math.name) == ("invoke_agent Triage", "invoke_agent Math")
    assert triage.attributes[semconv.AGENT_HANDOFFS] == ("Math",)
    assert math.attributes[semconv.AGENT_TOOLS] == ("calculator",)

    (handoff,) = by_kind(spans, semconv.SPAN_KIND_HANDOFF)
    assert (handoff.attributes[semconv.HANDOFF_FROM], handoff.attributes[semconv.HANDOFF_TO]) == ("Triage", "Math")
    (tool,) = by_kind(spans, semconv.SPAN_KIND_TOOL)
    assert tool.attributes[semconv.GEN_AI_TOOL_NAME] == "calculator"
    assert json.loads(tool.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"expression": "17+25"}
    assert tool.attributes[semconv.GEN_AI_TOOL_CALL_RESULT] == "42"
    assert by_id[tool.parent.span_id] is math

    # One LLM span per model call (ours, from the OpenAI client), inside its agent and named after it.
    llm = by_kind(spans, semconv.SPAN_KIND_LLM)
    assert [s.attributes[semconv.AGENT_NAME] for s in llm] == ["Triage", "Math", "Math"]
    assert [by_id[s.parent.span_id] for s in llm] == [triage, math, math]
    assert all(s.attributes[semconv.ROLLOUT_ID] == llm[0].attributes[semconv.ROLLOUT_ID] for s in spans)


def test_the_collector_builds_per_agent_transitions_with_tool_output_as_state(collector, otlp_export):
    with ol.rollout("t1"):
        asyncio.run(solve(TASK))
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 1)
    (done,) = rollouts(events)
    assert (done.status, done.total_reward) == ("succeeded", 1.0)
    steps = transitions(events)
    assert [t.agent for t in steps] == ["Triage", "Math", "Math"]
    first_math, last_math = steps[1], steps[2]
    assert json.loads(first_math.action_json)["tool_calls"][0]["function"]["name"] == "calculator"
    # The calculator's output is in the next state (the prompt), never in an action.
    tool_messages = [m for m in json.loads(last_math.state_json)["messages"] if m.get("role") == "tool"]
    assert any(m["content"] == "42" for m in tool_messages)
    assert "42" not in action_text(first_math.action_json)
    assert json.loads(first_math.next_state_json) == json.loads(last_math.state_json)
    assert all(len(t.prompt_token_ids) > 0 and len(t.response_token_ids) > 0 for t in steps)
    assert [t.reward for t in steps] == [1.0, 1.0, 1.0]


def test_uninstrument_stops_the_agent_spans(memory_exporter, instrumented):
    instrumented.uninstrument()
    try:
        with ol.rollout("t1"):
            asyncio.run(solve(TASK))
        spans = memory_exporter.get_finished_spans()
        assert by_kind(spans, semconv.SPAN_KIND_AGENT) == [] and by_kind(spans, semconv.SPAN_KIND_TOOL) == []
        assert len(by_kind(spans, semconv.SPAN_KIND_LLM)) == 3  # the OpenAI instrumentor still records calls
    finally:
        instrumented.instrument()


def test_the_collector_can_train_only_some_agents(tmp_path, route_spans):
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", train_agents=("Ma*",))
    with CollectorServer(config) as server:
        processor = route_spans(server.address)
        with ol.rollout("t1"):
            asyncio.run(solve(TASK))
        processor.force_flush()
        events = wait_for_rollouts(server.address, 1)
    steps = transitions(events)
    assert [t.agent for t in steps] == ["Math", "Math"]
    # What the triage agent did is part of the math agent's state, not an action of its own.
    assert "transfer_to_math" in steps[0].state_json
    assert rollouts(events)[0].status == "succeeded"


def test_the_example_runs_unchanged_under_opentelemetry_instrument(collector, otlp_export, openai_stub):
    """`otel-lightning worker -- python examples/openai_agents/agent.py`: entry points do everything."""
    events = run_example_through_worker(EXAMPLES / "openai_agents" / "agent.py", collector, otlp_export, openai_stub)
    (done,) = rollouts(events)
    assert (done.status, done.total_reward) == ("succeeded", 1.0), done
    steps = transitions(events)
    assert [t.agent for t in steps] == ["Triage", "Math", "Math"]


@agents.input_guardrail
def no_secrets(context, agent, given) -> agents.GuardrailFunctionOutput:
    return agents.GuardrailFunctionOutput(output_info=None, tripwire_triggered="password" in str(given))


def triage_with_guardrail() -> agents.Agent:
    triage = build_agents(AsyncOpenAI(max_retries=0))
    return triage.clone(input_guardrails=[no_secrets])


async def streamed(question: str) -> str:
    result = agents.Runner.run_streamed(triage_with_guardrail(), question)
    async for _ in result.stream_events():
        pass
    return str(result.final_output)


@pytest.mark.parametrize("mode", ["sync", "streamed"])
def test_sync_and_streamed_runs_with_a_guardrail(memory_exporter, mode):
    with ol.rollout("t1"):
        if mode == "sync":
            answer = str(agents.Runner.run_sync(triage_with_guardrail(), TASK["question"]).final_output)
        else:
            answer = asyncio.run(streamed(TASK["question"]))
    assert "42" in answer
    spans = memory_exporter.get_finished_spans()
    (guardrail,) = by_kind(spans, semconv.SPAN_KIND_GUARDRAIL)
    assert (guardrail.attributes[semconv.GUARDRAIL_NAME], guardrail.attributes[semconv.GUARDRAIL_TRIGGERED]) == (
        "no_secrets",
        False,
    )
    assert [s.attributes[semconv.AGENT_NAME] for s in by_kind(spans, semconv.SPAN_KIND_LLM)] == [
        "Triage",
        "Math",
        "Math",
    ]
    assert len(by_kind(spans, semconv.SPAN_KIND_TOOL)) == 1


def test_a_tripped_guardrail_is_recorded(memory_exporter):
    with pytest.raises(agents.InputGuardrailTripwireTriggered), ol.rollout("t1"):
        agents.Runner.run_sync(triage_with_guardrail(), "What is my password plus 2?")
    (guardrail,) = by_kind(memory_exporter.get_finished_spans(), semconv.SPAN_KIND_GUARDRAIL)
    assert guardrail.attributes[semconv.GUARDRAIL_TRIGGERED] is True


def test_with_openinferences_instrumentor_too_each_llm_call_is_still_one_llm_span(collector, otlp_export):
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor as OpenInferenceAgents

    upstream = OpenInferenceAgents()
    upstream.instrument()
    try:
        with ol.rollout("t1"):
            asyncio.run(solve(TASK))
    finally:
        upstream.uninstrument()
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 1)
    # OpenInference adds its own spans (its kinds, not ours); the transitions are the same three.
    assert [t.agent for t in transitions(events)] == ["Triage", "Math", "Math"]
    assert rollouts(events)[0].span_count > 9
