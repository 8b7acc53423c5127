"""`with_streaming_response`, `with_raw_response` and `.parse()` through the OpenAI instrumentor: the caller's
response stays whole (every chunk, every byte) and the span records what it said."""

from __future__ import annotations

import asyncio
import json
import logging
import re

import openai
import pydantic
import pytest

from otel_lightning import semconv
from otel_lightning.testing.openai_stub import token_ids

QUESTION = [{"role": "user", "content": "What is 6*7?"}]
ANSWER = "The answer is 42."
ASKED = {"return_token_ids": True, "logprobs": True}  # what the instrumentor adds when asked to


def llm_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.attributes.get(semconv.SPAN_KIND) == semconv.SPAN_KIND_LLM]


def without_ids(lines: list[str]) -> list[str]:
    """SSE lines with the per-call ids and times blanked, to compare two calls' streams."""
    return [re.sub(r'"(id|item_id|created|created_at)": ("[^"]*"|[0-9.]+)', r'"\1": _', line) for line in lines]


def direct_chunks(openai_stub, api: str) -> list[str]:
    """The SSE `data:` lines the stub sends for a streamed call, read with no instrumentor in the way."""
    import httpx

    path, body = (
        ("chat/completions", {"model": "m", "messages": QUESTION, "stream": True, **ASKED})
        if api == "chat"
        else ("responses", {"model": "m", "input": "What is 6*7?", "stream": True})
    )
    with httpx.stream("POST", f"{openai_stub.base_url}/{path}", json=body) as response:
        return without_ids([line for line in response.iter_lines() if line.startswith("data:")])


@pytest.fixture(autouse=True)
def ask_for_token_ids(monkeypatch):
    monkeypatch.setenv(semconv.ENV_REQUEST_TOKEN_IDS, "true")  # the stub, as vLLM, gives ids only when asked


def assert_recorded(span, streamed: bool) -> None:
    a = span.attributes
    assert json.loads(a[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["content"] == ANSWER
    if a[semconv.LLM_API] == "chat.completions":  # vLLM's Responses API has no token ids
        assert list(a[semconv.RESPONSE_TOKEN_IDS]) == token_ids(ANSWER)
    assert a[semconv.LLM_STREAMING] is streamed


@pytest.fixture
def client(openai_stub):
    return openai.OpenAI(base_url=openai_stub.base_url, api_key="unused", max_retries=0)


@pytest.fixture
def async_client(openai_stub):
    return openai.AsyncOpenAI(base_url=openai_stub.base_url, api_key="unused", max_retries=0)


def create_kwargs(api: str, stream: bool) -> dict:
    if api == "chat":
        return {"model": "m", "messages": QUESTION, "stream": stream}
    return {"model": "m", "input": "What is 6*7?", "stream": stream}


def resource(client, api: str):
    return client.chat.completions if api == "chat" else client.responses


def text_of(items: list, api: str) -> str:
    if api == "chat":
        return "".join(c.choices[0].delta.content or "" for c in items if c.choices)
    return "".join(e.delta for e in items if e.type == "response.output_text.delta")


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_sync_streaming_response_keeps_every_chunk(memory_exporter, client, openai_stub, api, caplog):
    expected = direct_chunks(openai_stub, api)
    with resource(client, api).with_streaming_response.create(**create_kwargs(api, True)) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data:")]
    assert without_ids(lines) == expected  # all of them, none taken by the instrumentor
    with resource(client, api).with_streaming_response.create(**create_kwargs(api, True)) as response:
        items = list(response.parse())
    assert text_of(items, api) == ANSWER
    assert len(items) == len([line for line in expected if line != "data: [DONE]"])
    spans = llm_spans(memory_exporter)
    assert len(spans) == 2
    for span in spans:
        assert_recorded(span, streamed=True)
    assert "could not" not in caplog.text


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_async_streaming_response_keeps_every_chunk_and_awaits_nothing_twice(
    memory_exporter, async_client, openai_stub, api, caplog
):
    expected = direct_chunks(openai_stub, api)

    async def main() -> tuple[list, list]:
        async with resource(async_client, api).with_streaming_response.create(**create_kwargs(api, True)) as response:
            lines = [line async for line in response.iter_lines() if line.startswith("data:")]
        # The Agents SDK's Runner.run_streamed path: __aenter__, then `await parse()`, then iterate.
        manager = resource(async_client, api).with_streaming_response.create(**create_kwargs(api, True))
        response = await manager.__aenter__()
        try:
            items = [item async for item in await response.parse()]
        finally:
            await manager.__aexit__(None, None, None)
        return lines, items

    with caplog.at_level(logging.WARNING):
        lines, items = asyncio.run(main())
    assert without_ids(lines) == expected
    assert text_of(items, api) == ANSWER
    assert "TypeError" not in caplog.text and "could not" not in caplog.text
    spans = llm_spans(memory_exporter)
    assert len(spans) == 2
    for span in spans:
        assert_recorded(span, streamed=True)


@pytest.mark.parametrize("api", ["chat", "responses"])
def test_streaming_response_of_a_plain_call_and_raw_responses(memory_exporter, client, async_client, api, caplog):
    with resource(client, api).with_streaming_response.create(**create_kwargs(api, False)) as response:
        parsed = response.parse()
    raw = resource(client, api).with_raw_response.create(**create_kwargs(api, False)).parse()

    async def main():
        raw = await resource(async_client, api).with_raw_response.create(**create_kwargs(api, False))
        return raw.parse()  # with_raw_response's parse() is not a coroutine, async client or not

    async_parsed = asyncio.run(main())
    for reply in (parsed, raw, async_parsed):
        text = reply.choices[0].message.content if api == "chat" else reply.output_text
        assert text == ANSWER
    spans = llm_spans(memory_exporter)
    assert len(spans) == 3
    for span in spans:
        assert_recorded(span, streamed=False)
    assert "could not" not in caplog.text


class Answer(pydantic.BaseModel):
    answer: str


def test_parse_calls_are_traced(memory_exporter, client, async_client, openai_stub):
    # The stub answers in prose, which `parse()` cannot turn into `Answer`: the span says so, the error reaches
    # the caller, and the call (with its token ids) is recorded all the same.
    with pytest.raises(pydantic.ValidationError):
        client.chat.completions.parse(model="m", messages=QUESTION, response_format=Answer)
    parsed = client.responses.parse(model="m", input="What is 6*7?")
    assert parsed.output_text == ANSWER

    async def main():
        return await async_client.chat.completions.parse(model="m", messages=QUESTION)

    assert asyncio.run(main()).choices[0].message.content == ANSWER
    failed, responses_span, async_span = llm_spans(memory_exporter)
    assert failed.attributes["error.type"] == "ValidationError"
    assert openai_stub.received[-3][1]["response_format"]["type"] == "json_schema"
    for span in (responses_span, async_span):
        assert_recorded(span, streamed=False)
