"""The node agent's reward, for `otel-lightning worker --reward examples.node_agent.rewards:correct`.

Called as correct(task_input, output) after each rollout, with the task as submitted and what the
agent printed; the agent itself knows nothing of rewards."""

from __future__ import annotations

from typing import Any


def correct(task_input: Any, output: str) -> float:
    expected = task_input.get("answer") if isinstance(task_input, dict) else None
    if expected is None:
        raise ValueError(f"the task has no 'answer' to check the output against: {task_input!r}")
    return float(str(expected) in output)
