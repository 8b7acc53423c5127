"""Policies saved as Hugging Face folders: transformers reads them, and they come back as the same policy."""

from __future__ import annotations

import json

import openai
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, BertConfig, Qwen2Config

from otel_lightning.cli import main
from otel_lightning.train.adapters import adapter_parameters, add_adapter
from otel_lightning.train.hf_checkpoint import check_model_directory, save_hf_checkpoint
from otel_lightning.train.policies import build_policy, check_model_source
from otel_lightning.train.policy import GenerationRequest
from otel_lightning.train.policy_server import PolicyServer
from otel_lightning.train.tokenizer import ByteChatTokenizer

TEXTS = ["What is 17+25?", "naïve café, 日本語, 🙂", "  tabs\tand\nnewlines  ", ""]
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2+3? é"},
    {"role": "assistant", "content": "5"},
    {"role": "tool", "content": "42"},
    {"role": "user", "content": [{"type": "text", "text": "and 6*7?"}]},
]
PROMPT = ByteChatTokenizer().encode_prompt([{"role": "user", "content": "What is 6*7?"}])


def greedy_tokens(policy, agent: str | None = None, prompt: list[int] = PROMPT) -> list[int]:
    [generation], _ = policy.generate_batch([GenerationRequest(prompt, 12, temperature=0.0, agent=agent)])
    return generation.token_ids


def test_the_tiny_model_round_trips_through_transformers(policy, tmp_path):
    policy.version = 5
    folder = save_hf_checkpoint(policy, tmp_path / "tiny-hf")

    model = AutoModelForCausalLM.from_pretrained(folder)
    ids = torch.tensor([PROMPT])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, policy.model(input_ids=ids).logits, atol=1e-6)

    tokenizer, byte = AutoTokenizer.from_pretrained(folder), ByteChatTokenizer()
    assert (tokenizer.eos_token_id, tokenizer.pad_token_id, len(tokenizer)) == (byte.eos_id, byte.pad_id, 264)
    for text in TEXTS:
        ids = tokenizer.encode(text)
        assert ids == byte.encode_text(text)
        assert tokenizer.decode(ids) == text
    assert tokenizer.decode([259, 104, 105, 257]) == byte.decode([259, 104, 105, 257]) == "<user>hi<eos>"
    rendered = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=True)
    assert list(rendered["input_ids"]) == byte.encode_prompt(MESSAGES)

    restored = build_policy(str(folder))
    assert (restored.name, restored.version, type(restored.tokenizer)) == ("tiny-hf", 5, ByteChatTokenizer)
    policy.greedy = restored.greedy = True
    [original, again] = [p.generate(PROMPT, max_new_tokens=12)[0].token_ids for p in (policy, restored)]
    assert again == original


def test_the_chat_template_writes_tool_calls_as_the_byte_tokenizer_does(tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(save_hf_checkpoint(build_policy("tiny", hidden=32, layers=1), tmp_path))
    byte = ByteChatTokenizer()
    function = {"name": "calculator", "arguments": {"expression": "6*7"}}
    call = {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": function}]}
    tool = {"type": "function", "function": {"name": "calculator", "parameters": {"type": "object", "properties": {}}}}
    turns = [{"role": "user", "content": "6*7?"}, call, {"role": "tool", "content": "42"}]
    for tools, default_tool in (([tool], "calculator"), (None, None)):
        rendered = tokenizer.apply_chat_template(turns, tools=tools, add_generation_prompt=True, tokenize=False)
        assert rendered == byte.decode(byte.encode_prompt(turns, default_tool))


def test_per_agent_adapters_are_saved_beside_the_base_model_and_answer_again(policy, tmp_path):
    add_adapter(policy, "math")
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in adapter_parameters(policy, "math"):
            parameter.add_(torch.randn_like(parameter) * 0.5)  # LoRA B starts at 0: make the adapter matter
    expected = {agent: greedy_tokens(policy, agent) for agent in ("math", None)}
    assert expected["math"] != expected[None]
    folder = save_hf_checkpoint(policy, tmp_path / "two")

    # The folder's model is the base model alone, under plain names.
    base = AutoModelForCausalLM.from_pretrained(folder)
    assert not [name for name in base.state_dict() if "lora" in name or "base_layer" in name]
    ids = torch.tensor([PROMPT])
    with torch.no_grad(), policy.model.disable_adapter():
        assert torch.allclose(base(input_ids=ids).logits, policy.model(input_ids=ids).logits, atol=1e-6)

    restored = build_policy(str(folder))
    assert set(restored.adapters) == {"math"}
    assert {agent: greedy_tokens(restored, agent) for agent in ("math", None)} == expected


def test_a_folder_saved_again_without_adapters_does_not_load_the_old_ones(policy, tmp_path):
    add_adapter(policy, "math")
    save_hf_checkpoint(policy, tmp_path)
    save_hf_checkpoint(build_policy("tiny", hidden=32, layers=1, seed=1), tmp_path)
    assert build_policy(str(tmp_path)).adapters == {}


def test_folders_that_are_no_causal_lm_are_refused_with_one_clear_line(tmp_path):
    with pytest.raises(ValueError, match=r"model directory .*missing does not exist"):
        check_model_directory(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty has no config\.json"):
        check_model_directory(tmp_path / "empty")
    BertConfig().save_pretrained(tmp_path / "bert")
    with pytest.raises(ValueError, match="holds a bert model, not a causal language model"):
        check_model_directory(tmp_path / "bert")
    Qwen2Config().save_pretrained(tmp_path / "no-weights")
    with pytest.raises(ValueError, match="no-weights has no weights"):
        check_model_directory(tmp_path / "no-weights")
    with pytest.raises(ValueError, match="unknown model 'tinyy': give tiny, smollm2"):
        check_model_source("tinyy")
    check_model_source("tiny")


def test_the_policy_server_command_refuses_a_bad_model_folder_in_one_line(tmp_path, capsys):
    BertConfig().save_pretrained(tmp_path / "bert")
    for bad in (tmp_path / "bert", tmp_path / "missing"):
        assert main(["policy-server", "--model", str(bad), "--port", "0"]) == 2
        error = capsys.readouterr().err
        assert str(bad) in error and len(error.strip().splitlines()) == 1, error


def test_the_policy_server_serves_a_policy_loaded_from_a_saved_folder(policy, tmp_path):
    policy.version = 3
    folder = save_hf_checkpoint(policy, tmp_path / "served")
    messages = [{"role": "user", "content": "What is 6*7?"}]
    expected = greedy_tokens(policy, prompt=policy.tokenizer.encode_prompt(messages))
    with PolicyServer(build_policy(str(folder))) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="unused", max_retries=0)
        reply = client.chat.completions.create(model="served", messages=messages, max_tokens=12, temperature=0)
        models = [model.id for model in client.models.list()]
    assert reply.choices[0].model_extra["token_ids"] == expected
    assert reply.model_extra["policy_version"] == "3"
    assert "served" in models


def test_smollm2_saves_as_a_folder_transformers_loads(tmp_path):
    from otel_lightning.train.hf_chat import HFChatTokenizer

    check_model_source("smollm2")  # `make install` brings it: missing is a failure, not a skip

    smollm2 = build_policy("smollm2")
    folder = save_hf_checkpoint(smollm2, tmp_path / "smollm2")
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = HFChatTokenizer(AutoTokenizer.from_pretrained(folder))
    messages = [{"role": "user", "content": "What is 17+25?"}]
    prompt = tokenizer.encode_prompt(messages)
    assert prompt == smollm2.tokenizer.encode_prompt(messages)
    assert (tokenizer.eos_id, tokenizer.pad_id) == (smollm2.tokenizer.eos_id, smollm2.tokenizer.pad_id)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        assert torch.allclose(model(input_ids=ids).logits, smollm2.model(input_ids=ids).logits, atol=1e-4)
    assert json.loads((folder / "otel_lightning.json").read_text())["tokenizer"] == "hf"
