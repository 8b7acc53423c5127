"""An AutoGen team: a triage agent hands arithmetic to a math agent that has a calculator.

Plain AutoGen 0.7 code (`AssistantAgent`s in a `Swarm`, a handoff, a tool) plus a reward; no
tracing code. Run it with our instrumentors:

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=unused opentelemetry-instrument \\
        python examples/autogen_team/agent.py '{"question": "What is 17+25?", "answer": "42"}'

or let `otel-lightning worker --collector ADDR -- python examples/autogen_team/agent.py` feed it
tasks (on stdin). The model is whatever OPENAI_BASE_URL serves, through AutoGen's OpenAI client.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination, TextMentionTermination
from autogen_agentchat.messages import TextMessage
from autogen_agentchat.teams import Swarm
from autogen_core.models import ChatCompletionClient, ModelFamily, ModelInfo
from autogen_ext.models.openai import OpenAIChatCompletionClient

import otel_lightning as ol
from otel_lightning.testing import arithmetic

calculator = arithmetic.calculator


@ol.reward
def correct(answer: str, expected: str) -> float:
    return float(expected in answer)


def build_team(model: ChatCompletionClient, stream: bool = False) -> Swarm:
    triage = AssistantAgent(
        "triage",
        model,
        handoffs=["math"],
        system_message="Hand arithmetic to the math agent.",
        model_client_stream=stream,
    )
    math = AssistantAgent(
        "math",
        model,
        tools=[calculator],
        reflect_on_tool_use=True,
        system_message="Answer arithmetic with the calculator; say 'The answer is ...'.",
        model_client_stream=stream,
    )
    done = TextMentionTermination("The answer is") | MaxMessageTermination(8)
    return Swarm([triage, math], termination_condition=done)


def default_model() -> OpenAIChatCompletionClient:
    # OPENAI_BASE_URL / OPENAI_API_KEY from the environment; the policy is no OpenAI model, so say what it can do.
    info = ModelInfo(
        vision=False, function_calling=True, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False
    )
    return OpenAIChatCompletionClient(
        model=os.environ.get("AGENT_MODEL", "policy"),
        base_url=os.environ.get("OPENAI_BASE_URL"),
        model_info=info,
        max_retries=0,
        parallel_tool_calls=False,
    )


async def solve(task: dict[str, Any], model: ChatCompletionClient | None = None) -> str:
    model = model or default_model()
    try:
        result = await build_team(model).run(task=task["question"])
    finally:
        await model.close()
    texts = [m.content for m in result.messages if isinstance(m, TextMessage) and m.source != "user"]
    answer = texts[-1] if texts else ""
    correct(answer, task["answer"])
    return answer


if __name__ == "__main__":
    task = json.loads(sys.argv[1]) if len(sys.argv) > 1 else json.load(sys.stdin)
    print(asyncio.run(solve(task)))
