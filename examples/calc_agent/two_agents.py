"""Two agents: a triage agent that may hand an arithmetic question to a math agent, which has a calculator.

Plain OpenAI-client code, like agent.py. Each agent runs in its own `ol.agent_scope` (its turns are
its own transitions) and asks for the model named after itself, so a policy server with a policy
per agent (`train.py --app triage --policy-per-agent`) answers each with its own LoRA adapter.
Either agent may instead answer by itself (usually wrongly): GRPO has to find out that handing off,
then calling the calculator, pays.
"""

from __future__ import annotations

import json
import os
import random
from typing import Any

import otel_lightning as ol
from examples.calc_agent.agent import CALCULATOR, calculator, client, correct
from examples.calc_agent.tasks import guess_for, make_tasks
from otel_lightning.train.tokenizer import ByteChatTokenizer

TRIAGE, MATH = "triage", "math"
# Half, not tasks.py's quarter: a rollout pays only when both agents delegate, and at a quarter each
# (~1 in 16 rollouts) GRPO saw almost no reward in 30 steps (held-out 0.01 -> 0.01).
HANDOFF_SHARE = 0.5
TRANSFER = {
    "type": "function",
    "function": {
        "name": "transfer_to_math",
        "description": "Hand the question to the math agent.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}


def ask(agent: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Any:
    reply = client().chat.completions.create(
        model=agent,  # the policy server's adapter for this agent, when it has one
        messages=messages,
        tools=tools,
        max_tokens=int(os.environ.get("CALC_AGENT_MAX_TOKENS", "24")),
    )
    return reply.choices[0].message


def math_agent(expression: str) -> str:
    with ol.agent_scope(MATH):
        messages: list[dict[str, Any]] = [
            {"role": "system", "content": MATH},
            {"role": "user", "content": f"What is {expression}?"},
        ]
        message = ask(MATH, messages, [CALCULATOR])
        if message.tool_calls:
            call = message.tool_calls[0]
            messages.append(message.model_dump(exclude_none=True))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": calculator(call.function.arguments)})
            message = ask(MATH, messages, [CALCULATOR])
        return message.content or ""


def run(task: dict[str, Any]) -> str:
    with ol.agent_scope(TRIAGE):
        messages = [{"role": "system", "content": TRIAGE}, {"role": "user", "content": task["question"]}]
        message = ask(TRIAGE, messages, [TRANSFER])
    if message.tool_calls:
        try:
            expression = str(json.loads(message.tool_calls[0].function.arguments)["expression"])
        except (ValueError, KeyError, TypeError):
            expression = ""
        answer = math_agent(expression)
    else:
        answer = message.content or ""
    correct(answer, task["answer"])
    return answer


def demonstrations(
    tokenizer: ByteChatTokenizer, count: int, seed: int, handoff_share: float = HANDOFF_SHARE
) -> list[tuple[list[int], list[int]]]:
    """Warm-start demonstrations of both agents: each mostly answers by itself (a near guess), and
    `handoff_share` of the time hands off (triage) or calls the calculator (math); the math agent is
    also shown, for every question, how to answer once the calculator has replied (as in tasks.py)."""
    rng = random.Random(seed)
    examples = []
    for _, task in make_tasks(count, seed, "demo"):
        expression = task["question"].removeprefix("What is ").removesuffix("?")
        for agent, tool in ((TRIAGE, "transfer_to_math"), (MATH, "calculator")):
            prompt = [{"role": "system", "content": agent}, {"role": "user", "content": task["question"]}]
            if rng.random() < handoff_share:
                first = [*tokenizer.encode_tool_call(tool, expression, tool), tokenizer.eos_id]
            else:
                first = [*tokenizer.encode_text(guess_for(task["answer"], rng)), tokenizer.eos_id]
            examples.append((tokenizer.encode_prompt(prompt, tool), first))
        made = {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"function": {"name": "calculator", "arguments": {"expression": expression}}}],
        }
        prompt = [{"role": "system", "content": MATH}, {"role": "user", "content": task["question"]}]
        after = tokenizer.encode_prompt([*prompt, made, {"role": "tool", "content": task["answer"]}], "calculator")
        examples.append((after, [*tokenizer.encode_text(task["answer"]), tokenizer.eos_id]))
    return examples
