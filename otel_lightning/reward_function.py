"""A reward function for unchanged agents: `otel-lightning worker --reward my_rewards:correct`.

After each rollout the worker calls `FUNCTION(task_input, output)` (sync or async; `output` is a
subprocess agent's stdout, or an in-process agent's return value) inside the rollout, and records
what it returns — a number, or a dict of named numbers — as the rollout's reward (a
`lightning.reward` span, as `otel_lightning.emit_reward` makes).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

from otel_lightning.rewards import emit_reward, normalize_reward


class RewardFunctionError(RuntimeError):
    """The reward function raised or returned no usable reward: the rollout is failed, with no reward."""


class RolloutRewardFunction:
    def __init__(self, function: Callable[[Any, Any], Any], name: str | None = None) -> None:
        self.function = function
        self.name = name or getattr(function, "__qualname__", None) or repr(function)

    async def record(self, task_input: Any, output: Any) -> float:
        """Score one rollout and record the reward in the current rollout; returns the total."""
        try:
            if inspect.iscoroutinefunction(self.function):
                value = await self.function(task_input, output)
            else:
                value = await asyncio.to_thread(self.function, task_input, output)
            normalize_reward(value)  # checked before anything is recorded
        except Exception as error:
            raise RewardFunctionError(
                f"reward function {self.name} raised {type(error).__name__}: {error}; the rollout has no reward"
            ) from error
        return emit_reward(value, name=self.name)
