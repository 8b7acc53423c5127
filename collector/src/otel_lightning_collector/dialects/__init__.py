"""Span dialects: what a span means for training, whoever wrote it.

One module per dialect (ours, GenAI semconv, OpenInference, OpenLLMetry), each a pure function from a
span (`SpanView`: decoded attributes, name, events, related log records) to a `CanonicalStep`
(kind llm/agent/tool, agent, OpenAI-form messages and tools, token ids, response id, model...).

A span may speak several dialects at once (PydanticAI with OpenInference's processor writes GenAI
and OpenInference names; OpenLLMetry can wrap ours): the first dialect that recognises it, in
`DIALECTS` order, says what it is, and the later ones fill in what it left out (asked only while
its messages are missing).
A new kind of span is a new module here, not a branch in the assembler.
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

from otel_lightning_collector.dialects import genai, openinference, openllmetry, ours
from otel_lightning_collector.dialects.messages import MessageFormError
from otel_lightning_collector.dialects.step import AGENT, LLM, TOOL, CanonicalStep, SpanView

DIALECTS: tuple[ModuleType, ...] = (ours, genai, openinference, openllmetry)

__all__ = ["AGENT", "DIALECTS", "LLM", "TOOL", "CanonicalStep", "MessageFormError", "SpanView", "read_span"]


def _is_empty(value: object) -> bool:
    return value is None or value == ""


def read_span(view: SpanView) -> CanonicalStep | None:
    """The span's canonical step, or None when no dialect knows it (a chain, an HTTP call...).

    Raises MessageFormError (a ValueError) when a recognised span's messages cannot be read.
    """
    step: CanonicalStep | None = None
    for dialect in DIALECTS:
        if step is not None and step.input_messages is not None and step.output_messages is not None:
            break  # nothing essential left to fill: the later dialects would only parse the messages again
        if not dialect.recognises(view):
            continue
        found = dialect.read(view)
        if found is None:
            continue
        if step is None:
            step = found
            continue
        for field in dataclasses.fields(CanonicalStep):
            if _is_empty(getattr(step, field.name)) and not _is_empty(getattr(found, field.name)):
                setattr(step, field.name, getattr(found, field.name))
    return step
