"""The receipt agent's reward, run by the worker after each rollout: 1 when the printed total is right."""


def total_is_right(task_input: dict, output: str, task: dict) -> float:
    # `task` is the whole line of tasks.jsonl: its `expected` is kept out of the agent's input.
    return float(output.strip() == str(task["expected"]))
