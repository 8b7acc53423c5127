"""What the gateway tests share: the ids the stub gave, the gateway's spans, SSE reading."""

from __future__ import annotations

import json
from typing import Any

import httpx
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_lightning import semconv
from otel_lightning.testing.openai_stub import chat_completion, token_ids
from tests.support import wait_until

QUESTION = [{"role": "user", "content": "What is 6*7?"}]
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate arithmetic.",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]},
    },
}


def upstream_ids(body: dict[str, Any]) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) the stub returned for a chat request it received (its answers are a
    pure function of the request, tool-call ids aside, which are not in the token ids)."""
    answer = chat_completion(body, always_token_ids=True)
    return answer["prompt_token_ids"], answer["choices"][0]["token_ids"]


def llm_spans(exporter: InMemorySpanExporter, count: int = 1, timeout_s: float = 5.0) -> list[ReadableSpan]:
    """The gateway's finished LLM spans, once there are `count` (spans end right after the answer went out)."""

    def found() -> list[ReadableSpan]:
        spans = exporter.get_finished_spans()
        return [s for s in spans if s.attributes.get(semconv.SPAN_KIND) == semconv.SPAN_KIND_LLM]

    wait_until(lambda: len(found()) >= count, timeout_s)
    return found()


def sse_data(response: httpx.Response) -> list[Any]:
    """Each `data:` payload of an SSE body, JSON-decoded ([DONE] as the string)."""
    events = []
    for block in response.text.split("\n\n"):
        for line in block.split("\n"):
            if line.startswith("data: "):
                payload = line[6:]
                events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


def without_ids(value: Any) -> Any:
    """Drop the per-call random parts (response ids, creation time, tool-call ids) to compare two calls."""
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k not in ("id", "created", "created_at")}
    if isinstance(value, list):
        return [without_ids(v) for v in value]
    return value


__all__ = ["token_ids"]
