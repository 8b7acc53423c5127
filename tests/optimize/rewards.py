"""Reward functions the optimisation tests name as MODULE:FUNCTION."""

from __future__ import annotations

import re
from typing import Any


def correct(task: dict[str, Any], output: str) -> float:
    """1 when the last number the agent printed is the expected answer."""
    numbers = re.findall(r"-?\d+", output)
    return float(bool(numbers) and numbers[-1] == task["answer"])


def raises_on_seven(task: dict[str, Any], output: str) -> float:
    if "7" in task["question"]:
        raise KeyError("no grader for sevens")
    return correct(task, output)
