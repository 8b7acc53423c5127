"""The LangChain instrumentor on a real LangChain 1.x app (a supervisor agent with a math subagent
called as a tool), over the real OpenAI client and the local stub model, and over LangChain's own
fake chat model: span tree, attributes, and the per-agent transitions the collector builds."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_openai import ChatOpenAI
from openinference.instrumentation.langchain import LangChainInstrumentor as OpenInferenceLangChain

import otel_lightning as ol
from examples.langchain_agent.agent import build_agent, calculator, solve
from otel_lightning import semconv
from otel_lightning_instrumentation_langchain import LangChainInstrumentor
from tests.instrumentors.framework_support import (
    EXAMPLES,
    TASK,
    action_text,
    by_kind,
    run_example_through_worker,
    use_stub_model,
)
from tests.support import remove_openllmetry_openai_wrappers, rollouts, transitions, wait_for_rollouts

AGENTS_IN_ORDER = ["supervisor", "math", "math", "supervisor"]


@pytest.fixture(scope="module", autouse=True)
def instrumented():
    instrumentor = LangChainInstrumentor()
    instrumentor.instrument()
    yield instrumentor
    instrumentor.uninstrument()


@pytest.fixture(autouse=True)
def model_server(openai_stub, monkeypatch):
    use_stub_model(monkeypatch, openai_stub, token_ids=True)


class ScriptedChatModel(GenericFakeChatModel):
    """LangChain's fake chat model, able to stand in for a tool-calling model."""

    def bind_tools(self, tools, **kwargs):
        return self


def scripted_model() -> ScriptedChatModel:
    replies = [
        AIMessage("", tool_calls=[{"name": "calculator", "args": {"expression": "17+25"}, "id": "call-1"}]),
        AIMessage("The answer is 42."),
    ]
    return ScriptedChatModel(messages=iter(replies))


def test_agents_tools_and_model_calls_become_one_span_each_with_token_ids(memory_exporter):
    with ol.rollout("t1"):
        answer = solve(TASK)
    assert answer == "The answer is 42."
    spans = memory_exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}

    def ancestors(span):
        while span.parent is not None and span.parent.span_id in by_id:
            span = by_id[span.parent.span_id]
            yield span

    supervisor, math = by_kind(spans, semconv.SPAN_KIND_AGENT)
    assert [(a.name, a.attributes[semconv.GEN_AI_AGENT_NAME]) for a in (supervisor, math)] == [
        ("supervisor", "supervisor"),
        ("math", "math"),
    ]
    handoff, calc = by_kind(spans, semconv.SPAN_KIND_TOOL)
    assert (handoff.attributes[semconv.GEN_AI_TOOL_NAME], calc.attributes[semconv.GEN_AI_TOOL_NAME]) == (
        "transfer_to_math",
        "calculator",
    )
    assert json.loads(calc.attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS]) == {"expression": "17+25"}
    assert calc.attributes[semconv.GEN_AI_TOOL_CALL_RESULT] == "42"
    assert handoff.attributes[semconv.GEN_AI_TOOL_CALL_RESULT] == "The answer is 42."
    assert math in ancestors(calc) and handoff in ancestors(math)

    # One LLM span per model call: the OpenAI client's call joined LangChain's chat model span.
    llm = by_kind(spans, semconv.SPAN_KIND_LLM)
    assert [s.attributes[semconv.AGENT_NAME] for s in llm] == AGENTS_IN_ORDER
    assert all(s.name == "ChatOpenAI" and len(s.attributes[semconv.RESPONSE_TOKEN_IDS]) > 0 for s in llm)
    assert [next(a for a in ancestors(s) if a in (supervisor, math)) for s in llm] == [
        supervisor,
        math,
        math,
        supervisor,
    ]
    assert not [s for s in spans if s.name.startswith("chat ")]  # no second span from the OpenAI instrumentor
    rollout_id = llm[0].attributes[semconv.ROLLOUT_ID]
    assert all(s.attributes.get(semconv.ROLLOUT_ID) == rollout_id for s in spans)


def test_the_collector_builds_per_agent_transitions_with_tool_output_as_state(collector, otlp_export):
    with ol.rollout("t1"):
        solve(TASK)
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 1)
    (done,) = rollouts(events)
    assert (done.status, done.total_reward) == ("succeeded", 1.0)
    steps = transitions(events)
    assert [t.agent for t in steps] == AGENTS_IN_ORDER
    first_math, last_math = steps[1], steps[2]
    assert json.loads(first_math.action_json)["tool_calls"][0]["function"]["name"] == "calculator"
    tool_messages = [m for m in json.loads(last_math.state_json)["messages"] if m.get("role") == "tool"]
    assert [m["content"] for m in tool_messages] == ["42"]
    assert "42" not in action_text(first_math.action_json)
    assert json.loads(first_math.next_state_json) == json.loads(last_math.state_json)
    # The supervisor's second step sees its subagent's answer as the tool result, in state.
    assert "The answer is 42." in steps[3].state_json and steps[0].next_state_json == steps[3].state_json
    assert all(len(t.prompt_token_ids) > 0 and len(t.response_token_ids) > 0 for t in steps)
    assert [t.reward for t in steps] == [1.0] * 4


def test_a_framework_model_without_a_client_is_recorded_by_langchain_alone(collector, otlp_export):
    agent = create_agent(scripted_model(), tools=[calculator], name="math")
    with ol.rollout("t1"):
        result = agent.invoke({"messages": [{"role": "user", "content": TASK["question"]}]})
    assert result["messages"][-1].content == "The answer is 42."
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 1)
    first, last = transitions(events)
    assert (first.agent, last.agent) == ("math", "math")
    assert json.loads(first.state_json)["messages"] == [{"role": "user", "content": TASK["question"]}]
    call = json.loads(first.action_json)["tool_calls"][0]
    assert call["function"]["name"] == "calculator"
    assert json.loads(call["function"]["arguments"]) == {"expression": "17+25"}
    tool_result = json.loads(last.state_json)["messages"][-1]
    assert (tool_result["role"], tool_result["tool_call_id"], tool_result["content"]) == ("tool", "call-1", "42")
    assert json.loads(last.action_json)["content"] == "The answer is 42."
    assert (list(first.response_token_ids), rollouts(events)[0].status) == ([], "succeeded")  # no client, no ids


def async_model() -> ChatOpenAI:
    # ChatOpenAI shares one async HTTP client per process; each asyncio.run here needs its own.
    return ChatOpenAI(model="policy", max_retries=0, http_async_client=httpx.AsyncClient())


async def streamed_agent() -> str:
    agent = build_agent(async_model())
    chunks = []
    async for chunk, _ in agent.astream(
        {"messages": [{"role": "user", "content": TASK["question"]}]}, stream_mode="messages"
    ):
        chunks.append(chunk)
    return "".join(str(c.content) for c in chunks)


@pytest.mark.parametrize("mode", ["async", "streamed graph"])
def test_async_and_streamed_agents(memory_exporter, mode):
    with ol.rollout("t1"):
        if mode == "async":
            asyncio.run(build_agent(async_model()).ainvoke({"messages": [{"role": "user", "content": "17+25?"}]}))
        else:
            assert "The answer is 42." in asyncio.run(streamed_agent())
    llm = by_kind(memory_exporter.get_finished_spans(), semconv.SPAN_KIND_LLM)
    assert [s.attributes[semconv.AGENT_NAME] for s in llm] == AGENTS_IN_ORDER
    assert all(len(s.attributes[semconv.RESPONSE_TOKEN_IDS]) > 0 for s in llm)


def test_model_stream_and_astream_join_the_client_call(memory_exporter):
    model = async_model()
    with ol.rollout("t1"):
        streamed = "".join(str(chunk.content) for chunk in model.stream("What is 2+3?"))

        async def consume():
            return "".join([str(chunk.content) async for chunk in model.astream("What is 4+4?")])

        astreamed = asyncio.run(consume())
    assert (streamed, astreamed) == ("The answer is 5.", "The answer is 8.")
    spans = memory_exporter.get_finished_spans()
    llm = by_kind(spans, semconv.SPAN_KIND_LLM)
    assert [s.name for s in llm] == ["ChatOpenAI", "ChatOpenAI"]
    assert all(s.attributes[semconv.LLM_STREAMING] and s.attributes[semconv.RESPONSE_TOKEN_IDS] for s in llm)
    assert json.loads(llm[1].attributes[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["content"] == "The answer is 8."


def test_uninstrument_leaves_only_the_openai_instrumentors_spans(memory_exporter, instrumented):
    instrumented.uninstrument()
    try:
        with ol.rollout("t1"):
            solve(TASK)
        spans = memory_exporter.get_finished_spans()
        assert by_kind(spans, semconv.SPAN_KIND_AGENT) == [] and by_kind(spans, semconv.SPAN_KIND_TOOL) == []
        assert not [s for s in spans if s.instrumentation_scope.name.startswith("openinference")]
        assert [s.name for s in by_kind(spans, semconv.SPAN_KIND_LLM)] == ["chat policy"] * 4
    finally:
        instrumented.instrument()


def test_with_openinference_instrumented_first_there_is_one_tracer(memory_exporter, instrumented):
    instrumented.uninstrument()
    upstream = OpenInferenceLangChain()
    upstream.instrument()  # as `opentelemetry-instrument` may do, before ours
    instrumented.instrument()
    try:
        with ol.rollout("t1"):
            solve(TASK)
    finally:
        instrumented.uninstrument()
        assert upstream.is_instrumented_by_opentelemetry  # ours did not take the user's away
        upstream.uninstrument()
        instrumented.instrument()
    spans = memory_exporter.get_finished_spans()
    assert [s.name for s in by_kind(spans, semconv.SPAN_KIND_LLM)] == ["ChatOpenAI"] * 4
    assert len([s for s in spans if s.name == "calculator"]) == 1


def test_with_openllmetrys_openai_instrumentor_too_each_call_is_one_transition(collector, otlp_export):
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor as OpenLLMetryOpenAI

    upstream = OpenLLMetryOpenAI()
    upstream.instrument()
    try:
        with ol.rollout("t1"):
            solve(TASK)
    finally:
        upstream.uninstrument()
        remove_openllmetry_openai_wrappers()
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 1)
    steps = transitions(events)
    # OpenLLMetry's span sits between LangChain's and the wire: the innermost LLM span is the step.
    assert [t.agent for t in steps] == AGENTS_IN_ORDER
    assert all(t.response_token_ids for t in steps)


def test_the_example_runs_unchanged_under_opentelemetry_instrument(collector, otlp_export, openai_stub):
    """`otel-lightning worker -- python examples/langchain_agent/agent.py`: entry points do everything."""
    events = run_example_through_worker(EXAMPLES / "langchain_agent" / "agent.py", collector, otlp_export, openai_stub)
    (done,) = rollouts(events)
    assert (done.status, done.total_reward) == ("succeeded", 1.0), done
    steps = transitions(events)
    assert [t.agent for t in steps] == AGENTS_IN_ORDER
    assert all(t.response_token_ids for t in steps)


def test_a_langgraph_graph_splits_transitions_by_node(collector, otlp_export):
    """A hand-built LangGraph graph: each node that calls a model is an agent, named by the node."""
    from langgraph.graph import END, START, MessagesState, StateGraph

    planner_model = ScriptedChatModel(messages=iter([AIMessage("Plan: add the numbers.")]))
    writer_model = ScriptedChatModel(messages=iter([AIMessage("The answer is 42.")]))
    graph = StateGraph(MessagesState)
    graph.add_node("planner", lambda state: {"messages": [planner_model.invoke(state["messages"])]})
    graph.add_node("writer", lambda state: {"messages": [writer_model.invoke(state["messages"])]})
    graph.add_edge(START, "planner")
    graph.add_edge("planner", "writer")
    graph.add_edge("writer", END)
    with ol.rollout("t1"):
        graph.compile().invoke({"messages": [{"role": "user", "content": TASK["question"]}]})
    otlp_export.flush()
    planner, writer = transitions(wait_for_rollouts(collector.address, 1))
    assert (planner.agent, writer.agent) == ("planner", "writer")
    # What the planner said is the writer's state, not an action of the writer.
    assert json.loads(writer.state_json)["messages"][-1]["content"] == "Plan: add the numbers."
    assert json.loads(writer.action_json)["content"] == "The answer is 42."
