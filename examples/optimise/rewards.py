"""The calc agent's reward as `otel-lightning eval --reward examples.optimise.rewards:correct` calls it."""

from __future__ import annotations

import re
from typing import Any


def correct(task: dict[str, Any], output: str) -> float:
    """1 when the last number in the agent's answer (its stdout) is the expected one: the tiny policy
    answers "42", a chattier model "The answer is 42."."""
    numbers = re.findall(r"-?\d+(?:\.\d+)?", output)
    return float(bool(numbers) and numbers[-1] == task["answer"])
