"""GRPOTrainer: turns completed rollout groups from the transition stream into policy updates."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from otel_lightning.merged_stream import MergedTransitionStream
from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning.train.adapters import (
    LoraSettings,
    adapter_parameters,
    adapter_weights,
    add_adapter,
    set_adapter_weights,
)
from otel_lightning.train.grpo import clipped_policy_loss, grpo_outcome_advantage, kl_penalty, sequence_with_mask
from otel_lightning.train.policy import TorchPolicy
from otel_lightning.train.retokenize import RetokenizeError, retokenize
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
    # Steps whose spans carried no token ids (Transition.token_ids_absent) are left out and counted unless
    # this is on: then they are re-encoded from their messages with the policy's tokenizer (see retokenize.py).
    retokenize: bool = False
    # With a policy per agent: weight of a KL penalty (k3) from each adapter to the frozen base model it sits on.
    # It keeps skills the warm start gave (copying an expression) from drifting while an agent's reward is
    # mostly another agent's noise (two_agents.py); 0 leaves it out.
    kl_to_base: float = 0.0

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


class CollectAbortedError(RuntimeError):
    """Waiting for rollout groups was given up: the reason is the message."""


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

    def collect(
        self, expected: dict[str, int], timeout_s: float, abort: Callable[[], str | None] | None = None
    ) -> dict[str, list[RolloutRecord]]:
        """Rollouts of the expected tasks (task id -> group size), once every group is whole or time is up.

        `abort`, asked about twice a second while waiting, may give a reason to stop: it is raised as
        `CollectAbortedError` (a run whose agent fails every rollout must not wait out the timeout)."""
        deadline = time.monotonic() + timeout_s
        while not all(self._counted(task) >= size for task, size in expected.items()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning("groups incomplete after %.0fs; training on what arrived", timeout_s)
                break
            reason = abort() if abort is not None else None
            if reason:
                raise CollectAbortedError(reason)
            try:
                item = self._events.get(timeout=min(remaining, 0.5))
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


def _read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint GRPOTrainer.save wrote; a missing, damaged or foreign file is an error naming it."""
    try:
        state = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {path} does not exist") from None
    except Exception as error:  # pickle, zip and tensor errors alike
        # torch's own text for a damaged file suggests weights_only=False, which is unsafe and would not help: left out.
        reason = "weights-only load failed" if "Weights only load failed" in str(error) else str(error)
        raise ValueError(
            f"checkpoint {path} cannot be read: damaged, or not a file GRPOTrainer.save wrote"
            f" ({type(error).__name__}: {reason})"
        ) from error
    if not isinstance(state, dict) or not {"model", "policy_version"} <= state.keys():
        raise ValueError(f"checkpoint {path} is not one GRPOTrainer.save wrote (no model weights / policy version)")
    return state


def load_policy(policy: TorchPolicy, path: str | Path) -> dict[str, Any]:
    """Put a checkpoint's weights, adapters and policy version (GRPOTrainer.save) into `policy`; returns it."""
    state = _read_checkpoint(path)
    try:
        with policy.lock:
            missing, unexpected = _load_base_weights(_unwrapped(policy), state["model"])
            if missing or unexpected:
                raise ValueError(f"weights do not fit this model: missing {missing[:3]}, unexpected {unexpected[:3]}")
            for agent, weights in (state.get("adapters") or {}).items():
                set_adapter_weights(policy, agent, weights, LoraSettings(**state.get("lora", {})))
            policy.version = int(state["policy_version"])
    except (RuntimeError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"checkpoint {path} does not fit this policy: {error}") from error
    return state


def _unwrapped(policy: TorchPolicy) -> torch.nn.Module:
    """The transformers model under peft's wrapper (its LoRA layers still inside)."""
    return policy.model.get_base_model() if hasattr(policy.model, "get_base_model") else policy.model


def _base_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The base model's weights under their own names, without LoRA layers (what a plain model loads)."""
    return {key.replace(".base_layer.", "."): value for key, value in model.state_dict().items() if ".lora_" not in key}


def _load_base_weights(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    wrapped = {key.replace(".base_layer.", "."): key for key in model.state_dict() if ".lora_" not in key}
    missing = [key for key in wrapped if key not in weights]
    unexpected = [key for key in weights if key not in wrapped]
    model.load_state_dict({wrapped[key]: value for key, value in weights.items() if key in wrapped}, strict=False)
    return missing, unexpected


@dataclass
class _Batch:
    """The sequences of one update: prompt + response ids, loss masks, advantages, sampling logprobs."""

    sequences: list[list[int]] = field(default_factory=list)
    masks: list[list[int]] = field(default_factory=list)
    advantages: list[float] = field(default_factory=list)
    old: list[list[float] | None] = field(default_factory=list)


class GRPOTrainer:
    """GRPO on completed rollout groups. With `policy_per_agent` each agent's transitions update only
    that agent's LoRA adapter (made on first sight; the base model stays frozen)."""

    def __init__(
        self, policy: TorchPolicy, config: TrainerConfig | None = None, *, policy_per_agent: bool = False
    ) -> None:
        self.policy = policy
        self.config = config or TrainerConfig()
        if self.config.failed_rollouts not in ("drop", "penalty"):
            raise ValueError("failed_rollouts must be 'drop' or 'penalty'")
        unknown = {action for action in self.config.status_policy.values() if action not in ACTIONS}
        if unknown:
            raise ValueError(f"status_policy actions must be among {ACTIONS}, not {sorted(unknown)}")
        self.policy_per_agent = policy_per_agent or bool(policy.adapters)
        if self.config.kl_to_base and not self.policy_per_agent:
            raise ValueError("kl_to_base needs a policy per agent: its reference is the frozen base under the adapters")
        # One optimizer for the whole model, or one per agent's adapter.
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        if not self.policy_per_agent:
            self.optimizers[""] = torch.optim.AdamW(policy.model.parameters(), lr=self.config.lr)
        self.steps = 0
        self._warned_without_token_ids = False

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        return self.optimizers[""]

    def _optimizer_for(self, agent: str) -> torch.optim.Optimizer:
        if agent not in self.optimizers:
            add_adapter(self.policy, agent)
            self.optimizers[agent] = torch.optim.AdamW(adapter_parameters(self.policy, agent), lr=self.config.lr)
        return self.optimizers[agent]

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
        """One policy update on the given groups; bumps the policy version. Returns statistics: rollouts by
        status, reward mean/std (overall and per agent), tokens, sequences, loss, KL, clip fraction."""
        started = time.perf_counter()
        records, rewards, group_ids = self._rewards(groups)
        all_records = [r for members in groups.values() for r in members]
        stats: dict[str, Any] = {"rollouts": len(all_records), "dropped": len(all_records) - len(records)}
        stats.update(rollout_stats(all_records))
        if not records:
            return {**stats, "sequences": 0, "loss": 0.0}
        advantages = grpo_outcome_advantage(torch.tensor(rewards), torch.tensor(group_ids))
        batches: dict[str, _Batch] = {}
        for record, advantage in zip(records, advantages.tolist(), strict=True):
            if advantage == 0.0:
                continue  # a group whose rollouts all scored the same carries no signal
            for transition in record.transitions:
                prompt_ids, response_ids = list(transition.prompt_token_ids), list(transition.response_token_ids)
                if not response_ids:
                    rebuilt = self._retokenized(transition, stats)
                    if rebuilt is None:
                        continue
                    prompt_ids, response_ids = rebuilt
                batch = batches.setdefault(transition.agent if self.policy_per_agent else "", _Batch())
                ids, mask = sequence_with_mask(prompt_ids, response_ids)
                batch.sequences.append(ids)
                batch.masks.append(mask)
                batch.advantages.append(advantage)
                logprobs = list(transition.response_logprobs)
                batch.old.append(logprobs if len(logprobs) == len(response_ids) else None)
        stats["sequences"] = sum(len(batch.sequences) for batch in batches.values())
        if not batches:
            return {**stats, "loss": 0.0}
        updates: dict[str, dict[str, float]] = {}
        with self.policy.lock:
            for agent, batch in sorted(batches.items()):
                updates[agent] = self._update(agent, batch)
            self.policy.model.eval()
            self.policy.version += 1
        self.steps += 1
        tokens = sum(stat["tokens"] for stat in updates.values())
        for key in ("loss", "clip_fraction", "approx_kl"):  # token-weighted over the agents' updates
            stats[key] = sum(stat[key] * stat["tokens"] for stat in updates.values()) / max(tokens, 1)
        if self.policy_per_agent:
            for agent, stat in updates.items():
                stats.setdefault("agents", {}).setdefault(agent, {}).update(
                    {key: stat[key] for key in ("loss", "approx_kl", "clip_fraction", "kl_to_base") if key in stat}
                )
        return {**stats, "update_s": time.perf_counter() - started, "policy_version": self.policy.version}

    def _retokenized(self, transition: pb.Transition, stats: dict[str, Any]) -> tuple[list[int], list[int]] | None:
        """(prompt ids, response ids) re-encoded for a step without token ids when `retokenize` is on, else
        None; either way the step is counted in `stats` (never left out silently)."""
        if not self.config.retokenize:
            stats["skipped_without_token_ids"] = stats.get("skipped_without_token_ids", 0) + 1
            if not self._warned_without_token_ids:
                self._warned_without_token_ids = True
                logger.warning(
                    "steps without token ids are left out of training (first: rollout %s step %s); put the model"
                    " gateway in front of the model server (the worker does by default) or train with --retokenize",
                    transition.rollout_id,
                    transition.step,
                )
            return None
        try:
            ids = retokenize(self.policy.tokenizer, transition.state_json, transition.action_json)
        except RetokenizeError as error:
            stats["skipped_without_token_ids"] = stats.get("skipped_without_token_ids", 0) + 1
            logger.warning("rollout %s step %s not retokenised: %s", transition.rollout_id, transition.step, error)
            return None
        stats["retokenized"] = stats.get("retokenized", 0) + 1
        return ids

    def _update(self, agent: str, batch: _Batch) -> dict[str, float]:
        """One optimizer step of the whole model, or of `agent`'s adapter only."""
        optimizer = self.optimizers[""] if not self.policy_per_agent else self._optimizer_for(agent)
        model = self.policy.model
        if self.policy_per_agent:
            model.set_adapter(self.policy.adapters[agent])  # only this adapter is in the graph and trainable
        model.train()
        ids, attention = pad_batch(batch.sequences, self.policy.tokenizer.pad_id)
        logprobs = token_logprobs(model, ids, attention)
        loss_mask = pad_batch(batch.masks, 0)[0][:, 1:].float().to(logprobs.device)
        old_logprobs = logprobs.detach().clone()
        for row, given in enumerate(batch.old):
            if given is not None:
                start = int(batch.masks[row].index(1)) - 1
                old_logprobs[row, start : start + len(given)] = torch.tensor(given)
        advantages = torch.tensor(batch.advantages, device=logprobs.device)
        loss, loss_stats = clipped_policy_loss(logprobs, old_logprobs, advantages, loss_mask, self.config.clip_ratio)
        if self.policy_per_agent and self.config.kl_to_base:
            with torch.no_grad(), model.disable_adapter():  # the frozen base: the reference, at no extra memory
                base_logprobs = token_logprobs(model, ids, attention)
            kl = kl_penalty(logprobs, base_logprobs, loss_mask)
            loss = loss + self.config.kl_to_base * kl
            loss_stats["kl_to_base"] = float(kl.detach())
        optimizer.zero_grad()
        loss.backward()
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        torch.nn.utils.clip_grad_norm_(parameters, self.config.max_grad_norm)
        optimizer.step()
        return {"loss": loss.item(), **loss_stats, "tokens": float(loss_mask.sum())}

    def save(self, path: str | Path) -> None:
        """Weights (the base model's under its own names; each agent's adapter apart), optimizers, version."""
        with self.policy.lock:
            state: dict[str, Any] = {
                "model": _base_weights(_unwrapped(self.policy)),
                "policy_version": self.policy.version,
                "steps": self.steps,
            }
            if self.policy.adapters:
                state["adapters"] = {agent: adapter_weights(self.policy, agent) for agent in self.policy.adapters}
                state["lora"] = asdict(self.policy.lora_settings or LoraSettings())
                state["optimizers"] = {agent: o.state_dict() for agent, o in self.optimizers.items()}
            else:
                state["optimizer"] = self.optimizers[""].state_dict()
        torch.save(state, path)

    def load(self, path: str | Path) -> None:
        state = load_policy(self.policy, path)
        if state.get("adapters"):
            self.policy_per_agent = True
            for agent, optimizer_state in (state.get("optimizers") or {}).items():
                self._optimizer_for(agent).load_state_dict(optimizer_state)
        elif "optimizer" in state and "" in self.optimizers:
            self.optimizers[""].load_state_dict(state["optimizer"])
        self.steps = int(state.get("steps", 0))


def rollout_stats(records: list[RolloutRecord]) -> dict[str, Any]:
    """Rollouts by status; reward mean/std of succeeded ones (others count 0 in the mean, as before);
    per agent: the mean of its transitions' rewards in each rollout it took part in; prompt/response tokens."""
    statuses: dict[str, int] = {}
    for record in records:
        statuses[record.status] = statuses.get(record.status, 0) + 1
    rewards = [record.reward if record.status == SUCCEEDED else 0.0 for record in records]
    per_agent: dict[str, list[float]] = {}
    prompt_tokens = response_tokens = 0
    for record in records:
        by_agent: dict[str, list[float]] = {}
        for transition in record.transitions:
            by_agent.setdefault(transition.agent or "default", []).append(transition.reward)
            prompt_tokens += len(transition.prompt_token_ids)
            response_tokens += len(transition.response_token_ids)
        for agent, values in by_agent.items():
            per_agent.setdefault(agent, []).append(sum(values) / len(values))
    return {
        "statuses": statuses,
        "mean_reward": sum(rewards) / max(len(records), 1),
        "reward_std": _std(rewards),
        "agents": {
            agent: {"reward_mean": sum(values) / len(values), "reward_std": _std(values), "rollouts": len(values)}
            for agent, values in sorted(per_agent.items())
        },
        "prompt_tokens": prompt_tokens,
        "response_tokens": response_tokens,
    }


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return (sum((value - mean) ** 2 for value in values) / (len(values) - 1)) ** 0.5
