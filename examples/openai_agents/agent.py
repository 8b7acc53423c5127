"""A two-agent OpenAI Agents SDK app: a triage agent hands arithmetic to a math agent with a calculator.

Plain Agents SDK code plus a reward; no tracing code. Run it with our instrumentors:

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=unused \\
        opentelemetry-instrument python examples/openai_agents/agent.py '{"question": "What is 17+25?", "answer": "42"}'

or let `otel-lightning worker --collector ADDR -- python examples/openai_agents/agent.py` feed it
tasks (on stdin). The model is whatever OPENAI_BASE_URL serves, called through chat completions.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool
from openai import AsyncOpenAI

import otel_lightning as ol
from otel_lightning.testing import arithmetic

calculator = function_tool(arithmetic.calculator)


@ol.reward
def correct(answer: str, expected: str) -> float:
    return float(expected in answer)


def build_agents(client: AsyncOpenAI) -> Agent:
    model = OpenAIChatCompletionsModel(model=os.environ.get("AGENT_MODEL", "policy"), openai_client=client)
    math = Agent(name="Math", instructions="Answer arithmetic with the calculator.", tools=[calculator], model=model)
    return Agent(name="Triage", instructions="Hand arithmetic to the Math agent.", handoffs=[math], model=model)


async def solve(task: dict[str, Any]) -> str:
    client = AsyncOpenAI(max_retries=0)  # OPENAI_BASE_URL / OPENAI_API_KEY from the environment
    result = await Runner.run(build_agents(client), task["question"], max_turns=6)
    answer = str(result.final_output)
    correct(answer, task["answer"])
    return answer


if __name__ == "__main__":
    task = json.loads(sys.argv[1]) if len(sys.argv) > 1 else json.load(sys.stdin)
    print(asyncio.run(solve(task)))
