"""Span dialects read spans recorded live from each real instrumentor running alone.

Each instrumentor runs the same two-call calculator conversation against the local stub model in a
process of its own (tests/collector/dialect_recorder.py); every dialect must give the same
canonical steps: the messages in OpenAI form, the tool, the response id, and token ids only where
the span carries them (ours).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_lightning import semconv
from otel_lightning.testing.openai_stub import StubOpenAIServer
from otel_lightning_collector.dialects import LLM, TOOL, MessageFormError, SpanView, read_span
from otel_lightning_collector.dialects.openinference import agent_from_metadata
from otel_lightning_collector.spans import any_value, attributes, span_view

RECORDER = Path(__file__).with_name("dialect_recorder.py")
DIALECTS = ["ours", "openinference", "openllmetry", "genai", "openinference-langchain", "openinference-pydantic-ai"]
CALCULATOR_TOOL = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}


def _spans(path: Path) -> list[Span]:
    request = ExportTraceServiceRequest.FromString(path.read_bytes())
    return [span for resource in request.resource_spans for scope in resource.scope_spans for span in scope.spans]


def _logs_by_span(path: Path) -> dict[bytes, list]:
    request = ExportLogsServiceRequest.FromString(path.read_bytes())
    found: dict[bytes, list] = {}
    for resource in request.resource_logs:
        for scope in resource.scope_logs:
            for record in scope.log_records:
                found.setdefault(record.span_id, []).append(
                    (record.event_name, attributes(record.attributes), any_value(record.body))
                )
    return found


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """Per dialect: the canonical steps of its recorded spans, in start order."""
    folder = tmp_path_factory.mktemp("dialects")
    steps: dict[str, list] = {}
    with StubOpenAIServer(token_ids="always") as stub:  # ids on every answer: the dialects are what differs
        for dialect in DIALECTS:
            out = folder / f"{dialect}.otlp"
            subprocess.run([sys.executable, str(RECORDER), dialect, stub.base_url, str(out)], check=True, timeout=120)
            logs = _logs_by_span(Path(f"{out}.logs"))
            spans = sorted(_spans(out), key=lambda span: span.start_time_unix_nano)
            steps[dialect] = [
                (span, step)
                for span in spans
                if (step := read_span(span_view(span, logs.get(span.span_id)))) is not None
            ]
    return steps


def _llm_steps(recorded: dict[str, list], dialect: str) -> list:
    return [step for _, step in recorded[dialect] if step.kind == LLM]


@pytest.mark.parametrize("dialect", DIALECTS)
def test_each_dialect_gives_the_conversation_in_openai_form(recorded: dict[str, list], dialect: str) -> None:
    first, second = _llm_steps(recorded, dialect)
    assert [m["role"] for m in first.input_messages] == ["system", "user"]
    assert first.input_messages[1]["content"] == "What is 17 * 23?"
    (call,) = first.output_messages[0]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "calculator"
    assert json.loads(call["function"]["arguments"]) == {"expression": "17 * 23"}
    assert call["id"].startswith("call_")
    assert [m["role"] for m in second.input_messages] == ["system", "user", "assistant", "tool"]
    assert second.input_messages[2]["tool_calls"][0]["id"] == call["id"]
    assert second.input_messages[3] == {"role": "tool", "tool_call_id": call["id"], "content": "391"}
    assert second.output_messages[0]["content"] == "The answer is 391."
    assert second.output_messages[0]["role"] == "assistant"
    assert first.model == "stub"
    if dialect != "genai":  # the contrib instrumentor 2.x records no tool definitions
        (tool,) = first.tools
        assert tool["type"] == "function" and tool["function"]["name"] == "calculator"
        assert tool["function"]["parameters"]["properties"] == CALCULATOR_TOOL["function"]["parameters"]["properties"]
    if dialect != "openinference-langchain":  # LangChain's run has no response id
        assert first.response_id.startswith("chatcmpl-") and first.response_id != second.response_id


@pytest.mark.parametrize("dialect", DIALECTS)
def test_only_our_spans_carry_token_ids(recorded: dict[str, list], dialect: str) -> None:
    for step in _llm_steps(recorded, dialect):
        assert step.has_token_ids == (dialect == "ours")
    if dialect == "ours":
        first = _llm_steps(recorded, dialect)[0]
        assert all(type(i) is int for i in first.prompt_token_ids + first.response_token_ids)


def test_tool_and_agent_steps(recorded: dict[str, list]) -> None:
    kinds = [step.kind for _, step in recorded["openinference-pydantic-ai"]]
    assert kinds == ["agent", "llm", "tool", "llm"]
    assert {step.agent for _, step in recorded["openinference-pydantic-ai"]} == {"calc_agent"}
    assert [step.kind for _, step in recorded["openinference-langchain"]] == [LLM, TOOL, LLM]


def _sdk_span(set_attributes: dict, events: list[tuple[str, dict]] = (), name: str = "chat stub") -> Span:
    """A span made by the real SDK and encoded by the real OTLP encoder."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("test").start_as_current_span(name) as span:
        span.set_attributes(set_attributes)
        for event_name, event_attributes in events:
            span.add_event(event_name, event_attributes)
    request = encode_spans(exporter.get_finished_spans())
    return request.resource_spans[0].scope_spans[0].spans[0]


def test_structured_attribute_values_read_like_json_strings() -> None:
    inputs = [{"role": "user", "parts": [{"type": "text", "content": "What is 2 + 3?"}]}]
    outputs = [
        {
            "role": "assistant",
            "parts": [{"type": "tool_call", "id": "c1", "name": "calculator", "arguments": {"expression": "2 + 3"}}],
            "finish_reason": "tool_call",
        }
    ]
    common = {semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_REQUEST_MODEL: "stub"}
    structured = read_span(
        span_view(_sdk_span({**common, "gen_ai.input.messages": inputs, "gen_ai.output.messages": outputs}))
    )
    as_json = read_span(
        span_view(
            _sdk_span(
                {**common, "gen_ai.input.messages": json.dumps(inputs), "gen_ai.output.messages": json.dumps(outputs)}
            )
        )
    )
    assert structured.input_messages == as_json.input_messages == [{"role": "user", "content": "What is 2 + 3?"}]
    assert structured.output_messages == as_json.output_messages
    (call,) = structured.output_messages[0]["tool_calls"]
    assert call == {
        "id": "c1",
        "type": "function",
        "function": {"name": "calculator", "arguments": '{"expression":"2 + 3"}'},
    }


def test_mixed_forms_on_one_span() -> None:
    """OpenLLMetry wrapping ours: inputs in OpenAI form, outputs in parts form; one shape out."""
    span = _sdk_span(
        {
            semconv.SPAN_KIND: semconv.SPAN_KIND_LLM,
            semconv.GEN_AI_INPUT_MESSAGES: json.dumps([{"role": "user", "content": "hi"}]),
            semconv.GEN_AI_OUTPUT_MESSAGES: json.dumps(
                [{"role": "assistant", "parts": [{"type": "text", "content": "hello"}], "finish_reason": "stop"}]
            ),
        }
    )
    step = read_span(span_view(span))
    assert step.dialect == "ours"
    assert step.output_messages == [{"role": "assistant", "content": "hello", "finish_reason": "stop"}]


def test_deprecated_openllmetry_flattened_prompts() -> None:
    span = _sdk_span(
        {
            "llm.request.type": "chat",
            "traceloop.workflow.name": "calc",
            "gen_ai.request.model": "stub",
            "gen_ai.prompt.0.role": "user",
            "gen_ai.prompt.0.content": "What is 2 + 3?",
            "gen_ai.completion.0.role": "assistant",
            "gen_ai.completion.0.finish_reason": "tool_calls",
            "gen_ai.completion.0.tool_calls.0.id": "c1",
            "gen_ai.completion.0.tool_calls.0.name": "calculator",
            "gen_ai.completion.0.tool_calls.0.arguments": '{"expression": "2 + 3"}',
            "llm.request.functions.0.name": "calculator",
            "llm.request.functions.0.parameters": json.dumps(CALCULATOR_TOOL["function"]["parameters"]),
        },
        name="openai.chat",
    )
    step = read_span(span_view(span))
    assert step.kind == LLM and step.dialect == "openllmetry"
    assert step.input_messages == [{"role": "user", "content": "What is 2 + 3?"}]
    assert step.output_messages[0]["tool_calls"][0]["function"] == {
        "name": "calculator",
        "arguments": '{"expression": "2 + 3"}',
    }
    assert step.output_messages[0]["finish_reason"] == "tool_calls"
    assert step.tools[0]["function"]["name"] == "calculator"


def test_deprecated_genai_span_events_and_prompt_json() -> None:
    span = _sdk_span(
        {semconv.GEN_AI_OPERATION_NAME: "chat"},
        events=[
            ("gen_ai.user.message", {"content": "What is 2 + 3?"}),
            ("gen_ai.choice", {"index": 0, "finish_reason": "stop"}),
        ],
    )
    step = read_span(span_view(span))
    assert step.input_messages == [{"role": "user", "content": "What is 2 + 3?"}]
    assert step.output_messages == [{"role": "assistant", "content": None, "finish_reason": "stop"}]
    old = _sdk_span(
        {},
        events=[
            ("gen_ai.content.prompt", {"gen_ai.prompt": json.dumps([{"role": "user", "content": "hi"}])}),
            ("gen_ai.content.completion", {"gen_ai.completion": json.dumps([{"role": "assistant", "content": "yo"}])}),
        ],
        name="chat gpt",
    )
    step = read_span(span_view(old))
    assert step.input_messages == [{"role": "user", "content": "hi"}]
    assert step.output_messages == [{"role": "assistant", "content": "yo"}]


@pytest.mark.parametrize(
    "messages",
    [
        "{not json",
        json.dumps({"role": "user", "parts": "oops"}),
        json.dumps([1, 2]),
        json.dumps([{"role": "assistant", "tool_calls": 3}]),
    ],
)
def test_unreadable_messages_raise_a_message_form_error(messages: str) -> None:
    span = _sdk_span({semconv.GEN_AI_OPERATION_NAME: "chat", semconv.GEN_AI_INPUT_MESSAGES: messages})
    with pytest.raises(MessageFormError):
        read_span(span_view(span))


def test_unknown_spans_are_no_step() -> None:
    assert read_span(SpanView("GET /health", {"http.method": "GET"})) is None
    assert read_span(SpanView("chain", {"openinference.span.kind": "CHAIN"})) is None


def test_langgraph_subgraph_agents_get_their_own_names() -> None:
    inner = {"langgraph_node": "agent", "langgraph_checkpoint_ns": "math_expert:1f0|agent:2a9"}
    assert agent_from_metadata(json.dumps(inner)) == "math_expert"
    assert agent_from_metadata({"langgraph_node": "agent", "langgraph_checkpoint_ns": "agent:2a9"}) == "agent"
    assert agent_from_metadata({**inner, "lc_agent_name": "researcher"}) == "researcher"
    assert agent_from_metadata("not json") is None


def test_our_langgraph_subgraph_agents_get_their_own_names(tmp_path: Path) -> None:
    """create_react_agent(name="math_expert") as a graph node: its turns run in its inner node `agent`."""
    out = tmp_path / "langgraph.otlp"
    with StubOpenAIServer() as stub:
        subprocess.run(
            [sys.executable, str(RECORDER), "ours-langgraph", stub.base_url, str(out)], check=True, timeout=120
        )
    steps = [step for span in _spans(out) if (step := read_span(span_view(span))) is not None and step.kind == LLM]
    assert len(steps) >= 2
    assert {step.agent for step in steps} == {"math_expert"}
