"""Bad input and broken parts: the caller gets a clear answer quickly, the span says what went wrong."""

from __future__ import annotations

import socket

import httpx
import openai
import pytest
from opentelemetry.trace import StatusCode

from otel_lightning import semconv
from otel_lightning.testing.openai_stub import STALL_MODEL
from otel_lightning_gateway import Gateway, RolloutRoute
from tests.gateway.support import QUESTION, llm_spans
from tests.support import free_port, wait_until


def test_an_upstream_error_passes_through_with_its_status_and_body(gateway, gateway_exporter):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="error", messages=QUESTION)
    assert raised.value.status_code == 500 and raised.value.body["message"] == "stub model failure"
    (span,) = llm_spans(gateway_exporter)
    assert span.status.status_code == StatusCode.ERROR and "stub model failure" in span.status.description
    assert span.attributes["error.type"] == "500"
    assert gateway.stats["failed"] == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_an_upstream_that_is_down_gives_502(gateway_provider, gateway_exporter, stream):
    with Gateway(f"http://127.0.0.1:{free_port()}/v1", tracer_provider=gateway_provider) as gateway:
        answer = httpx.post(
            f"{gateway.base_url}/chat/completions", json={"model": "m", "messages": QUESTION, "stream": stream}
        )
        assert answer.status_code == 502
        assert answer.json()["error"]["type"] == "upstream_unavailable"
        assert gateway.stats["upstream_unavailable"] == 1
    (span,) = llm_spans(gateway_exporter)
    assert span.status.status_code == StatusCode.ERROR and span.attributes["error.type"] == "upstream_unavailable"


def test_a_body_that_is_not_json_gets_400_and_an_error_span(gateway, gateway_exporter, vllm_stub):
    received = len(vllm_stub.received)
    answer = httpx.post(f"{gateway.base_url}/chat/completions", content=b"{not json", timeout=5)
    assert answer.status_code == 400 and "not a JSON object" in answer.json()["error"]["message"]
    (span,) = llm_spans(gateway_exporter)
    assert span.status.status_code == StatusCode.ERROR
    assert len(vllm_stub.received) == received


def test_a_responses_request_chat_completions_cannot_carry_is_refused_with_the_reason(gateway, gateway_exporter):
    client = openai.OpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as raised:
        client.responses.create(model="m", input="hi", tools=[{"type": "web_search"}])
    assert "only function tools" in str(raised.value)
    with pytest.raises(openai.BadRequestError, match="previous_response_id"):
        client.responses.create(model="m", input="hi", previous_response_id="resp_1")
    spans = llm_spans(gateway_exporter, 2)
    assert all(s.status.status_code == StatusCode.ERROR for s in spans)


def test_a_caller_that_disconnects_mid_stream_leaves_a_cancelled_span_and_the_upstream_closed(
    gateway, gateway_exporter, vllm_stub
):
    aborted = vllm_stub._server.aborted_streams
    host, port = gateway.address.split(":")
    body = b'{"model": "%s", "stream": true, "messages": [{"role": "user", "content": "hi"}]}' % STALL_MODEL.encode()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        received = b""
        while b"Thinking" not in received:  # the first chunk came through: the caller goes away
            received += sock.recv(4096)
    (span,) = llm_spans(gateway_exporter, timeout_s=10)
    assert span.status.status_code == StatusCode.ERROR and span.attributes[semconv.LLM_CANCELLED] is True
    assert span.attributes["error.type"] == "cancelled"
    assert wait_until(lambda: vllm_stub._server.aborted_streams > aborted, 10)  # the upstream was let go
    assert gateway.stats["cancelled"] == 1


def test_a_failing_request_rewrite_is_a_500_that_names_it(gateway, gateway_exporter, vllm_stub):
    def broken(endpoint: str, body: dict) -> dict:
        raise KeyError("system prompt")

    gateway.register_rollout(RolloutRoute("r-broken", rewrite=broken))
    received = len(vllm_stub.received)
    answer = httpx.post(
        f"{gateway.rollout_base_url('r-broken')}/chat/completions", json={"model": "m", "messages": QUESTION}
    )
    assert answer.status_code == 500 and "rewrite failed" in answer.json()["error"]["message"]
    (span,) = llm_spans(gateway_exporter)
    assert span.status.status_code == StatusCode.ERROR and span.attributes["error.type"] == "rewrite_error"
    assert len(vllm_stub.received) == received


def test_a_caller_that_gives_up_on_a_plain_call_leaves_a_cancelled_span_and_the_upstream_closed(
    gateway_provider, gateway_exporter
):
    # A model server that takes the request and never answers (a long generation, as the caller sees it).
    with socket.create_server(("127.0.0.1", 0)) as silent:
        upstream = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        with Gateway(upstream, tracer_provider=gateway_provider) as gateway:
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    f"{gateway.base_url}/chat/completions",
                    json={"model": "m", "messages": QUESTION},
                    timeout=httpx.Timeout(5, read=0.5),
                )
            connection, _ = silent.accept()
            with connection:
                connection.settimeout(10)
                while connection.recv(65536):  # the request, then end of stream: the gateway let it go
                    pass
            (span,) = llm_spans(gateway_exporter, timeout_s=10)
            assert span.status.status_code == StatusCode.ERROR and span.attributes[semconv.LLM_CANCELLED] is True
            assert gateway.stats["cancelled"] == 1


def test_a_request_over_a_megabyte_is_proxied_whole(gateway, gateway_exporter, vllm_stub):
    # aiohttp refuses bodies over 1 MiB unless told otherwise; a long conversation (or an image) is that big.
    long_message = "x" * 1_100_000
    answer = httpx.post(
        f"{gateway.base_url}/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": long_message}]},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text[:200]
    assert vllm_stub.received[-1][1]["messages"][0]["content"] == long_message
    (span,) = llm_spans(gateway_exporter, timeout_s=10)
    assert len(span.attributes[semconv.PROMPT_TOKEN_IDS]) > 1_100_000
