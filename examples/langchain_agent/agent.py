"""A LangChain app: a supervisor agent hands arithmetic to a math subagent that has a calculator.

Plain LangChain 1.x code (`create_agent`, the subagent called as a tool) plus a reward; no tracing
code. Run it with our instrumentors:

    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=unused opentelemetry-instrument \\
        python examples/langchain_agent/agent.py '{"question": "What is 17+25?", "answer": "42"}'

or let `otel-lightning worker --collector ADDR -- python examples/langchain_agent/agent.py` feed it
tasks (on stdin). The model is whatever OPENAI_BASE_URL serves, through `ChatOpenAI`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

import otel_lightning as ol
from otel_lightning.testing import arithmetic

calculator = tool(arithmetic.calculator)


@ol.reward
def correct(answer: str, expected: str) -> float:
    return float(expected in answer)


def build_agent(model: BaseChatModel) -> Any:
    math = create_agent(model, tools=[calculator], system_prompt="Answer arithmetic with the calculator.", name="math")

    @tool
    def transfer_to_math(request: str) -> str:
        """Ask the math agent an arithmetic question; returns its answer."""
        result = math.invoke({"messages": [{"role": "user", "content": request}]})
        return str(result["messages"][-1].content)

    return create_agent(
        model, tools=[transfer_to_math], system_prompt="Hand arithmetic to the math agent.", name="supervisor"
    )


def default_model() -> ChatOpenAI:
    # OPENAI_BASE_URL / OPENAI_API_KEY from the environment.
    return ChatOpenAI(model=os.environ.get("AGENT_MODEL", "policy"), max_retries=0, temperature=1.0)


def solve(task: dict[str, Any], model: BaseChatModel | None = None) -> str:
    result = build_agent(model or default_model()).invoke({"messages": [{"role": "user", "content": task["question"]}]})
    answer = str(result["messages"][-1].content)
    correct(answer, task["answer"])
    return answer


if __name__ == "__main__":
    task = json.loads(sys.argv[1]) if len(sys.argv) > 1 else json.load(sys.stdin)
    print(solve(task))
