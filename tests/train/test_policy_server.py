"""The policy server through the real openai client: token ids, logprobs, tool calls, versions."""

from __future__ import annotations

import json

import openai
import pytest
import torch

from otel_lightning.train.sft import pad_batch, token_logprobs
from otel_lightning.train.tokenizer import ByteChatTokenizer, ToolCall

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3? é"}]


def test_token_ids_match_the_tokenizer_and_logprobs_match_the_model(policy, policy_server):
    client = openai.OpenAI(base_url=policy_server.base_url, api_key="unused")
    reply = client.chat.completions.create(model="policy", messages=MESSAGES, max_tokens=12, logprobs=True, seed=3)
    extra = reply.model_extra
    tokenizer = policy.tokenizer
    assert extra["prompt_token_ids"] == tokenizer.encode_prompt(MESSAGES)
    choice = reply.choices[0]
    ids = choice.model_extra["token_ids"]
    text, calls = tokenizer.parse_completion(ids)
    if calls:
        assert [c.function.name for c in choice.message.tool_calls] == [c.name for c in calls]
    else:
        assert (choice.message.content or "") == text
    assert extra["policy_version"] == "0"
    assert reply.usage.completion_tokens == len(ids)
    # The logprobs are the model's own for these exact ids (recomputed with teacher forcing).
    sequence = extra["prompt_token_ids"] + ids
    full, mask = pad_batch([sequence], tokenizer.pad_id)
    with torch.no_grad():
        expected = token_logprobs(policy.model, full, mask)[0, len(extra["prompt_token_ids"]) - 1 :]
    served = [item.logprob for item in choice.logprobs.content]
    assert served == pytest.approx(expected.tolist(), abs=1e-4)


def test_tool_calls_come_back_as_openai_tool_calls(policy, policy_server, monkeypatch):
    tokenizer: ByteChatTokenizer = policy.tokenizer
    scripted = [*tokenizer.encode_tool_call("calculator", "17+25", default_tool="calculator"), tokenizer.eos_id]

    def generate_batch(requests):
        from otel_lightning.train.policy import Generation

        return [Generation(scripted, [-0.5] * len(scripted), "stop") for _ in requests], policy.version

    monkeypatch.setattr(policy, "generate_batch", generate_batch)
    client = openai.OpenAI(base_url=policy_server.base_url, api_key="unused")
    tool = {
        "type": "function",
        "function": {"name": "calculator", "parameters": {"type": "object", "properties": {"expression": {}}}},
    }
    reply = client.chat.completions.create(model="policy", messages=MESSAGES, tools=[tool])
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("calculator", {"expression": "17+25"})
    assert choice.model_extra["token_ids"] == scripted


def test_bad_requests_get_clear_errors(policy_server):
    client = openai.OpenAI(base_url=policy_server.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="messages must not be empty"):
        client.chat.completions.create(model="policy", messages=[])
    with pytest.raises(openai.BadRequestError, match="streaming is not supported"):
        client.chat.completions.create(model="policy", messages=MESSAGES, stream=True)


def test_chat_template_round_trips_tool_turns():
    tokenizer = ByteChatTokenizer()
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"function": {"name": "calculator", "arguments": '{"expression": "6*7"}'}}],
    }
    turns = [{"role": "user", "content": "6*7?"}, call, {"role": "tool", "content": "42"}]
    assert tokenizer.decode(tokenizer.encode_prompt(turns, default_tool="calculator")) == (
        "<user>6*7?<assistant><call>6*7</call><eos><tool>42<assistant>"
    )
    assert tokenizer.decode(tokenizer.encode_prompt(turns)) == (
        "<user>6*7?<assistant><call>calculator:6*7</call><eos><tool>42<assistant>"
    )
    assert tokenizer.parse_completion([*tokenizer.encode_text("ok"), tokenizer.eos_id, 65]) == ("ok", [])
    call_ids = tokenizer.encode_tool_call("calculator", "1+2", default_tool="calculator")
    assert tokenizer.parse_completion(call_ids, default_tool="calculator") == ("", [ToolCall("calculator", "1+2")])


def test_batched_generation_gives_each_row_what_it_would_get_alone(policy):
    from otel_lightning.train.policy import GenerationRequest

    tokenizer = policy.tokenizer
    prompts = [tokenizer.encode_prompt([{"role": "user", "content": "x" * length}]) for length in (1, 9, 4, 17)]
    requests = [GenerationRequest(p, max_new_tokens=6 + i, temperature=1.0, seed=i) for i, p in enumerate(prompts)]
    batch, version = policy.generate_batch(requests)
    assert version == policy.version
    for request, generation in zip(requests, batch, strict=True):
        alone, _ = policy.generate(request.prompt_ids, request.max_new_tokens, request.temperature, request.seed)
        assert generation.token_ids == alone.token_ids
        assert generation.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
        assert generation.finish_reason == alone.finish_reason


def test_concurrent_requests_are_served_in_batches(policy_server):
    from concurrent.futures import ThreadPoolExecutor

    client = openai.OpenAI(base_url=policy_server.base_url, api_key="unused")

    def ask(index: int):
        return client.chat.completions.create(
            model="p", messages=[{"role": "user", "content": f"q{index}"}], max_tokens=8, seed=index
        )

    with ThreadPoolExecutor(16) as pool:
        replies = list(pool.map(ask, range(32)))
    scheduler = policy_server.scheduler
    assert scheduler.requests == 32
    assert scheduler.batches < 32  # some requests shared a batch
    assert all(len(r.choices[0].model_extra["token_ids"]) <= 8 for r in replies)


def test_requests_add_no_spans_of_the_servers_own(policy_server, memory_exporter):
    """The agent's side records a model call; FastAPI's own request spans (on by default) ended after a quick
    rollout had and reached the collector late."""
    from opentelemetry import trace

    client = openai.OpenAI(base_url=policy_server.base_url, api_key="unused")
    with trace.get_tracer("test").start_as_current_span("agent"):
        client.chat.completions.create(model="p", messages=[{"role": "user", "content": "q"}], max_tokens=4)
    # The agent's span and the client instrumentor's "chat p"; nothing from the server (POST ..., fastapi.*).
    assert sorted(span.name for span in memory_exporter.get_finished_spans()) == ["agent", "chat p"]
