"""Arithmetic tasks for the calc agent, and the demonstrations of its warm start."""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import Any

from otel_lightning.train.tokenizer import ByteChatTokenizer

OPERATORS = "+-*"
TOOL_SHARE = 0.25  # of the warm start's first turns that call the calculator


def make_tasks(count: int, seed: int, prefix: str) -> list[tuple[str, dict[str, Any]]]:
    rng = random.Random(seed)
    tasks = []
    for index in range(count):
        a, b, op = rng.randint(0, 99), rng.randint(0, 99), rng.choice(OPERATORS)
        answer = {"+": a + b, "-": a - b, "*": a * b}[op]
        tasks.append((f"{prefix}-{index}", {"question": f"What is {a}{op}{b}?", "answer": str(answer)}))
    return tasks


def heldout_tasks(count: int, seed: int, prefix: str, trained_on: Collection[str]) -> list[tuple[str, dict[str, Any]]]:
    """`count` tasks of the same generator, leaving out questions in `trained_on` (those of the warm start's
    demonstrations and of the GRPO steps): held-out means unseen, not only drawn with another seed."""
    tasks: list[tuple[str, dict[str, Any]]] = []
    drawn = count
    while len(tasks) < count:  # the generator's stream starts the same whatever the count: extend it
        drawn_tasks = make_tasks(drawn, seed, prefix)
        tasks = [(task_id, task) for task_id, task in drawn_tasks if task["question"] not in trained_on]
        drawn += count
    return tasks[:count]


def guess_for(answer: str, rng: random.Random) -> str:
    """An answer given without the calculator: near the right one, right one time in seven."""
    return str(int(answer) + rng.choice((-10, -2, -1, 0, 1, 2, 10)))


def demonstrations(
    tokenizer: ByteChatTokenizer, count: int, seed: int, tool_share: float = TOOL_SHARE
) -> list[tuple[list[int], list[int]]]:
    """Mixed demonstrations. First turns: `tool_share` of them call the calculator, the rest answer
    directly, usually wrongly. Every question also shows the turn after a calculator reply: repeat
    its result. So the warm-started policy can use the tool well but mostly does not: GRPO has to find
    out that calling it pays."""
    rng = random.Random(seed)
    examples = []
    for _, task in make_tasks(count, seed, "demo"):
        user = {"role": "user", "content": task["question"]}
        expression = task["question"].removeprefix("What is ").removesuffix("?")
        if rng.random() < tool_share:
            first = [*tokenizer.encode_tool_call("calculator", expression), tokenizer.eos_id]
        else:
            first = [*tokenizer.encode_text(guess_for(task["answer"], rng)), tokenizer.eos_id]
        examples.append((tokenizer.encode_prompt([user], "calculator"), first))
        call = {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "calculator", "arguments": {"expression": expression}}}],
        }
        prompt = tokenizer.encode_prompt([user, call, {"role": "tool", "content": task["answer"]}], "calculator")
        examples.append((prompt, [*tokenizer.encode_text(task["answer"]), tokenizer.eos_id]))
    return examples
