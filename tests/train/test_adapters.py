"""A policy per agent: LoRA adapters on a shared base, each trained only on its own agent's turns, chosen
by the policy server from the request."""

from __future__ import annotations

import logging
import zlib

import httpx
import pytest
import torch

from otel_lightning.train.adapters import adapter_parameters, add_adapter, load_adapters, save_adapters
from otel_lightning.train.policy import GenerationRequest
from otel_lightning.train.policy_server import PolicyServer
from otel_lightning.train.trainer import GRPOTrainer, RolloutRecord, TrainerConfig, load_policy
from otel_lightning.v1 import transitions_pb2 as pb

QUESTION = [{"role": "user", "content": "What is 2+3?"}]


def rollout(policy, agent: str, rollout_id: str, task_id: str, reward: float) -> RolloutRecord:
    prompt = policy.tokenizer.encode_prompt([{"role": "user", "content": f"{agent} {task_id}"}])
    # crc32, not hash(): str hashes change with each process, and so would the generations.
    request = GenerationRequest(prompt, 6, seed=zlib.crc32(rollout_id.encode()) % 1000, agent=agent)
    (generation,), version = policy.generate_batch([request])
    transition = pb.Transition(
        rollout_id=rollout_id,
        task_id=task_id,
        agent=agent,
        reward=reward,
        prompt_token_ids=prompt,
        response_token_ids=generation.token_ids,
        response_logprobs=generation.logprobs,
        policy_version=str(version),
    )
    return RolloutRecord(rollout_id, task_id, "succeeded", reward, [transition])


def group(policy, agent: str, task_id: str) -> dict[str, list[RolloutRecord]]:
    return {task_id: [rollout(policy, agent, f"{task_id}-{i}", task_id, float(i % 2)) for i in range(4)]}


def snapshot(tensors) -> list[torch.Tensor]:
    return [t.detach().clone() for t in tensors]


def changed(before, after) -> bool:
    return any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_each_adapter_is_trained_only_on_its_own_agents_turns(policy):
    base = snapshot(policy.model.parameters())
    trainer = GRPOTrainer(policy, TrainerConfig(lr=1e-2), policy_per_agent=True)

    stats = trainer.step(group(policy, "triage", "t1"))
    # Trained, not only made: LoRA's B matrices start at zero. (The loss itself can be exactly 0 on the
    # first, on-policy step: ratios of 1 times advantages that sum to 0; its gradient is not.)
    triage_b = [p for name, p in policy.model.named_parameters() if f"lora_B.{policy.adapters['triage']}." in name]
    assert list(policy.adapters) == ["triage"] and "triage" in stats["agents"]
    assert triage_b and any(bool(p.abs().sum() > 0) for p in triage_b)
    add_adapter(policy, "math")
    triage, math = snapshot(adapter_parameters(policy, "triage")), snapshot(adapter_parameters(policy, "math"))
    base_now = [p for name, p in policy.model.named_parameters() if ".lora_" not in name]

    trainer.step(group(policy, "math", "t2"))  # math's turns only: triage's adapter and the base stay as they were
    assert changed(math, adapter_parameters(policy, "math"))
    assert not changed(triage, adapter_parameters(policy, "triage"))
    assert not changed(base, base_now)

    both = {**group(policy, "triage", "t3"), **group(policy, "math", "t4")}
    stats = trainer.step(both)
    assert set(stats["agents"]) == {"triage", "math"} and policy.version == 3
    # The two adapters differ: their LoRA B matrices (zero when made) have been trained apart.
    b_weights = {
        agent: torch.cat([p.flatten() for n, p in policy.model.named_parameters() if f"lora_B.{key}." in n])
        for agent, key in policy.adapters.items()
    }
    assert not torch.allclose(b_weights["triage"], b_weights["math"])


def test_mixed_batches_answer_each_row_with_its_agents_adapter(policy):
    add_adapter(policy, "a")
    add_adapter(policy, "b")
    with torch.no_grad():  # make the adapters answer differently
        for name, parameter in policy.model.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0, 1.0)
    prompt = policy.tokenizer.encode_prompt(QUESTION)
    policy.greedy = True
    alone = {
        agent: policy.generate_batch([GenerationRequest(prompt, 8, agent=agent)])[0][0].token_ids
        for agent in ("a", "b", None)
    }
    together, _ = policy.generate_batch([GenerationRequest(prompt, 8, agent=agent) for agent in ("a", "b", None)])
    assert [g.token_ids for g in together] == [alone["a"], alone["b"], alone[None]]
    assert len({tuple(ids) for ids in alone.values()}) == 3


def test_the_policy_server_picks_the_adapter_by_model_name_or_baggage(policy, caplog):
    add_adapter(policy, "math")
    with torch.no_grad():
        for name, parameter in policy.model.named_parameters():
            if ".lora_B." in name:
                parameter.normal_(0, 2.0)
    prompt = policy.tokenizer.encode_prompt(QUESTION)
    policy.greedy = True
    expected = {
        agent: policy.generate_batch([GenerationRequest(prompt, 8, agent=agent)])[0][0].token_ids
        for agent in ("math", None)
    }
    assert expected["math"] != expected[None]
    body = {"messages": QUESTION, "max_tokens": 8}
    with PolicyServer(policy) as server, httpx.Client(base_url=server.base_url) as client:
        by_model = client.post("/chat/completions", json={**body, "model": "math"}).json()
        by_baggage = client.post(
            "/chat/completions", json={**body, "model": "policy"}, headers={"baggage": "lightning.agent.name=math"}
        ).json()
        with caplog.at_level(logging.WARNING):
            unknown = client.post("/chat/completions", json={**body, "model": "nobody"}).json()
        models = [m["id"] for m in client.get("/models").json()["data"]]
    assert by_model["choices"][0]["token_ids"] == expected["math"]
    assert by_baggage["choices"][0]["token_ids"] == expected["math"]
    assert unknown["choices"][0]["token_ids"] == expected[None]  # no adapter: the base model answers
    assert "no adapter for agent 'nobody'" in caplog.text
    assert "math" in models


def test_adapters_survive_a_checkpoint_and_a_saved_folder(policy, tmp_path):
    trainer = GRPOTrainer(policy, TrainerConfig(lr=1e-2), policy_per_agent=True)
    trainer.step({**group(policy, "triage", "t1"), **group(policy, "math", "t2")})
    weights = {agent: snapshot(adapter_parameters(policy, agent)) for agent in policy.adapters}
    trainer.save(tmp_path / "checkpoint.pt")
    save_adapters(policy, tmp_path / "adapters")

    from otel_lightning.train.policies import build_policy

    restored = build_policy("tiny", hidden=32, layers=1, seed=1)
    load_policy(restored, tmp_path / "checkpoint.pt")
    assert restored.version == policy.version
    for agent, tensors in weights.items():
        assert not changed(tensors, adapter_parameters(restored, agent))

    from_folder = build_policy("tiny", hidden=32, layers=1, seed=1)
    assert set(load_adapters(from_folder, tmp_path / "adapters")) == {"triage", "math"}
    for agent, tensors in weights.items():
        assert not changed(tensors, adapter_parameters(from_folder, agent))


def test_damaged_checkpoint_or_adapter_files_are_errors_that_name_the_file(policy, tmp_path):
    broken = tmp_path / "checkpoint.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"checkpoint {broken} cannot be read"):
        load_policy(policy, broken)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_policy(policy, tmp_path / "missing.pt")

    add_adapter(policy, "math")
    save_adapters(policy, tmp_path / "adapters")
    weights = next((tmp_path / "adapters").rglob("adapter_model.safetensors"))
    weights.write_bytes(b"\x00garbage")
    from otel_lightning.train.policies import build_policy

    with pytest.raises(ValueError, match=f"cannot load the adapter for agent 'math' from {weights}"):
        load_adapters(build_policy("tiny", hidden=32, layers=1, seed=1), tmp_path / "adapters")


def test_a_damaged_lora_config_or_adapter_index_is_an_error_naming_that_file(policy, tmp_path):
    add_adapter(policy, "math")
    save_adapters(policy, tmp_path / "adapters")
    from otel_lightning.train.policies import build_policy

    config = next((tmp_path / "adapters").rglob("adapter_config.json"))
    config.write_text("{ not json")
    with pytest.raises(ValueError, match=f"agent 'math': {config} is not a LoRA config"):
        load_adapters(build_policy("tiny", hidden=32, layers=1, seed=1), tmp_path / "adapters")
    index = tmp_path / "adapters" / "agents.json"
    index.write_text("[]")
    with pytest.raises(ValueError, match=f"{index} is not an adapter index"):
        load_adapters(build_policy("tiny", hidden=32, layers=1, seed=1), tmp_path / "adapters")


def fixed_groups(policy) -> dict[str, list[RolloutRecord]]:
    """Groups whose transitions carry no sampling logprobs: every update is at ratio 1 (nothing clipped),
    so repeating them pushes an adapter the same way each step."""
    groups = {**group(policy, "math", "k1"), **group(policy, "math", "k2")}
    for members in groups.values():
        for record in members:
            for transition in record.transitions:
                del transition.response_logprobs[:]
    return groups


def drift_from_base(policy, groups) -> float:
    """Mean |log p_adapter - log p_base| over the groups' response tokens."""
    from otel_lightning.train.sft import pad_batch, token_logprobs

    sequences, masks = [], []
    for record in (r for members in groups.values() for r in members):
        for t in record.transitions:
            sequences.append(list(t.prompt_token_ids) + list(t.response_token_ids))
            masks.append([0] * len(t.prompt_token_ids) + [1] * len(t.response_token_ids))
    ids, attention = pad_batch(sequences, policy.tokenizer.pad_id)
    mask = pad_batch(masks, 0)[0][:, 1:].float()
    policy.model.set_adapter(policy.adapters["math"])
    with torch.no_grad():
        adapted = token_logprobs(policy.model, ids, attention)
        with policy.model.disable_adapter():
            base = token_logprobs(policy.model, ids, attention)
    return float(((adapted - base).abs() * mask).sum() / mask.sum())


def test_the_kl_penalty_to_the_base_holds_an_adapter_near_the_base_model():
    from otel_lightning.train.policies import build_policy

    drift = {}
    for kl_to_base in (0.0, 20.0):
        fresh = build_policy("tiny", hidden=32, layers=1, seed=1)
        groups = fixed_groups(fresh)
        trainer = GRPOTrainer(fresh, TrainerConfig(lr=1e-2, kl_to_base=kl_to_base), policy_per_agent=True)
        for _ in range(12):
            stats = trainer.step(groups)
        assert ("kl_to_base" in stats["agents"]["math"]) == bool(kl_to_base)  # computed only when asked for
        drift[kl_to_base] = drift_from_base(fresh, groups)
    assert drift[0.0] > 0.0
    assert drift[20.0] < 0.5 * drift[0.0], drift  # measured: ~0.04 against ~0.42


@pytest.mark.parametrize("damaged", ["checkpoint", "adapters"])
def test_the_policy_server_command_names_a_damaged_file_and_stops(policy, tmp_path, damaged):
    import subprocess
    import sys

    if damaged == "checkpoint":
        bad = tmp_path / "checkpoint.pt"
        bad.write_bytes(b"not a checkpoint")
        option = ["--checkpoint", str(bad)]
    else:
        add_adapter(policy, "math")
        save_adapters(policy, tmp_path / "adapters")
        bad = next((tmp_path / "adapters").rglob("adapter_model.safetensors"))
        bad.write_bytes(b"\x00garbage")
        option = ["--adapters", str(tmp_path / "adapters")]
    command = [sys.executable, "-m", "otel_lightning.cli", "policy-server", "--hidden", "32", "--layers", "1"]
    result = subprocess.run([*command, *option, "--port", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert str(bad) in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_kl_to_the_base_without_adapters_is_refused(policy):
    with pytest.raises(ValueError, match="kl_to_base needs a policy per agent"):
        GRPOTrainer(policy, TrainerConfig(kl_to_base=0.1))
