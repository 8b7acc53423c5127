"""With OpenLLMetry's, the contrib or the official GenAI OpenAI instrumentor also active, each call gets one span."""

from __future__ import annotations

import importlib

import openai
import pytest

from otel_lightning import semconv
from otel_lightning_instrumentation_openai import OpenAIInstrumentor
from tests.support import remove_openllmetry_openai_wrappers

OTHERS = {
    "contrib-openai-v2": "opentelemetry.instrumentation.openai_v2",
    "openllmetry": "opentelemetry.instrumentation.openai",
    "official-genai-openai": "opentelemetry.instrumentation.genai.openai",
}


def genai_spans(exporter):
    return [
        s
        for s in exporter.get_finished_spans()
        if semconv.GEN_AI_OPERATION_NAME in s.attributes or "llm.request.type" in s.attributes
    ]


@pytest.mark.parametrize("other", sorted(OTHERS))
@pytest.mark.parametrize("ours_first", [True, False], ids=["ours-inner", "ours-outer"])
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_one_span_per_call_with_another_openai_instrumentor(
    memory_exporter, openai_stub, other, ours_first, stream, monkeypatch
):
    monkeypatch.setenv(semconv.ENV_REQUEST_TOKEN_IDS, "true")  # the stub, as vLLM, gives ids only when asked
    theirs = importlib.import_module(OTHERS[other]).OpenAIInstrumentor()
    ours = OpenAIInstrumentor()
    ours.uninstrument()
    order = [ours, theirs] if ours_first else [theirs, ours]
    for instrumentor in order:
        instrumentor.instrument()
    try:
        client = openai.OpenAI(base_url=openai_stub.base_url, api_key="unused")
        result = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "1+2?"}], stream=stream
        )
        if stream:
            assert "".join(c.choices[0].delta.content or "" for c in result if c.choices) == "The answer is 3."
    finally:
        for instrumentor in reversed(order):
            instrumentor.uninstrument()
            remove_openllmetry_openai_wrappers()  # what OpenLLMetry's uninstrument leaves, peeled in order
        ours.instrument()
    [span] = genai_spans(memory_exporter)
    assert span.attributes[semconv.SPAN_KIND] == semconv.SPAN_KIND_LLM
    assert list(span.attributes[semconv.RESPONSE_TOKEN_IDS]) == list(b"The answer is 3.")
