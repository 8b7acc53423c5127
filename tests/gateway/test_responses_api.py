"""The Responses API through the gateway, served by the upstream's chat completions: function tools,
their outputs, multi-turn input and the typed streaming events, read by the real openai client and the
real Agents SDK (its default model, OpenAIResponsesModel), with the exact token ids on every span."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from agents import Agent, OpenAIResponsesModel, RunConfig, Runner, function_tool

from otel_lightning import semconv
from otel_lightning.testing import arithmetic
from otel_lightning_gateway import Gateway
from otel_lightning_gateway.responses_translation import TranslationError, chat_request
from tests.gateway.support import CALCULATOR, llm_spans, upstream_ids

RESPONSES_CALCULATOR = {"type": "function", "strict": False, **CALCULATOR["function"]}


def _chat_requests(stub, count: int) -> list[dict]:
    bodies = [body for path, body in list(stub.received) if path == "/v1/chat/completions"]
    return bodies[-count:]


def _assert_exact_ids(spans, stub) -> None:
    """Each span holds the ids the stub returned for the request the gateway sent, id for id."""
    bodies = _chat_requests(stub, len(spans))
    for span, body in zip(spans, bodies, strict=True):
        prompt_ids, response_ids = upstream_ids(body)
        assert list(span.attributes[semconv.PROMPT_TOKEN_IDS]) == prompt_ids
        assert list(span.attributes[semconv.RESPONSE_TOKEN_IDS]) == response_ids
        assert span.attributes[semconv.LLM_API] == "responses"


def test_the_request_translates_one_to_one():
    body = {
        "model": "m",
        "instructions": "be brief",
        "input": [
            {"role": "developer", "content": "use tools"},
            {"role": "user", "content": [{"type": "input_text", "text": "What is 6*7?"}]},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me see."}]},
            {"type": "function_call", "call_id": "call_1", "name": "calculator", "arguments": '{"expression":"6*7"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "42"},
        ],
        "tools": [RESPONSES_CALCULATOR],
        "tool_choice": {"type": "function", "name": "calculator"},
        "temperature": 0.5,
        "top_p": 0.9,
        "max_output_tokens": 64,
        "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}},
        "store": False,
        "include": [],
    }
    assert chat_request(body) == {
        "model": "m",
        "temperature": 0.5,
        "top_p": 0.9,
        "parallel_tool_calls": False,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "system", "content": "use tools"},
            {"role": "user", "content": "What is 6*7?"},
            {
                "role": "assistant",
                "content": "Let me see.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "calculator", "arguments": '{"expression":"6*7"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "42"},
        ],
        "max_tokens": 64,
        "tools": [{"type": "function", "function": {"strict": False, **CALCULATOR["function"]}}],
        "tool_choice": {"type": "function", "function": {"name": "calculator"}},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
    }
    with pytest.raises(TranslationError, match="item_reference"):
        chat_request({"model": "m", "input": [{"type": "item_reference", "id": "x"}]})


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_function_tools_and_their_outputs_over_two_turns(gateway, gateway_exporter, vllm_stub, stream):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    question = [{"role": "user", "content": "What is 6*7?"}]

    def respond(given: list) -> openai.types.responses.Response:
        if not stream:
            return client.responses.create(model="m", input=given, tools=[RESPONSES_CALCULATOR])
        with client.responses.stream(model="m", input=given, tools=[RESPONSES_CALCULATOR]) as events:
            kinds = [event.type for event in events]
            final = events.get_final_response()
        assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
        if final.output[0].type == "function_call":
            assert "response.function_call_arguments.delta" in kinds
            assert "response.function_call_arguments.done" in kinds
        return final

    first = respond(question)
    (call,) = first.output
    assert (call.type, call.name, json.loads(call.arguments)) == ("function_call", "calculator", {"expression": "6*7"})
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "42"}
    second = respond([*question, call.model_dump(exclude_none=True), output])
    assert second.output_text == "The answer is 42."
    sent = _chat_requests(vllm_stub, 1)[0]
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.call_id, "content": "42"}
    _assert_exact_ids(llm_spans(gateway_exporter, 2), vllm_stub)


def _agent(gateway) -> Agent:
    model = OpenAIResponsesModel(model="m", openai_client=openai.AsyncOpenAI(base_url=gateway.base_url, api_key="x"))
    calculator = function_tool(arithmetic.calculator)
    return Agent(name="Math", instructions="Answer arithmetic with the calculator.", tools=[calculator], model=model)


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_the_agents_sdk_default_model_gives_exact_token_ids(gateway, gateway_exporter, vllm_stub, streamed):
    config = RunConfig(tracing_disabled=True)

    async def run() -> str:
        if not streamed:
            return (await Runner.run(_agent(gateway), "What is 17+25?", run_config=config)).final_output
        result = Runner.run_streamed(_agent(gateway), "What is 17+25?", run_config=config)
        kinds = [event.type async for event in result.stream_events()]
        assert "raw_response_event" in kinds
        return result.final_output

    assert asyncio.run(run()) == "The answer is 42."
    spans = llm_spans(gateway_exporter, 2)
    assert len(spans) == 2  # the tool call, then the answer
    _assert_exact_ids(spans, vllm_stub)
    first, second = (json.loads(s.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])[0] for s in spans)
    assert first["tool_calls"][0]["function"]["name"] == "calculator" and second["content"] == "The answer is 42."


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_responses_passed_on_as_they_are_when_told(vllm_stub, gateway_provider, gateway_exporter, stream):
    with Gateway(vllm_stub.base_url, tracer_provider=gateway_provider, responses_via_chat=False) as gateway:
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        if stream:
            with client.responses.stream(model="m", input="What is 6*7?") as events:
                response = events.get_final_response()
        else:
            response = client.responses.create(model="m", input="What is 6*7?")
    assert response.output_text == "The answer is 42."
    assert vllm_stub.received[-1][0] == "/v1/responses"
    (span,) = llm_spans(gateway_exporter)
    a = span.attributes
    assert a[semconv.LLM_API] == "responses" and semconv.GATEWAY_RESPONSES_VIA_CHAT not in a
    assert json.loads(a[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["content"] == "The answer is 42."
    assert semconv.RESPONSE_TOKEN_IDS not in a  # vLLM's Responses API has none: why via-chat is the default
