"""Added time per OpenAI call of the otel-lightning instrumentor, against no instrumentation.

The client talks to an in-process transport (httpx MockTransport with a canned vLLM-style
response), so the figure is the instrumentation's own cost, not the network's. Spans go through
the real SDK (BatchSpanProcessor) to an exporter that drops them. Runs alternate, same process.

    python benchmarks/openai_instrumentation_overhead.py [--calls 200] [--rounds 30]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import httpx2
import openai
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

import otel_lightning as ol
from otel_lightning_instrumentation_openai import OpenAIInstrumentor

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 6*7? " * 20}]
BODY = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "m",
        "prompt_token_ids": list(range(300)),
        "policy_version": "1",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "token_ids": list(range(40)),
                "message": {"role": "assistant", "content": "The answer is 42. " * 5},
            }
        ],
        "usage": {"prompt_tokens": 300, "completion_tokens": 40, "total_tokens": 340},
    }
).encode()


class DropExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def per_call_us(client: openai.OpenAI, calls: int) -> float:
    began = time.perf_counter()
    for _ in range(calls):
        client.chat.completions.create(model="m", messages=MESSAGES)
    return (time.perf_counter() - began) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter(), max_queue_size=1 << 16))
    trace.set_tracer_provider(provider)
    transport = httpx2.MockTransport(
        lambda request: httpx2.Response(200, content=BODY, headers={"content-type": "application/json"})
    )
    client = openai.OpenAI(api_key="x", base_url="http://model/v1", http_client=httpx2.Client(transport=transport))
    instrumentor = OpenAIInstrumentor()
    per_call_us(client, 200)  # warm up
    plain, traced = [], []
    with ol.rollout(task_id="bench"):
        for _ in range(args.rounds):
            plain.append(per_call_us(client, args.calls))
            instrumentor.instrument()
            traced.append(per_call_us(client, args.calls))
            instrumentor.uninstrument()
    base, with_spans = statistics.median(plain), statistics.median(traced)
    if args.json:
        print(json.dumps({"uninstrumented_us": round(base, 1), "added_per_call_us": round(with_spans - base, 1)}))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"uninstrumented call:  {base:8.1f} us")
    print(f"instrumented call:    {with_spans:8.1f} us")
    print(f"added per call:       {with_spans - base:8.1f} us (median of {args.rounds} rounds of {args.calls} calls)")


if __name__ == "__main__":
    main()
