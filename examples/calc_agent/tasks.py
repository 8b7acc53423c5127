"""Arithmetic tasks for the calc agent, and the demonstrations of its warm start."""

from __future__ import annotations

import random
from collections.abc import Collection
from typing import Any

from examples.calc_agent.agent import CALCULATOR
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


# What `otel-lightning train examples/calc_agent/train.yaml` reads (tasks.train, tasks.eval, sft.demonstrations).
TRAIN_STEPS = 50  # steps' worth of training tasks: more than the demo's GRPO steps use
TASKS_PER_STEP = 16


def train_tasks(seed: int = 0) -> list[dict[str, Any]]:
    """Training questions in GRPO-step order (the config keeps their order: step k gets the k-th 16)."""
    return [
        {"task_id": task_id, "input": task}
        for step in range(TRAIN_STEPS)
        for task_id, task in make_tasks(TASKS_PER_STEP, seed=seed * 1000 + step, prefix=f"train-{step}")
    ]


def eval_tasks(seed: int = 0, count: int = 100) -> list[dict[str, Any]]:
    """Held-out questions: none is among the demonstrations' or the training tasks' questions."""
    trained_on = {task["question"] for _, task in make_tasks(DEMONSTRATIONS, seed, "demo")}
    trained_on |= {record["input"]["question"] for record in train_tasks(seed)}
    tasks = heldout_tasks(count, seed=10_000 + seed, prefix="heldout", trained_on=trained_on)
    return [{"task_id": task_id, "input": task} for task_id, task in tasks]


DEMONSTRATIONS = 4000


def demonstration_conversations(seed: int = 0, count: int = DEMONSTRATIONS) -> list[dict[str, Any]]:
    """`demonstrations` as conversations in the OpenAI fine-tuning layout, which `train` re-encodes with the
    student's own chat template. A guess and the turn after a calculator reply are two conversations (the
    call before that reply is context, `"weight": 0`), so the first turns keep their mix."""
    rng = random.Random(seed)
    conversations = []
    tools = [CALCULATOR]  # the agent's own tool definition
    for _, task in make_tasks(count, seed, "demo"):
        user = {"role": "user", "content": task["question"]}
        expression = task["question"].removeprefix("What is ").removesuffix("?")
        call = {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"type": "function", "function": {"name": "calculator", "arguments": {"expression": expression}}}
            ],
        }
        after_tool = [{"role": "tool", "content": task["answer"]}, {"role": "assistant", "content": task["answer"]}]
        if rng.random() < TOOL_SHARE:
            conversations.append({"messages": [user, call, *after_tool], "tools": tools})
        else:
            guess = {"role": "assistant", "content": guess_for(task["answer"], rng)}
            conversations.append({"messages": [user, guess], "tools": tools})
            conversations.append({"messages": [user, {**call, "weight": 0}, *after_tool], "tools": tools})
    return conversations
