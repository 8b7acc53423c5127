"""Added time per LLM call and per tool call of the framework instrumentors: ours against no
instrumentation and against the stock OpenInference instrumentor, same process, runs alternating.

For each framework (OpenAI Agents SDK, LangChain, AutoGen), two apps over the same model client:
run A, one agent answering directly (one LLM call); run B, one agent calling a calculator tool
(two LLM calls and one tool call). The model is the stub policy (with token ids) behind an
in-process transport (httpx MockTransport), so the figures are the instrumentation's own cost.
Per LLM call = added to A; per tool call = added to B minus two LLM calls. Spans go through the
real SDK (BatchSpanProcessor) to an exporter that drops them. "otel-lightning" is our OpenAI
instrumentor plus the framework's; "openinference" is OpenInference's framework instrumentor alone.

    python benchmarks/instrumentation_overhead.py [--runs 30] [--rounds 11] [--frameworks agents langchain autogen]
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
from dataclasses import dataclass
from typing import Any

import httpx2
from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import otel_lightning as ol
from otel_lightning.testing.openai_stub import chat_completion
from otel_lightning_instrumentation_openai import OpenAIInstrumentor

QUESTION = "What is 17+25?"


class DropExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def answer(request: httpx2.Request) -> httpx2.Response:
    # Token ids on every answer (the stub is vLLM-like: only when asked), as the docstring says.
    return httpx2.Response(200, json=chat_completion(json.loads(request.content), always_token_ids=True))


def calculator(expression: str) -> str:
    """Evaluate an arithmetic expression."""
    return "42"


@dataclass
class Framework:
    name: str
    run_a: Callable[[], Any]  # one LLM call
    run_b: Callable[[], Any]  # two LLM calls and a tool call
    ours: BaseInstrumentor
    openinference: BaseInstrumentor


def agents_sdk() -> Framework:
    import agents
    from openai import AsyncOpenAI
    from openinference.instrumentation.openai_agents import OpenAIAgentsInstrumentor as OpenInference

    from otel_lightning_instrumentation_openai_agents import OpenAIAgentsInstrumentor

    agents.set_trace_processors([])  # the SDK's own export to OpenAI is not what is measured
    client = AsyncOpenAI(api_key="x", base_url="http://model/v1", http_client=httpx2.AsyncClient(transport=_mock()))
    model = agents.OpenAIChatCompletionsModel(model="m", openai_client=client)
    direct = agents.Agent(name="Direct", instructions="Answer.", model=model)
    tools = [agents.function_tool(calculator)]
    math = agents.Agent(name="Math", instructions="Use the tool.", tools=tools, model=model)

    class AlongsideOthers(OpenInference):  # the SDK's other processors stay, as ours leaves them
        def _instrument(self, **kwargs: Any) -> None:
            super()._instrument(exclusive_processor=False, **kwargs)

    return Framework(
        "OpenAI Agents SDK",
        lambda: asyncio.run(agents.Runner.run(direct, QUESTION)),
        lambda: asyncio.run(agents.Runner.run(math, QUESTION)),
        OpenAIAgentsInstrumentor(),
        AlongsideOthers(),
    )


def langchain() -> Framework:
    from langchain.agents import create_agent
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from openinference.instrumentation.langchain import LangChainInstrumentor as OpenInference

    from otel_lightning_instrumentation_langchain import LangChainInstrumentor

    model = ChatOpenAI(model="m", api_key="x", base_url="http://model/v1", http_client=httpx2.Client(transport=_mock()))
    direct = create_agent(model, tools=[], name="direct")
    math = create_agent(model, tools=[tool(calculator)], name="math")
    question = {"messages": [{"role": "user", "content": QUESTION}]}
    return Framework(
        "LangChain",
        lambda: direct.invoke(question),
        lambda: math.invoke(question),
        LangChainInstrumentor(),
        OpenInference(),
    )


def autogen() -> Framework:
    from autogen_agentchat.agents import AssistantAgent
    from autogen_core.models import ModelFamily, ModelInfo
    from autogen_ext.models.openai import OpenAIChatCompletionClient
    from openinference.instrumentation.autogen_agentchat import AutogenAgentChatInstrumentor as OpenInference

    from otel_lightning_instrumentation_autogen import AutoGenInstrumentor

    info = ModelInfo(
        vision=False, function_calling=True, json_output=False, family=ModelFamily.UNKNOWN, structured_output=False
    )
    http = httpx2.AsyncClient(transport=_mock())
    client = OpenAIChatCompletionClient(
        model="m", api_key="x", base_url="http://model/v1", model_info=info, http_client=http
    )

    def run(tools: list, reflect: bool) -> Any:
        agent = AssistantAgent("math", client, tools=tools, reflect_on_tool_use=reflect)  # fresh context each run
        return asyncio.run(agent.run(task=QUESTION))

    return Framework(
        "AutoGen", lambda: run([], False), lambda: run([calculator], True), AutoGenInstrumentor(), OpenInference()
    )


def _mock() -> httpx2.MockTransport:
    return httpx2.MockTransport(answer)


FRAMEWORKS = {"agents": agents_sdk, "langchain": langchain, "autogen": autogen}


def per_run_us(run: Callable[[], Any], runs: int) -> float:
    began = time.perf_counter()
    for _ in range(runs):
        run()
    return (time.perf_counter() - began) / runs * 1e6


def measure(framework: Framework, runs: int, rounds: int) -> dict[str, dict[str, float]]:
    openai_instrumentor = OpenAIInstrumentor()
    setups: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "uninstrumented": (lambda: None, lambda: None),
        "otel-lightning": (
            lambda: (openai_instrumentor.instrument(), framework.ours.instrument()),
            lambda: (framework.ours.uninstrument(), openai_instrumentor.uninstrument()),
        ),
        "openinference": (framework.openinference.instrument, framework.openinference.uninstrument),
    }
    timings: dict[tuple[str, str], list[float]] = {(s, r): [] for s in setups for r in ("A", "B")}
    with ol.rollout(task_id="bench"):
        per_run_us(framework.run_a, 5), per_run_us(framework.run_b, 5)  # warm up
        for _ in range(rounds):
            for name, (instrument, uninstrument) in setups.items():
                instrument()
                timings[name, "A"].append(per_run_us(framework.run_a, runs))
                timings[name, "B"].append(per_run_us(framework.run_b, runs))
                uninstrument()
    median = {key: statistics.median(values) for key, values in timings.items()}
    return {name: {run: median[name, run] for run in ("A", "B")} for name in setups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--frameworks", nargs="+", choices=sorted(FRAMEWORKS), default=list(FRAMEWORKS))
    parser.add_argument("--json", action="store_true", help="per framework and configuration: added per LLM call")
    args = parser.parse_args()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=1 << 16))
    trace.set_tracer_provider(provider)
    if not args.json:
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
        print(f"medians of {args.rounds} rounds of {args.runs} runs, microseconds")
        print("| framework | configuration | run A | run B | per LLM call | per tool call |")
        print("|---|---|---:|---:|---:|---:|")
    per_llm_call: dict[str, dict[str, float]] = {}
    for key in args.frameworks:
        framework = FRAMEWORKS[key]()
        found = measure(framework, args.runs, args.rounds)
        base = found["uninstrumented"]
        per_llm_call[framework.name] = {
            name: round(runs["A"] - base["A"]) for name, runs in found.items() if name != "uninstrumented"
        }
        if args.json:
            continue
        for name, runs in found.items():
            per_llm = runs["A"] - base["A"]
            per_tool = (runs["B"] - base["B"]) - 2 * per_llm
            added = "" if name == "uninstrumented" else f"{per_llm:+,.0f} | {per_tool:+,.0f}"
            print(f"| {framework.name} | {name} | {runs['A']:,.0f} | {runs['B']:,.0f} | {added or ' | '} |")
    if args.json:
        print(json.dumps({"added_per_llm_call_us": per_llm_call}))


if __name__ == "__main__":
    main()
