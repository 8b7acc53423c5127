"""One real GRPO optimizer step on transitions the policy itself produced."""

from __future__ import annotations

import json
import logging
import zlib  # seeds the same in every process, unlike hash()

import pytest
import torch

from otel_lightning.train.retokenize import RetokenizeError, retokenize
from otel_lightning.train.trainer import GRPOTrainer, RolloutRecord, TrainerConfig
from otel_lightning.v1 import transitions_pb2 as pb


def record(policy, rollout_id: str, task_id: str, reward: float, status: str = "succeeded") -> RolloutRecord:
    prompt = policy.tokenizer.encode_prompt([{"role": "user", "content": f"task {task_id}"}])
    generation, version = policy.generate(prompt, 8, seed=zlib.crc32(rollout_id.encode()) % 1000)
    transition = pb.Transition(
        rollout_id=rollout_id,
        task_id=task_id,
        prompt_token_ids=prompt,
        response_token_ids=generation.token_ids,
        response_logprobs=generation.logprobs,
        policy_version=str(version),
    )
    return RolloutRecord(rollout_id, task_id, status, reward, [transition])


def test_a_step_changes_the_weights_and_the_policy_version(policy, tmp_path):
    trainer = GRPOTrainer(policy, TrainerConfig(lr=1e-2))
    before = [p.detach().clone() for p in policy.model.parameters()]
    groups = {"t": [record(policy, "a", "t", 1.0), record(policy, "b", "t", 0.0), record(policy, "c", "t", 0.0)]}
    stats = trainer.step(groups)
    assert stats["sequences"] == 3 and stats["policy_version"] == 1 == policy.version
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.model.parameters(), strict=True))
    # Checkpoint and resume.
    trainer.save(tmp_path / "ckpt.pt")
    fresh_weights = [p.detach().clone() for p in policy.model.parameters()]
    trainer.step({"t": [record(policy, "d", "t", 1.0), record(policy, "e", "t", 0.0)]})
    trainer.load(tmp_path / "ckpt.pt")
    assert policy.version == 1
    assert all(torch.equal(f, p) for f, p in zip(fresh_weights, policy.model.parameters(), strict=True))


def test_failed_rollouts_are_dropped_or_penalised_never_mixed_in(policy):
    groups = {"t": [record(policy, "ok", "t", 1.0), record(policy, "bad", "t", 1.0, status="failed")]}
    dropped = GRPOTrainer(policy).step(groups)
    # Only the succeeded rollout is trained on (a group of one: advantage = its reward, as in verl).
    assert dropped["dropped"] == 1 and dropped["sequences"] == 1
    penalised = GRPOTrainer(policy, TrainerConfig(failed_rollouts="penalty", failure_penalty=-1.0)).step(groups)
    assert penalised["dropped"] == 0 and penalised["sequences"] == 2
    assert policy.version == 2


def test_transitions_without_token_ids_are_skipped_not_retokenised(policy):
    rollout = record(policy, "a", "t", 1.0)
    del rollout.transitions[0].response_token_ids[:]
    stats = GRPOTrainer(policy).step({"t": [rollout, record(policy, "b", "t", 0.0)]})
    assert stats["sequences"] == 1 and stats["skipped_without_token_ids"] == 1


def test_steps_without_token_ids_are_counted_and_retokenised_only_when_told(policy, caplog):
    messages = [{"role": "user", "content": "What is 2+3?"}]
    action = {"role": "assistant", "content": "5"}

    def without_ids(rollout_id: str, reward: float) -> RolloutRecord:
        transition = pb.Transition(
            rollout_id=rollout_id,
            task_id="t",
            state_json=json.dumps({"messages": messages}),
            action_json=json.dumps(action),
            token_ids_absent=True,
        )
        return RolloutRecord(rollout_id, "t", "succeeded", reward, [transition])

    groups = {"t": [without_ids("a", 1.0), without_ids("b", 0.0)]}
    caplog.set_level(logging.WARNING, logger="otel_lightning.train.trainer")
    left_out = GRPOTrainer(policy).step(groups)
    assert left_out["sequences"] == 0 and left_out["skipped_without_token_ids"] == 2
    assert "--retokenize" in caplog.text and policy.version == 0

    retokenised = GRPOTrainer(policy, TrainerConfig(retokenize=True)).step(groups)
    assert retokenised["sequences"] == 2 and retokenised["retokenized"] == 2 and policy.version == 1
    prompt, response = retokenize(policy.tokenizer, json.dumps({"messages": messages}), json.dumps(action))
    # The re-encoded step is what the policy would have been given and would have written.
    assert prompt == policy.tokenizer.encode_prompt(messages)
    assert policy.tokenizer.decode(response).startswith("5") and response[-1] == policy.tokenizer.eos_id


def test_a_step_with_no_messages_cannot_be_retokenised(policy):
    with pytest.raises(RetokenizeError, match="no input messages"):
        retokenize(policy.tokenizer, "{}", json.dumps({"role": "assistant", "content": "5"}))
    with pytest.raises(RetokenizeError, match="unreadable"):
        retokenize(policy.tokenizer, "{not json", "{}")
