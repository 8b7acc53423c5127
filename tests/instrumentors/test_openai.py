"""The OpenAI instrumentor against a real openai client talking HTTP to the local stub server."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
import wrapt
from opentelemetry.trace import SpanKind, StatusCode

import otel_lightning as ol
from otel_lightning import semconv
from otel_lightning.testing.openai_stub import token_ids

CALCULATOR = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object"}}}
QUESTION = [{"role": "user", "content": "What is 6*7?"}]


def llm_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.attributes.get(semconv.SPAN_KIND) == semconv.SPAN_KIND_LLM]


@pytest.fixture(autouse=True)
def ask_for_token_ids(monkeypatch):
    """The stub answers as vLLM does: token ids only when asked (what the worker's setting makes us do)."""
    monkeypatch.setenv(semconv.ENV_REQUEST_TOKEN_IDS, "true")


@pytest.fixture
def client(openai_stub):
    return openai.OpenAI(base_url=openai_stub.base_url, api_key="unused", max_retries=0)


@pytest.fixture
def async_client(openai_stub):
    return openai.AsyncOpenAI(base_url=openai_stub.base_url, api_key="unused", max_retries=0)


def test_chat_completion_span_has_request_response_usage_and_token_ids(memory_exporter, client):
    with ol.rollout(task_id="t") as info:
        reply = client.chat.completions.create(
            model="stub-model", messages=QUESTION, temperature=0.5, max_tokens=32, logprobs=True
        )
    [span] = llm_spans(memory_exporter)
    a = span.attributes
    assert span.name == "chat stub-model"
    assert span.kind == SpanKind.CLIENT
    assert a[semconv.ROLLOUT_ID] == info.rollout_id
    assert (a[semconv.GEN_AI_OPERATION_NAME], a[semconv.GEN_AI_SYSTEM], a[semconv.LLM_API]) == (
        "chat",
        "openai",
        "chat.completions",
    )
    assert (a[semconv.GEN_AI_REQUEST_MODEL], a[semconv.GEN_AI_RESPONSE_MODEL]) == ("stub-model", "stub-model")
    assert (a[semconv.GEN_AI_REQUEST_TEMPERATURE], a[semconv.GEN_AI_REQUEST_MAX_TOKENS]) == (0.5, 32)
    assert a[semconv.GEN_AI_RESPONSE_ID] == reply.id
    assert json.loads(a[semconv.GEN_AI_INPUT_MESSAGES]) == QUESTION
    assert json.loads(a[semconv.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "content": "The answer is 42.", "finish_reason": "stop"}
    ]
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == len(token_ids("The answer is 42."))
    assert list(a[semconv.RESPONSE_TOKEN_IDS]) == token_ids("The answer is 42.")
    assert list(a[semconv.PROMPT_TOKEN_IDS]) == token_ids("user: What is 6*7?")
    assert list(a[semconv.RESPONSE_LOGPROBS]) == [-0.25] * len(token_ids("The answer is 42."))
    assert a[semconv.POLICY_VERSION] == "stub-1"
    assert a[semconv.LLM_STREAMING] is False


def test_tool_calls_are_recorded_in_the_output(memory_exporter, client):
    client.chat.completions.create(model="m", messages=QUESTION, tools=[CALCULATOR])
    [span] = llm_spans(memory_exporter)
    [output] = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert output["finish_reason"] == "tool_calls"
    assert output["tool_calls"][0]["function"] == {"name": "calculator", "arguments": '{"expression": "6*7"}'}
    assert json.loads(span.attributes[semconv.GEN_AI_TOOL_DEFINITIONS]) == [CALCULATOR]


def test_streamed_chat_is_accumulated_into_the_same_attributes(memory_exporter, client):
    stream = client.chat.completions.create(
        model="m", messages=QUESTION, stream=True, stream_options={"include_usage": True}
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == "The answer is 42."
    [span] = llm_spans(memory_exporter)
    a = span.attributes
    assert a[semconv.LLM_STREAMING] is True
    assert json.loads(a[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["content"] == text
    assert list(a[semconv.RESPONSE_TOKEN_IDS]) == token_ids(text)
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == len(token_ids(text))
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)


def test_streamed_tool_call_and_context_manager_use(memory_exporter, client):
    with client.chat.completions.create(model="m", messages=QUESTION, tools=[CALCULATOR], stream=True) as stream:
        chunks = list(stream)
    assert chunks
    [span] = llm_spans(memory_exporter)
    [output] = json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert output["tool_calls"][0]["function"]["name"] == "calculator"


def test_async_chat_plain_and_streamed(memory_exporter, async_client):
    async def main() -> str:
        await async_client.chat.completions.create(model="m", messages=QUESTION)
        stream = await async_client.chat.completions.create(model="m", messages=QUESTION, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(main()) == "The answer is 42."
    spans = llm_spans(memory_exporter)
    assert [s.attributes[semconv.LLM_STREAMING] for s in spans] == [False, True]
    assert all(
        json.loads(s.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["content"] == "The answer is 42." for s in spans
    )


def test_responses_api_sync_async_and_streamed(memory_exporter, client, async_client):
    client.responses.create(model="m", input="What is 6*7?", instructions="be brief")
    with client.responses.create(model="m", input="What is 6*7?", stream=True) as stream:
        assert [e.type for e in stream][-1] == "response.completed"

    async def main() -> None:
        await async_client.responses.create(
            model="m",
            input=[{"role": "user", "content": "What is 6*7?"}],
            tools=[{"type": "function", "name": "calculator", "parameters": {"type": "object"}}],
        )

    asyncio.run(main())
    plain, streamed, tool = llm_spans(memory_exporter)
    for span in (plain, streamed):
        assert span.attributes[semconv.LLM_API] == "responses"
        assert json.loads(span.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["content"] == "The answer is 42."
        # vLLM's Responses API has no token ids to ask for (the gateway serves it through chat completions).
        assert semconv.RESPONSE_TOKEN_IDS not in span.attributes
    assert json.loads(plain.attributes[semconv.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "What is 6*7?"},
    ]
    [output] = json.loads(tool.attributes[semconv.GEN_AI_OUTPUT_MESSAGES])
    assert output["tool_calls"][0]["function"]["name"] == "calculator"
    assert output["finish_reason"] == "tool_calls"


def test_failed_call_records_the_error_and_reraises(memory_exporter, client):
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="error", messages=QUESTION)
    [span] = llm_spans(memory_exporter)
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes["error.type"] == "InternalServerError"
    assert span.events[0].name == "exception"


def test_content_capture_can_be_turned_off(memory_exporter, client, monkeypatch):
    monkeypatch.setenv(semconv.ENV_CAPTURE_CONTENT, "false")
    client.chat.completions.create(model="m", messages=QUESTION, tools=[CALCULATOR])
    [span] = llm_spans(memory_exporter)
    for key in (semconv.GEN_AI_INPUT_MESSAGES, semconv.GEN_AI_OUTPUT_MESSAGES, semconv.GEN_AI_TOOL_DEFINITIONS):
        assert key not in span.attributes
    assert span.attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("tool_calls",)


def test_a_failure_inside_instrumentation_never_breaks_the_call(memory_exporter, client, monkeypatch):
    from otel_lightning_instrumentation_openai import extract

    def broken(*args, **kwargs):
        raise RuntimeError("instrumentation bug")

    monkeypatch.setattr(extract, "response_attributes", broken)
    reply = client.chat.completions.create(model="m", messages=QUESTION)
    assert reply.choices[0].message.content == "The answer is 42."
    assert len(llm_spans(memory_exporter)) == 1  # still ended, with the request attributes


def test_uninstrument_removes_every_wrapper(memory_exporter, client):
    from otel_lightning_instrumentation_openai import OpenAIInstrumentor

    OpenAIInstrumentor().uninstrument()
    try:
        client.chat.completions.create(model="m", messages=QUESTION)
        assert llm_spans(memory_exporter) == []
        from openai.resources.chat.completions import AsyncCompletions, Completions
        from openai.resources.responses import AsyncResponses, Responses

        for cls in (Completions, AsyncCompletions, Responses, AsyncResponses):
            assert not isinstance(cls.__dict__["create"], wrapt.ObjectProxy), cls
    finally:
        OpenAIInstrumentor().instrument()
    client.chat.completions.create(model="m", messages=QUESTION)
    assert len(llm_spans(memory_exporter)) == 1


def test_token_ids_are_requested_only_when_asked(memory_exporter, client, openai_stub, monkeypatch):
    monkeypatch.delenv(semconv.ENV_REQUEST_TOKEN_IDS)
    client.chat.completions.create(model="m", messages=QUESTION)
    _, sent = openai_stub.received[-1]
    assert "return_token_ids" not in sent and "logprobs" not in sent

    monkeypatch.setenv("LIGHTNING_REQUEST_TOKEN_IDS", "true")
    client.chat.completions.create(model="m", messages=QUESTION, extra_body={"top_k": 5})
    _, sent = openai_stub.received[-1]
    assert (sent["return_token_ids"], sent["logprobs"], sent["top_k"]) == (True, True, 5)
    client.chat.completions.create(model="m", messages=QUESTION, logprobs=False)
    assert openai_stub.received[-1][1]["logprobs"] is False  # the caller's choice stands
    assert len(llm_spans(memory_exporter)) == 3
