"""The AutoGen instrumentor on a real AutoGen 0.7 team (a Swarm: triage hands off to a math agent
with a calculator), over AutoGen's OpenAI client and the local stub model, and over AutoGen's own
replay client: span tree, attributes, and the per-agent transitions the collector builds."""

from __future__ import annotations

import asyncio
import json

import pytest
from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.messages import TextMessage
from autogen_core import FunctionCall
from autogen_core.models import CreateResult, RequestUsage
from autogen_ext.models.replay import ReplayChatCompletionClient

import otel_lightning as ol
from examples.autogen_team.agent import build_team, calculator, default_model, solve
from otel_lightning import semconv
from otel_lightning_instrumentation_autogen import AutoGenInstrumentor
from tests.instrumentors.framework_support import (
    EXAMPLES,
    TASK,
    action_text,
    by_kind,
    run_example_through_worker,
    use_stub_model,
)
from tests.support import rollouts, transitions, wait_for_rollouts

AGENTS_IN_ORDER = ["triage", "math", "math"]


@pytest.fixture(scope="module", autouse=True)
def instrumented():
    instrumentor = AutoGenInstrumentor()
    instrumentor.instrument()
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture(autouse=True)
def model_server(openai_stub, monkeypatch):
    use_stub_model(monkeypatch, openai_stub, token_ids=True)


def test_agent_turns_model_calls_tools_and_the_handoff_become_spans(memory_exporter):
    with ol.rollout("t1"):
        answer = asyncio.run(solve(TASK))
    assert answer == "The answer is 42."
    spans = memory_exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    triage, math = by_kind(spans, semconv.SPAN_KIND_AGENT)
    assert [(a.name, a.attributes[semconv.AGENT_NAME]) for a in (triage, math)] == [
        ("invoke_agent triage", "triage"),
        ("invoke_agent math", "math"),
    ]
    handoff_tool, calc = by_kind(spans, semconv.SPAN_KIND_TOOL)
    assert (handoff_tool.name, calc.name) == ("execute_tool transfer_to_math", "execute_tool calculator")
    assert json.loads(calc.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"expression": "17+25"}
    assert calc.attributes[semconv.GEN_AI_TOOL_CALL_RESULT] == "42"
    assert by_id[calc.parent.span_id] is math and calc.attributes[semconv.AGENT_NAME] == "math"
    (handoff,) = by_kind(spans, semconv.SPAN_KIND_HANDOFF)
    assert (handoff.attributes[semconv.HANDOFF_FROM], handoff.attributes[semconv.HANDOFF_TO]) == ("triage", "math")

    # One LLM span per model call, inside its agent's turn; AutoGen's OpenAI client call joined it.
    llm = by_kind(spans, semconv.SPAN_KIND_LLM)
    assert [s.attributes[semconv.AGENT_NAME] for s in llm] == AGENTS_IN_ORDER
    assert [by_id[s.parent.span_id] for s in llm] == [triage, math, math]
    assert all(len(s.attributes[semconv.RESPONSE_TOKEN_IDS]) > 0 for s in llm)
    assert not [s for s in spans if s.name == "chat policy"]  # no second span from the OpenAI instrumentor
    rollout_id = llm[0].attributes[semconv.ROLLOUT_ID]
    assert all(s.attributes.get(semconv.ROLLOUT_ID) == rollout_id for s in [*llm, triage, math, calc, handoff])


def test_the_collector_builds_per_agent_transitions_with_tool_output_as_state(collector, otlp_export):
    with ol.rollout("t1"):
        asyncio.run(solve(TASK))
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 1)
    (done,) = rollouts(events)
    assert (done.status, done.total_reward) == ("succeeded", 1.0)
    steps = transitions(events)
    assert [t.agent for t in steps] == AGENTS_IN_ORDER
    handoff_call = json.loads(steps[0].action_json)["tool_calls"][0]["function"]
    assert handoff_call["name"] == "transfer_to_math"
    calc_call = json.loads(steps[1].action_json)["tool_calls"][0]["function"]
    assert (calc_call["name"], json.loads(calc_call["arguments"])) == ("calculator", {"expression": "17+25"})
    tool_messages = [m for m in json.loads(steps[2].state_json)["messages"] if m.get("role") == "tool"]
    assert [m["content"] for m in tool_messages][-1] == "42"
    assert "42" not in action_text(steps[1].action_json)
    assert json.loads(steps[2].action_json)["content"] == "The answer is 42."
    assert steps[1].next_state_json == steps[2].state_json and steps[0].done and steps[2].done
    assert all(t.prompt_token_ids and t.response_token_ids for t in steps)
    assert [t.reward for t in steps] == [1.0] * 3


def test_a_replay_model_is_recorded_by_autogen_alone(collector, otlp_export):
    call = FunctionCall(id="call-1", name="calculator", arguments='{"expression": "17+25"}')
    usage = RequestUsage(prompt_tokens=0, completion_tokens=0)
    replay = ReplayChatCompletionClient(
        [
            CreateResult(finish_reason="function_calls", content=[call], usage=usage, cached=False),
            CreateResult(finish_reason="stop", content="The answer is 42.", usage=usage, cached=False),
        ],
        model_info=default_model().model_info,
    )
    agent = AssistantAgent("math", replay, tools=[calculator], reflect_on_tool_use=True)
    with ol.rollout("t1"):
        result = asyncio.run(agent.run(task=TASK["question"]))
    assert result.messages[-1].content == "The answer is 42."
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 1)
    first, last = transitions(events)
    assert (first.agent, last.agent, rollouts(events)[0].status) == ("math", "math", "succeeded")
    state = json.loads(first.state_json)
    assert state["messages"][-1] == {"role": "user", "content": TASK["question"], "name": "user"}
    assert [tool["function"]["name"] for tool in state["tools"]] == ["calculator"]
    assert json.loads(first.action_json)["tool_calls"][0]["function"]["arguments"] == '{"expression": "17+25"}'
    assert json.loads(last.state_json)["messages"][-1] == {"role": "tool", "tool_call_id": "call-1", "content": "42"}
    assert json.loads(last.action_json) == {"role": "assistant", "content": "The answer is 42."}


async def streamed_team() -> list[str]:
    model = default_model()
    try:
        return [
            m.content
            async for m in build_team(model, stream=True).run_stream(task=TASK["question"])
            if isinstance(m, TextMessage)
        ]
    finally:
        await model.close()


def test_streamed_model_calls_and_a_streamed_team_run(memory_exporter):
    with ol.rollout("t1"):
        texts = asyncio.run(streamed_team())
    assert texts[-1] == "The answer is 42."
    llm = by_kind(memory_exporter.get_finished_spans(), semconv.SPAN_KIND_LLM)
    assert [s.attributes[semconv.AGENT_NAME] for s in llm] == AGENTS_IN_ORDER
    assert all(s.attributes[semconv.LLM_STREAMING] and s.attributes[semconv.RESPONSE_TOKEN_IDS] for s in llm)


def test_uninstrument_leaves_autogens_own_spans_unmarked(memory_exporter, instrumented):
    instrumented.uninstrument()
    try:
        with ol.rollout("t1"):
            asyncio.run(solve(TASK))
        spans = memory_exporter.get_finished_spans()
        assert by_kind(spans, semconv.SPAN_KIND_AGENT) == [] and by_kind(spans, semconv.SPAN_KIND_TOOL) == []
        assert len([s for s in spans if s.name.startswith("invoke_agent")]) == 2  # AutoGen's own, as they were
        assert [s.name for s in by_kind(spans, semconv.SPAN_KIND_LLM)] == ["chat policy"] * 3
    finally:
        instrumented.instrument()


def test_with_openinferences_instrumentor_too_each_call_is_one_transition(collector, otlp_export):
    from openinference.instrumentation.autogen_agentchat import AutogenAgentChatInstrumentor

    upstream = AutogenAgentChatInstrumentor()
    upstream.instrument()
    try:
        with ol.rollout("t1"):
            assert asyncio.run(solve(TASK)) == "The answer is 42."
    finally:
        upstream.uninstrument()
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 1)
    steps = transitions(events)
    assert [t.agent for t in steps] == AGENTS_IN_ORDER
    assert all(t.response_token_ids for t in steps)
    assert rollouts(events)[0].span_count > 20  # OpenInference's spans came too


def test_the_example_runs_unchanged_under_opentelemetry_instrument(collector, otlp_export, openai_stub):
    """`otel-lightning worker -- python examples/autogen_team/agent.py`: entry points do everything."""
    events = run_example_through_worker(EXAMPLES / "autogen_team" / "agent.py", collector, otlp_export, openai_stub)
    (done,) = rollouts(events)
    assert (done.status, done.total_reward) == ("succeeded", 1.0), done
    steps = transitions(events)
    assert [t.agent for t in steps] == AGENTS_IN_ORDER
    assert all(t.response_token_ids for t in steps)
