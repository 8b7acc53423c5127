"""LightningAgentLoop: verl's agent-loop extension point, backed by otel-lightning.

For each dataset row verl asks for, `run()` submits a task to the collector's pool (with the OpenAI
base URL of one of verl's own vLLM replicas), an unmodified agent run by `otel-lightning worker`
does the rollout, and the rollout's transitions come back over the collector's gRPC stream. They
are returned as `AgentLoopOutput`s with the exact token ids and logprobs vLLM produced, the reward
the agent emitted, and a mask of 0 over tokens the model did not generate. verl's own GRPO (grouped
by `uid`) then trains on what the agent did.

Registered through `actor_rollout_ref.rollout.agent.agent_loop_config_path`, a YAML list such as::

    - name: otel_lightning
      _target_: otel_lightning.verl.agent_loop.LightningAgentLoop
      collector: 127.0.0.1:4317

Options (keys beside `_target_`):
    collector: the collector's gRPC address (required).
    openai_base_url: the model server for the agent; default: one of verl's vLLM replicas, chosen by
        the row's uid so the n samples of a prompt share a prefix cache.
    input_key: the dataset field given to the agent as its task input, dotted for nested fields
        (default "extra_info"; falls back to "raw_prompt").
    outputs: "per_call" (default; one output per LLM call, verl's v1 multi-trajectory path) or
        "merged" (consecutive calls of one conversation in one output, tool tokens masked 0; a rollout
        that is one conversation gives a single output, as verl's v0 trainer needs).
    failed_rollouts: "raise" (default; verl drops the sample's group) or "penalty" (train on the
        failed rollout with reward `failure_penalty`).
    timeout_s: how long to wait for a rollout (default 600).
    retokenize: false (default) or true (the example config reads LIGHTNING_RETOKENIZE). A step whose
        spans carried no token ids (`token_ids: absent`: the agent's instrumentation records none and no
        model gateway saw the call) fails its rollout with an error naming the fixes; with true, its ids
        are re-encoded from its messages with the policy's tokenizer (verl's, through its chat template),
        without logprobs, and counted: the output's `lightning_retokenized_steps`, its metrics'
        `retokenized_steps`, and the log.
A rollout without a reward span gets reward_score None, so verl's configured reward function scores it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopMetrics, AgentLoopOutput

from otel_lightning.train.hf_chat import HFChatTokenizer
from otel_lightning.train.retokenize import RetokenizeError, retokenize
from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning.verl.outputs import MERGED, PER_CALL, MissingTokenIdsError, Trajectory, trajectories
from otel_lightning.verl.rollout_waiter import FinishedRollout, RolloutFailedError, RolloutWaiter

logger = logging.getLogger(__name__)

SUCCEEDED = "succeeded"


class LightningAgentLoopMetrics(AgentLoopMetrics):
    """verl's per-output metrics (`meta_info["metrics"]`), plus how many steps were re-encoded."""

    retokenized_steps: int = 0


# Steps re-encoded, and rollouts failed for steps without token ids, by this process's agent loops
# (verl makes a loop per sample): for the log.
_counts = {"retokenized_steps": 0, "rollouts_failed_without_token_ids": 0}


def _plain(value: Any) -> Any:
    """Dataset values (numpy arrays and scalars inside) as JSON-ready Python values."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _flag(name: str, value: bool | str) -> bool:
    """A boolean option from YAML, or from `${oc.env:...}` (a string there)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "1", "yes", "on", "false", "0", "no", "off", ""):
        raise ValueError(f"{name} must be true or false, not {value!r}")
    return text in ("true", "1", "yes", "on")


class LightningAgentLoop(AgentLoopBase):
    def __init__(
        self,
        *args: Any,
        collector: str,
        openai_base_url: str | None = None,
        input_key: str = "extra_info",
        outputs: str = PER_CALL,
        failed_rollouts: str = "raise",
        failure_penalty: float = 0.0,
        timeout_s: float = 600.0,
        retokenize: bool | str = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if outputs not in (PER_CALL, MERGED):
            raise ValueError(f"outputs must be {PER_CALL!r} or {MERGED!r}, not {outputs!r}")
        if failed_rollouts not in ("raise", "penalty"):
            raise ValueError(f"failed_rollouts must be 'raise' or 'penalty', not {failed_rollouts!r}")
        self.collector = collector
        self.openai_base_url = openai_base_url
        self.input_key = input_key
        self.outputs = outputs
        self.failed_rollouts = failed_rollouts
        self.failure_penalty = failure_penalty
        self.timeout_s = timeout_s
        self.retokenize = _flag("retokenize", retokenize)
        self._chat_tokenizer: HFChatTokenizer | None = None

    async def run(self, sampling_params: dict[str, Any], **kwargs: Any) -> AgentLoopOutput | list[AgentLoopOutput]:
        # The agent picks its own sampling settings; verl's sampling_params do not reach it.
        started = time.monotonic()
        uid = str(kwargs.get("uid") or uuid.uuid4().hex)
        task_id = f"verl/{uid}/{kwargs.get('session_id', 0)}/{uuid.uuid4().hex[:12]}"
        waiter = RolloutWaiter.shared(self.collector)
        await waiter.expect(task_id)
        base_url = self.openai_base_url or await self._replica_url(uid)
        task_input = self._task_input(kwargs)
        # verl's replicas serve the weights of the training step the row was drawn for (v1 trainer).
        step = _plain(kwargs.get("global_steps"))
        version = "" if step is None else str(step)
        await asyncio.to_thread(waiter.pool.submit, [(task_id, task_input)], 1, base_url, version)
        finished = await waiter.wait(task_id, self.timeout_s)
        return self._to_outputs(finished, time.monotonic() - started)

    def _task_input(self, row: dict[str, Any]) -> Any:
        value: Any = row
        for part in self.input_key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if value is None:
            value = row.get("raw_prompt")
        if value is None:
            raise KeyError(f"the dataset row has neither {self.input_key!r} nor 'raw_prompt' to give the agent")
        return _plain(value)

    async def _replica_url(self, uid: str) -> str:
        balancer = getattr(self.server_manager, "_load_balancer", None)
        if balancer is None:
            raise RuntimeError("no openai_base_url configured and verl's server manager has no replicas to offer")
        servers = sorted(await balancer.get_all_servers.remote())
        if not servers:
            raise RuntimeError("verl reports no vLLM replicas")
        index = int(hashlib.sha1(uid.encode()).hexdigest(), 16) % len(servers)
        return f"http://{servers[index]}/v1"

    def _to_outputs(self, finished: FinishedRollout, elapsed_s: float) -> AgentLoopOutput | list[AgentLoopOutput]:
        reward: float | None = finished.total_reward if finished.has_reward else None
        if finished.status != SUCCEEDED:
            message = f"rollout {finished.rollout_id} of task {finished.task_id} ended {finished.status}"
            detail = f"{message}: {finished.error_type}: {finished.error_message}".rstrip(": ")
            if self.failed_rollouts == "raise" or not finished.transitions:
                raise RolloutFailedError(detail)
            logger.info("%s; training on it with reward %s", detail, self.failure_penalty)
            reward = self.failure_penalty
        try:
            pieces = trajectories(finished.transitions, self.outputs, self._rebuild if self.retokenize else None)
        except MissingTokenIdsError as error:
            _counts["rollouts_failed_without_token_ids"] += 1
            so_far = _counts["rollouts_failed_without_token_ids"]
            logger.warning("%s (%d such rollouts in this process so far)", error, so_far)
            raise
        if not pieces:
            raise RolloutFailedError(f"rollout {finished.rollout_id} of task {finished.task_id} made no LLM call")
        retokenized = sum(len(piece.retokenized_steps) for piece in pieces)
        if retokenized:
            _counts["retokenized_steps"] += retokenized
            logger.info(
                "rollout %s: %d of %d steps had no token ids and were retokenised (%d in this process so far)",
                finished.rollout_id,
                retokenized,
                len(finished.transitions),
                _counts["retokenized_steps"],
            )
        outputs = [
            self._output(
                piece,
                reward,
                finished,
                LightningAgentLoopMetrics(generate_sequences=elapsed_s, retokenized_steps=len(piece.retokenized_steps)),
            )
            for piece in pieces
        ]
        return outputs[0] if len(outputs) == 1 else outputs

    def _rebuild(self, transition: pb.Transition) -> tuple[list[int], list[int]]:
        """A step's (prompt ids, response ids) re-encoded with verl's tokenizer (retokenize.py)."""
        if self._chat_tokenizer is None:
            self._chat_tokenizer = HFChatTokenizer(self.tokenizer)
        try:
            return retokenize(self._chat_tokenizer, transition.state_json, transition.action_json)
        except RetokenizeError as error:
            raise MissingTokenIdsError(
                f"transition {transition.step} of rollout {transition.rollout_id} has no token ids and cannot be"
                f" retokenised: {error}"
            ) from error

    def _output(
        self, piece: Trajectory, reward: float | None, finished: FinishedRollout, metrics: AgentLoopMetrics
    ) -> AgentLoopOutput:
        limit = self.rollout_config.response_length
        if len(piece.response_ids) > limit:
            logger.warning("response of %d tokens cut to response_length=%d", len(piece.response_ids), limit)
        logprobs = piece.response_logprobs[:limit] if piece.response_logprobs is not None else None
        return AgentLoopOutput(
            prompt_ids=self._cap_text_prompt_length(piece.prompt_ids),
            response_ids=piece.response_ids[:limit],
            response_mask=piece.response_mask[:limit],
            response_logprobs=logprobs,
            reward_score=reward,
            num_turns=piece.num_turns,
            metrics=metrics,
            extra_fields={
                "lightning_rollout_id": finished.rollout_id,
                "lightning_task_id": finished.task_id,
                "lightning_steps": piece.steps,
                "lightning_policy_versions": piece.policy_versions,
                "lightning_retokenized_steps": piece.retokenized_steps,
            },
        )
