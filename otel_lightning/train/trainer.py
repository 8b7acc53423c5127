"""GRPOTrainer: turns completed rollout groups from the transition stream into policy updates."""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from otel_lightning.merged_stream import MergedTransitionStream
from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning.train.grpo import clipped_policy_loss, grpo_outcome_advantage, sequence_with_mask
from otel_lightning.train.policy import TorchPolicy
from otel_lightning.train.sft import pad_batch, token_logprobs
from otel_lightning.v1 import transitions_pb2 as pb

logger = logging.getLogger(__name__)

SUCCEEDED = "succeeded"
# What the trainer does with a rollout, by its status (docs/rollout_status.md):
#   train   - its reward as recorded;
#   drop    - left out of training;
#   penalty - trained on with reward `failure_penalty`;
#   retry   - left out: the collector's pool runs the sample again (a failed model call, a lost
#             worker; the completion says `retried`), and the group waits for that attempt. A
#             rollout whose sample used up its attempts is not retried: it is dropped.
ACTIONS = ("train", "drop", "penalty", "retry")
# The agent's own failures follow `failed_rollouts`; failures of the infrastructure are retried;
# rollouts with nothing to train on are dropped.
AGENT_FAILURES = ("failed", "timeout", "tool_error")
DEFAULT_STATUS_POLICY = {
    "succeeded": "train",
    "llm_error": "retry",
    "abandoned": "retry",
    "malformed": "drop",
    "incomplete": "drop",
}


@dataclass
class TrainerConfig:
    lr: float = 1e-3
    clip_ratio: float = 0.2
    max_grad_norm: float = 1.0
    # What happens to rollouts the agent failed (failed, timeout, tool_error): "drop" leaves them
    # out of training; "penalty" trains on them with reward `failure_penalty`.
    failed_rollouts: str = "drop"
    failure_penalty: float = 0.0
    # Per-status overrides of the policy above (status -> one of ACTIONS).
    status_policy: dict[str, str] = field(default_factory=dict)

    def action_for(self, status: str) -> str:
        """What to do with a rollout of this status (unknown statuses are dropped)."""
        if status in self.status_policy:
            return self.status_policy[status]
        if status in AGENT_FAILURES:
            return self.failed_rollouts
        return DEFAULT_STATUS_POLICY.get(status, "drop")


@dataclass
class RolloutRecord:
    rollout_id: str
    task_id: str
    status: str
    reward: float
    transitions: list[pb.Transition] = field(default_factory=list)
    retried: bool = False  # another attempt of the sample comes


class RolloutGroups:
    """Reads the collector's stream in the background; `collect` waits for whole groups.

    Events are acked (`ack_consumed`) only after the caller has used them, so a trainer that
    crashes mid-step gets them again from the collector.
    """

    def __init__(self, client: TransitionStreamClient | MergedTransitionStream) -> None:
        self.client = client
        self._events: queue.Queue[pb.StreamEvent | BaseException] = queue.Queue()
        self._pending: dict[str, list[pb.Transition]] = {}
        self._completed: dict[str, list[RolloutRecord]] = {}
        self._last_sequence = 0
        self.stragglers = 0
        threading.Thread(target=self._read, name="rollout-groups", daemon=True).start()

    def _read(self) -> None:
        try:
            for event in self.client:
                self._events.put(event)
        except BaseException as error:  # surfaced to collect()
            self._events.put(error)

    def collect(self, expected: dict[str, int], timeout_s: float) -> dict[str, list[RolloutRecord]]:
        """Rollouts of the expected tasks (task id -> group size), once every group is whole or time is up."""
        deadline = time.monotonic() + timeout_s
        while not all(self._counted(task) >= size for task, size in expected.items()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning("groups incomplete after %.0fs; training on what arrived", timeout_s)
                break
            try:
                item = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if isinstance(item, BaseException):
                raise RuntimeError(f"the transition stream failed: {item}") from item
            self._absorb(item)
        groups = {task: self._completed.pop(task, []) for task in expected}
        self.stragglers += sum(len(records) for records in self._completed.values())
        self._completed.clear()
        return groups

    def _counted(self, task_id: str) -> int:
        # A rollout the collector runs again does not fill its group: the next attempt will.
        return sum(not record.retried for record in self._completed.get(task_id, []))

    def _absorb(self, event: pb.StreamEvent) -> None:
        self._last_sequence = event.sequence
        if event.HasField("transition"):
            self._pending.setdefault(event.transition.rollout_id, []).append(event.transition)
            return
        done = event.rollout
        record = RolloutRecord(
            done.rollout_id,
            done.task_id,
            done.status,
            done.total_reward,
            self._pending.pop(done.rollout_id, []),
            retried=done.retried,
        )
        self._completed.setdefault(done.task_id, []).append(record)

    def close(self) -> None:
        self.client.close()

    def ack_consumed(self) -> None:
        if self._last_sequence:
            self.client.ack(self._last_sequence)


def load_policy(policy: TorchPolicy, path: str | Path) -> dict[str, Any]:
    """Put a checkpoint's weights and policy version (GRPOTrainer.save) into `policy`; returns the checkpoint."""
    state = torch.load(path, weights_only=True)
    with policy.lock:
        policy.model.load_state_dict(state["model"])
        policy.version = int(state["policy_version"])
    return state


class GRPOTrainer:
    def __init__(self, policy: TorchPolicy, config: TrainerConfig | None = None) -> None:
        self.policy = policy
        self.config = config or TrainerConfig()
        if self.config.failed_rollouts not in ("drop", "penalty"):
            raise ValueError("failed_rollouts must be 'drop' or 'penalty'")
        unknown = {action for action in self.config.status_policy.values() if action not in ACTIONS}
        if unknown:
            raise ValueError(f"status_policy actions must be among {ACTIONS}, not {sorted(unknown)}")
        self.optimizer = torch.optim.AdamW(policy.model.parameters(), lr=self.config.lr)
        self.steps = 0

    def _rewards(self, groups: dict[str, list[RolloutRecord]]) -> tuple[list[RolloutRecord], list[float], list[int]]:
        records, rewards, group_ids = [], [], []
        for group_index, (_, members) in enumerate(sorted(groups.items())):
            for record in members:
                action = self.config.action_for(record.status)
                if action in ("drop", "retry"):
                    continue
                reward = self.config.failure_penalty if action == "penalty" else record.reward
                records.append(record)
                rewards.append(reward)
                group_ids.append(group_index)
        return records, rewards, group_ids

    def step(self, groups: dict[str, list[RolloutRecord]]) -> dict[str, Any]:
        """One policy update on the given groups; bumps the policy version. Returns statistics."""
        records, rewards, group_ids = self._rewards(groups)
        all_records = [r for members in groups.values() for r in members]
        stats: dict[str, Any] = {
            "rollouts": len(all_records),
            "dropped": len(all_records) - len(records),
            "mean_reward": sum(r.reward for r in all_records if r.status == SUCCEEDED) / max(len(all_records), 1),
        }
        if not records:
            return {**stats, "sequences": 0, "loss": 0.0}
        advantages = grpo_outcome_advantage(torch.tensor(rewards), torch.tensor(group_ids))
        sequences, masks, sequence_advantages, old = [], [], [], []
        for record, advantage in zip(records, advantages.tolist(), strict=True):
            if advantage == 0.0:
                continue  # a group whose rollouts all scored the same carries no signal
            for transition in record.transitions:
                if not transition.response_token_ids:
                    # No exact token ids: never re-tokenise text; counted and said (never silently skipped).
                    stats["skipped_without_token_ids"] = stats.get("skipped_without_token_ids", 0) + 1
                    continue
                ids, mask = sequence_with_mask(list(transition.prompt_token_ids), list(transition.response_token_ids))
                sequences.append(ids)
                masks.append(mask)
                sequence_advantages.append(advantage)
                logprobs = list(transition.response_logprobs)
                old.append(logprobs if len(logprobs) == len(transition.response_token_ids) else None)
        stats["sequences"] = len(sequences)
        if stats.get("skipped_without_token_ids"):
            logger.warning(
                "%d transition(s) skipped: no token ids (their rollouts say why: steps_without_token_ids);"
                " run the agents through the model gateway (`otel-lightning worker` starts one by default)",
                stats["skipped_without_token_ids"],
            )
        if not sequences:
            return {**stats, "loss": 0.0}
        with self.policy.lock:
            self.policy.model.train()
            ids, attention = pad_batch(sequences, self.policy.tokenizer.pad_id)
            loss_mask = pad_batch(masks, 0)[0][:, 1:].float()
            logprobs = token_logprobs(self.policy.model, ids, attention)
            old_logprobs = logprobs.detach().clone()
            for row, given in enumerate(old):
                if given is not None:
                    start = int(masks[row].index(1)) - 1
                    old_logprobs[row, start : start + len(given)] = torch.tensor(given)
            loss, loss_stats = clipped_policy_loss(
                logprobs, old_logprobs, torch.tensor(sequence_advantages), loss_mask, self.config.clip_ratio
            )
            self.optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.model.parameters(), self.config.max_grad_norm)
            self.optimizer.step()
            self.policy.model.eval()
            self.policy.version += 1
        self.steps += 1
        return {**stats, "loss": float(loss), **loss_stats, "policy_version": self.policy.version}

    def save(self, path: str | Path) -> None:
        torch.save(
            {
                "model": self.policy.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "policy_version": self.policy.version,
                "steps": self.steps,
            },
            path,
        )

    def load(self, path: str | Path) -> None:
        state = load_policy(self.policy, path)
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = int(state["steps"])
