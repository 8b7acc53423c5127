"""An in-process Agents SDK agent for `otel-lightning worker tests.train.inprocess_sdk_agent:run` (its test:
tests/train/test_worker_agents_sdk.py). The SDK's default model, a tool, nothing about tracing."""

from __future__ import annotations

from agents import Agent, Runner, function_tool
from agents.tracing import processors

from otel_lightning.testing.arithmetic import calculator as evaluate


@function_tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return evaluate(expression)


async def run(question: str) -> str:
    agent = Agent(name="Math", instructions="Use the calculator.", tools=[calculator], model="stub")
    answer = str((await Runner.run(agent, question, max_turns=4)).final_output)
    vendor = processors.default_processor()
    return f"{answer}\nvendor queue: {vendor._queue.qsize()} thread: {vendor._worker_thread is not None}"
