"""Every model call through the gateway is one span with the exact token ids the upstream returned,
and the caller gets the upstream's answer unchanged (minus only what the gateway alone asked for)."""

from __future__ import annotations

import json
import socket

import httpx
import openai
import pytest

from otel_lightning import semconv
from otel_lightning_gateway import Gateway
from tests.gateway.support import CALCULATOR, QUESTION, llm_spans, sse_data, token_ids, upstream_ids, without_ids


@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)


def _last_chat_request(stub):
    path, body = stub.received[-1]
    assert path == "/v1/chat/completions"
    return body


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_chat_span_has_the_upstreams_token_ids(client, gateway_exporter, vllm_stub, stream):
    if stream:
        chunks = list(client.chat.completions.create(model="m", messages=QUESTION, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        text = client.chat.completions.create(model="m", messages=QUESTION).choices[0].message.content
    assert text == "The answer is 42."
    sent = _last_chat_request(vllm_stub)
    assert sent["return_token_ids"] is True and sent["logprobs"] is True
    if stream:
        assert sent["stream_options"] == {"include_usage": True}
    (span,) = llm_spans(gateway_exporter)
    prompt_ids, response_ids = upstream_ids(sent)
    a = span.attributes
    assert list(a[semconv.PROMPT_TOKEN_IDS]) == prompt_ids
    assert list(a[semconv.RESPONSE_TOKEN_IDS]) == response_ids == token_ids("The answer is 42.")
    assert list(a[semconv.RESPONSE_LOGPROBS]) == [-0.25] * len(response_ids)
    assert (span.name, a[semconv.LLM_SOURCE], a[semconv.LLM_API], a[semconv.LLM_STREAMING]) == (
        "chat m",
        "gateway",
        "chat.completions",
        stream,
    )
    assert json.loads(a[semconv.GEN_AI_INPUT_MESSAGES]) == QUESTION
    assert json.loads(a[semconv.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "content": "The answer is 42.", "finish_reason": "stop"}
    ]
    assert a[semconv.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == len(response_ids)
    assert span.status.is_ok


def test_tool_call_span_has_tools_and_the_call(client, gateway_exporter, vllm_stub):
    reply = client.chat.completions.create(model="m", messages=QUESTION, tools=[CALCULATOR])
    (call,) = reply.choices[0].message.tool_calls
    (span,) = llm_spans(gateway_exporter)
    a = span.attributes
    assert json.loads(a[semconv.GEN_AI_TOOL_DEFINITIONS]) == [CALCULATOR]
    (recorded,) = json.loads(a[semconv.GEN_AI_OUTPUT_MESSAGES])[0]["tool_calls"]
    assert recorded["id"] == call.id and json.loads(recorded["function"]["arguments"]) == {"expression": "6*7"}
    assert list(a[semconv.RESPONSE_TOKEN_IDS]) == upstream_ids(_last_chat_request(vllm_stub))[1]


def _raw_chat(base_url: str, body: dict) -> httpx.Response:
    return httpx.post(f"{base_url}/chat/completions", json=body, timeout=10)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_the_caller_gets_what_the_upstream_would_have_sent(gateway, vllm_stub, stream):
    body = {"model": "m", "messages": QUESTION, "tools": [CALCULATOR], "stream": stream}
    through = _raw_chat(gateway.base_url, body)
    direct = _raw_chat(vllm_stub.base_url, body)
    assert through.status_code == direct.status_code == 200
    if stream:
        through_events, direct_events = sse_data(through), sse_data(direct)
        assert len(through_events) == len(direct_events) == 4  # role, tool call, finish, [DONE]: chunk for chunk
        assert without_ids(through_events) == without_ids(direct_events)
    else:
        assert without_ids(through.json()) == without_ids(direct.json())
        assert through.json()["prompt_token_ids"] is None  # null, as vLLM says it when not asked


def test_a_caller_that_asks_for_token_ids_gets_them(gateway, vllm_stub, gateway_exporter):
    body = {"model": "m", "messages": QUESTION, "stream": True, "return_token_ids": True}
    events = sse_data(_raw_chat(gateway.base_url, body))
    prompt_ids, response_ids = upstream_ids(_last_chat_request(vllm_stub))
    assert events[0]["prompt_token_ids"] == prompt_ids
    assert [i for e in events[1:-1] for c in e["choices"] for i in c.get("token_ids") or []] == response_ids
    assert all(c.get("logprobs") is None for e in events[:-1] for c in e["choices"])  # not asked: stripped
    assert not [e for e in events[:-1] if not e["choices"]]  # nor the usage chunk
    (span,) = llm_spans(gateway_exporter)
    assert list(span.attributes[semconv.RESPONSE_TOKEN_IDS]) == response_ids


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_completions_span_has_the_upstreams_token_ids(client, gateway_exporter, vllm_stub, stream):
    if stream:
        text = "".join(
            c.choices[0].text for c in client.completions.create(model="m", prompt="6*7=", stream=True) if c.choices
        )
    else:
        text = client.completions.create(model="m", prompt="6*7=").choices[0].text
    assert text == "The answer is 42."
    path, sent = vllm_stub.received[-1]
    assert (path, sent["return_token_ids"], sent["logprobs"]) == ("/v1/completions", True, 1)
    (span,) = llm_spans(gateway_exporter)
    a = span.attributes
    assert span.name == "text_completion m" and a[semconv.LLM_API] == "completions"
    assert list(a[semconv.PROMPT_TOKEN_IDS]) == token_ids("6*7=")
    assert list(a[semconv.RESPONSE_TOKEN_IDS]) == token_ids("The answer is 42.")
    assert len(a[semconv.RESPONSE_LOGPROBS]) == len(token_ids("The answer is 42."))


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_responses_api_is_served_through_chat_completions_with_token_ids(client, gateway_exporter, vllm_stub, stream):
    if stream:
        with client.responses.stream(model="m", instructions="be brief", input="What is 6*7?") as events:
            kinds = [event.type for event in events]
            response = events.get_final_response()
        assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
        assert "response.output_text.delta" in kinds
    else:
        response = client.responses.create(model="m", instructions="be brief", input="What is 6*7?")
    assert response.output_text == "The answer is 42." and response.status == "completed"
    assert response.usage.output_tokens == len(token_ids("The answer is 42."))
    sent = _last_chat_request(vllm_stub)  # not /v1/responses: vLLM's gives no token ids
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "What is 6*7?"}]
    (span,) = llm_spans(gateway_exporter)
    a = span.attributes
    prompt_ids, response_ids = upstream_ids(sent)
    assert (list(a[semconv.PROMPT_TOKEN_IDS]), list(a[semconv.RESPONSE_TOKEN_IDS])) == (prompt_ids, response_ids)
    assert (a[semconv.LLM_API], a[semconv.GATEWAY_RESPONSES_VIA_CHAT]) == ("responses", True)
    assert json.loads(a[semconv.GEN_AI_INPUT_MESSAGES]) == sent["messages"]


def test_other_paths_are_proxied_as_they_are(gateway):
    models = openai.OpenAI(base_url=gateway.base_url, api_key="unused").models.list()
    assert [m.id for m in models.data] == ["stub"]
    assert httpx.get(f"http://{gateway.address}/health", timeout=5).status_code == 200
    assert gateway.stats["proxied"] == 2 and gateway.stats["calls"] == 0


def test_a_streamed_completion_reaches_the_caller_chunk_for_chunk(gateway, vllm_stub):
    body = {"model": "m", "prompt": "6*7=", "stream": True}
    through = httpx.post(f"{gateway.base_url}/completions", json=body, timeout=10)
    direct = httpx.post(f"{vllm_stub.base_url}/completions", json=body, timeout=10)
    through_events, direct_events = sse_data(through), sse_data(direct)
    assert len(through_events) == len(direct_events) == 3  # two text chunks, [DONE]
    assert without_ids(through_events) == without_ids(direct_events)


def test_a_caller_that_expects_100_continue_is_told_to_go_on(gateway):
    # curl sends `Expect: 100-continue` with larger bodies and waits for the go-ahead before sending them.
    body = json.dumps({"model": "m", "messages": QUESTION}).encode()
    host, port = gateway.address.split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(body)
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        answer = b""
        while b"The answer is 42." not in answer:
            answer += sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_content_settings_are_read_when_the_gateway_starts(monkeypatch, vllm_stub, gateway_provider, gateway_exporter):
    """LIGHTNING_REDACT_PATTERN blanks matches in the span's messages (the caller's answer is untouched);
    LIGHTNING_CAPTURE_CONTENT=false keeps messages off the span but the token ids on it. Both are read
    once, when the gateway is made (not on every call)."""
    secret = [{"role": "user", "content": "Mail bob@example.com the sum of 6*7."}]
    monkeypatch.setenv("LIGHTNING_REDACT_PATTERN", r"[\w.+-]+@[\w-]+\.\w+")
    with Gateway(vllm_stub.base_url, tracer_provider=gateway_provider) as gateway:
        monkeypatch.delenv("LIGHTNING_REDACT_PATTERN")  # too late for this gateway
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        client.chat.completions.create(model="m", messages=secret)
        (span,) = llm_spans(gateway_exporter)
    assert json.loads(span.attributes[semconv.GEN_AI_INPUT_MESSAGES]) == [
        {"role": "user", "content": "Mail [REDACTED] the sum of 6*7."}
    ]
    assert vllm_stub.received[-1][1]["messages"] == secret

    gateway_exporter.clear()
    monkeypatch.setenv("LIGHTNING_CAPTURE_CONTENT", "false")
    with Gateway(vllm_stub.base_url, tracer_provider=gateway_provider) as gateway:
        client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
        client.chat.completions.create(model="m", messages=secret)
        (span,) = llm_spans(gateway_exporter)
    assert semconv.GEN_AI_INPUT_MESSAGES not in span.attributes
    assert semconv.GEN_AI_OUTPUT_MESSAGES not in span.attributes
    assert list(span.attributes[semconv.RESPONSE_TOKEN_IDS]) == upstream_ids(vllm_stub.received[-1][1])[1]
