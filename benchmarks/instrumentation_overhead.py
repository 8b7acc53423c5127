"""Added time per LLM call and per tool call of the framework instrumentors: ours against no
instrumentation and against the stock OpenInference instrumentor, same process, runs alternating.

OpenAI Agents SDK: one agent answering directly (one LLM call per run), and one calling a
calculator tool (two LLM calls and one tool call per run). The model is the stub policy (with
token ids) behind an in-process transport (httpx MockTransport), so the figures are the
instrumentation's own cost.
Spans go through the real SDK (BatchSpanProcessor) to an exporter that drops them.
(LangChain and AutoGen: not yet instrumented.)

    python benchmarks/instrumentation_overhead.py [--runs 40] [--rounds 15]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import agents
import httpx2
from agents import Agent, OpenAIChatCompletionsModel, Runner, function_tool
from openai import AsyncOpenAI
from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor as OpenInferenceAgents
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import otel_lightning as ol
from otel_lightning.testing.openai_stub import chat_completion
from otel_lightning_instrumentation_openai import OpenAIInstrumentor
from otel_lightning_instrumentation_openai_agents import OpenAIAgentsInstrumentor


class DropExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def answer(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, json=chat_completion(json.loads(request.content)))


@function_tool
def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return "42"


def agents_for(client: AsyncOpenAI) -> dict[str, Agent]:
    model = OpenAIChatCompletionsModel(model="m", openai_client=client)
    return {
        "llm call": Agent(name="Direct", instructions="Answer.", model=model),
        "llm calls + tool call": Agent(name="Math", instructions="Use the tool.", tools=[calculator], model=model),
    }


def per_run_us(agent: Agent, runs: int) -> float:
    async def many() -> None:
        for _ in range(runs):
            await Runner.run(agent, "What is 17+25?")

    began = time.perf_counter()
    asyncio.run(many())
    return (time.perf_counter() - began) / runs * 1e6


def configurations() -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    ours = (OpenAIInstrumentor(), OpenAIAgentsInstrumentor())
    openinference = OpenInferenceAgents()
    return {
        "uninstrumented": (lambda: None, lambda: None),
        "otel-lightning": (
            lambda: [i.instrument() for i in ours],
            lambda: [i.uninstrument() for i in ours],
        ),
        "openinference": (
            lambda: openinference.instrument(exclusive_processor=False),
            openinference.uninstrument,
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=1 << 16))
    trace.set_tracer_provider(provider)
    agents.set_trace_processors([])  # the SDK's own export to OpenAI is not what is measured
    client = AsyncOpenAI(
        api_key="x", base_url="http://model/v1", http_client=httpx2.AsyncClient(transport=httpx2.MockTransport(answer))
    )
    scenarios = agents_for(client)
    setups = configurations()
    timings = {(c, s): [] for c in setups for s in scenarios}
    with ol.rollout(task_id="bench"):
        for agent in scenarios.values():
            per_run_us(agent, 20)  # warm up
        for _ in range(args.rounds):
            for name, (instrument, uninstrument) in setups.items():
                instrument()
                for scenario, agent in scenarios.items():
                    timings[name, scenario].append(per_run_us(agent, args.runs))
                uninstrument()
    median = {key: statistics.median(values) for key, values in timings.items()}
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"OpenAI Agents SDK, median of {args.rounds} rounds of {args.runs} runs (us)")
    print(f"{'':16}{'run A':>10}{'run B':>10}{'added to A':>12}{'added to B':>12}{'added B-A':>11}")
    base_a, base_b = median["uninstrumented", "llm call"], median["uninstrumented", "llm calls + tool call"]
    for name in setups:
        run_a, run_b = median[name, "llm call"], median[name, "llm calls + tool call"]
        added_a, added_b = run_a - base_a, run_b - base_b
        print(f"{name:16}{run_a:10.0f}{run_b:10.0f}{added_a:12.0f}{added_b:12.0f}{added_b - added_a:11.0f}")
    print("run A: one agent, one LLM call; run B: one agent, two LLM calls and a tool call;")
    print("added B-A: the cost of one more LLM call plus one tool call")


if __name__ == "__main__":
    main()
