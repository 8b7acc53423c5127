"""Record the spans one real instrumentor makes, running alone, for the dialect tests.

    python tests/collector/dialect_recorder.py DIALECT BASE_URL OUT_FILE

Runs a two-call calculator conversation (a tool call, then the answer) against an OpenAI-compatible
server (the local stub) with only DIALECT's instrumentation installed, and writes the spans as one
serialized OTLP ExportTraceServiceRequest to OUT_FILE (the exporter's own encoding), and its log
records (the contrib GenAI instrumentor puts messages there) as an ExportLogsServiceRequest to
OUT_FILE.logs. A process per dialect: instrumentors patch the OpenAI client globally and cannot all
be undone.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

from opentelemetry import _logs, trace
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

QUESTION = "What is 17 * 23?"
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate an arithmetic expression.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


def _calculate(expression: str) -> str:
    from otel_lightning.testing.arithmetic import evaluate, format_number

    return format_number(evaluate(expression))


def _openai_conversation(base_url: str) -> None:
    """Two chat completions with the plain OpenAI client: the tool call, then the answer."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="stub")
    messages: list[dict] = [
        {"role": "system", "content": "You are a calculator."},
        {"role": "user", "content": QUESTION},
    ]
    first = client.chat.completions.create(model="stub", messages=messages, tools=[CALCULATOR])
    call = first.choices[0].message.tool_calls[0]
    messages.append(first.choices[0].message.model_dump(exclude_none=True))
    result = _calculate(json.loads(call.function.arguments)["expression"])
    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    client.chat.completions.create(model="stub", messages=messages, tools=[CALCULATOR])


def _langchain_conversation(base_url: str) -> None:
    from langchain_core.messages import HumanMessage, SystemMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression."""
        return _calculate(expression)

    model = ChatOpenAI(model="stub", base_url=base_url, api_key="stub").bind_tools([calculator])
    messages = [SystemMessage("You are a calculator."), HumanMessage(QUESTION)]
    first = model.invoke(messages)
    messages.append(first)
    call = first.tool_calls[0]
    messages.append(ToolMessage(calculator.invoke(call["args"]), tool_call_id=call["id"]))
    model.invoke(messages)


def _pydantic_ai_conversation(base_url: str) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("stub", provider=OpenAIProvider(base_url=base_url, api_key="stub"))
    Agent.instrument_all(True)
    agent = Agent(model, name="calc_agent", system_prompt="You are a calculator.")

    @agent.tool_plain
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression."""
        return _calculate(expression)

    agent.run_sync(QUESTION)


def _langgraph_subgraph_conversation(base_url: str) -> None:
    """A graph whose node is a `create_react_agent(name="math_expert")` subgraph."""
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI
    from langgraph.graph import START, MessagesState, StateGraph
    from langgraph.prebuilt import create_react_agent

    @tool
    def calculator(expression: str) -> str:
        """Evaluate an arithmetic expression."""
        return _calculate(expression)

    model = ChatOpenAI(model="stub", base_url=base_url, api_key="stub")
    graph = StateGraph(MessagesState)
    graph.add_node("math_expert", create_react_agent(model, [calculator], name="math_expert"))
    graph.add_edge(START, "math_expert")
    graph.compile().invoke({"messages": [{"role": "user", "content": QUESTION}]})


def _install(dialect: str, provider: TracerProvider) -> Callable[[str], None]:
    if dialect == "openinference":
        from openinference.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
        return _openai_conversation
    if dialect == "openllmetry":
        from opentelemetry.instrumentation.openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
        return _openai_conversation
    if dialect == "genai":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
        return _openai_conversation
    if dialect == "ours":
        from otel_lightning_instrumentation_openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument(tracer_provider=provider)
        return _openai_conversation
    if dialect == "openinference-langchain":
        from openinference.instrumentation.langchain import LangChainInstrumentor

        LangChainInstrumentor().instrument(tracer_provider=provider)
        return _langchain_conversation
    if dialect == "ours-langgraph":
        from otel_lightning_instrumentation_langchain import LangChainInstrumentor as OurLangChainInstrumentor
        from otel_lightning_instrumentation_openai import OpenAIInstrumentor

        OurLangChainInstrumentor().instrument(tracer_provider=provider)
        OpenAIInstrumentor().instrument(tracer_provider=provider)
        return _langgraph_subgraph_conversation
    if dialect == "openinference-pydantic-ai":
        from openinference.instrumentation.pydantic_ai import OpenInferenceSpanProcessor

        provider.add_span_processor(OpenInferenceSpanProcessor())
        return _pydantic_ai_conversation
    raise SystemExit(f"unknown dialect {dialect!r}")


def _export_live(provider: TracerProvider, logger_provider: LoggerProvider, collector: str) -> None:
    """Spans and log records over the real OTLP/gRPC exporters to a collector."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=collector, insecure=True)))
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=collector, insecure=True))
    )


def main() -> None:
    """OUT_FILE `otlp:HOST:PORT` exports live to that collector instead, under the W3C context in
    TRACEPARENT (as the worker hands it to an agent)."""
    dialect, base_url, out_file = sys.argv[1:4]
    if base_url == "-":  # the worker's: OPENAI_BASE_URL (its gateway's URL for this rollout)
        base_url = os.environ["OPENAI_BASE_URL"]
    # Content capture on, each instrumentor's own way (off by default in most of them).
    os.environ.setdefault("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    os.environ.setdefault("TRACELOOP_TRACE_CONTENT", "true")
    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    log_exporter = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(log_exporter))
    _logs.set_logger_provider(logger_provider)
    parent = None
    if out_file.startswith("otlp:"):
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        _export_live(provider, logger_provider, out_file.removeprefix("otlp:"))
        parent = TraceContextTextMapPropagator().extract({"traceparent": os.environ.get("TRACEPARENT", "")})
    conversation = _install(dialect, provider)
    with provider.get_tracer("dialect-recorder").start_as_current_span("agent run", context=parent):
        conversation(base_url)
    provider.force_flush()
    logger_provider.force_flush()
    if out_file.startswith("otlp:"):
        return
    with open(out_file, "wb") as out:
        out.write(encode_spans(exporter.get_finished_spans()).SerializeToString())
    with open(out_file + ".logs", "wb") as out:
        out.write(encode_logs(log_exporter.get_finished_logs()).SerializeToString())


if __name__ == "__main__":
    main()
