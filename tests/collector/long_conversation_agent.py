"""A LangChain agent with a 200-message conversation, traced by OpenInference's LangChain instrumentor
(flattened `llm.input_messages.N.*`: far past the SDK's 128 attributes per span, so the rollout id our
processor stamps first is evicted) and ours for the OpenAI client, inside an otel-lightning rollout,
exporting over the real batching OTLP exporter.

    python tests/collector/long_conversation_agent.py BASE_URL COLLECTOR   # prints the rollout id
"""

from __future__ import annotations

import sys

from langchain_core.messages import AIMessage, HumanMessage
from langchain_openai import ChatOpenAI
from openinference.instrumentation.langchain import LangChainInstrumentor
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

import otel_lightning as ol
from otel_lightning_instrumentation_openai import OpenAIInstrumentor

TURNS = 100  # 200 messages before the question


@ol.reward
def correct(answer: str) -> float:
    return float("391" in answer)


def main() -> None:
    base_url, collector = sys.argv[1:3]
    provider = TracerProvider()
    ol.ensure_rollout_processor(provider)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=collector, insecure=True)))
    trace.set_tracer_provider(provider)
    LangChainInstrumentor().instrument(tracer_provider=provider)
    OpenAIInstrumentor().instrument(tracer_provider=provider)
    history = []
    for turn in range(TURNS):
        history += [HumanMessage(f"Remember the number {turn}."), AIMessage(f"Noted: {turn}.")]
    model = ChatOpenAI(model="stub", base_url=base_url, api_key="stub")
    with ol.rollout(task_id="long-chat") as info:
        answer = model.invoke([*history, HumanMessage("What is 17 * 23?")])
        correct(str(answer.content))
    provider.shutdown()
    print(info.rollout_id, flush=True)


if __name__ == "__main__":
    main()
