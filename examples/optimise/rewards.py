"""The calc agent's reward as `otel-lightning eval --reward examples.optimise.rewards:correct` calls it."""

from __future__ import annotations

from typing import Any


def correct(task: dict[str, Any], output: str) -> float:
    """1 when the agent's answer (its stdout) is exactly the expected number."""
    return float(output.strip() == task["answer"])
