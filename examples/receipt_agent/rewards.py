"""The receipt agent's reward, run by the worker after each rollout: 1 when the last number printed is the total."""

import re


def total_is_right(task_input: dict, output: str, task: dict) -> float:
    # `task` is the whole line of tasks.jsonl: its `expected` is kept out of the agent's input.
    numbers = re.findall(r"-?\d+(?:\.\d+)?", output)
    return float(bool(numbers) and float(numbers[-1]) == float(task["expected"]))
