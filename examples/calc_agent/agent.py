"""A tool-using OpenAI-client agent: it may call a calculator to answer an arithmetic question.

Plain agent code: an OpenAI client, a tool, a reward. It runs in-process (`run(task)`, what
`otel-lightning worker ... examples.calc_agent.agent:run` calls) or as a command reading the task
from stdin (`otel-lightning worker ... -- python examples/calc_agent/agent.py`).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any

import openai

import otel_lightning as ol
from otel_lightning.testing.arithmetic import evaluate, format_number

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression such as 17+25.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}


def client() -> openai.OpenAI:
    # OPENAI_BASE_URL points at whatever policy server the worker chose, which may change between runs.
    return _client(os.environ.get("OPENAI_BASE_URL"))


@functools.cache
def _client(base_url: str | None) -> openai.OpenAI:
    return openai.OpenAI(api_key=os.environ.get("OPENAI_API_KEY", "unused"), base_url=base_url, max_retries=0)


@ol.reward
def correct(answer: str, expected: str) -> float:
    return float(answer.strip() == expected)


def calculator(arguments: str) -> str:
    try:
        return format_number(evaluate(json.loads(arguments)["expression"]))
    except (ValueError, KeyError, TypeError, json.JSONDecodeError) as error:
        return f"error: {error}"


def ask(messages: list[dict[str, Any]]) -> Any:
    reply = client().chat.completions.create(
        model=os.environ.get("CALC_AGENT_MODEL", "policy"),
        messages=messages,
        tools=[CALCULATOR],
        max_tokens=int(os.environ.get("CALC_AGENT_MAX_TOKENS", "24")),
    )
    return reply.choices[0].message


def run(task: dict[str, Any]) -> str:
    messages: list[dict[str, Any]] = [{"role": "user", "content": task["question"]}]
    message = ask(messages)
    if message.tool_calls:
        call = message.tool_calls[0]
        messages.append(message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": calculator(call.function.arguments)})
        message = ask(messages)
    answer = message.content or ""
    correct(answer, task["answer"])
    return answer


if __name__ == "__main__":
    print(run(json.load(sys.stdin)))
