"""OpenTelemetry instrumentation of the OpenAI Agents SDK for otel-lightning.

Agent runs, tool calls, handoffs and guardrails become spans (`invoke_agent NAME`,
`execute_tool NAME`, `handoff`, `guardrail NAME`) with otel-lightning's attributes; each agent's
LLM calls — recorded by the OpenAI instrumentor, with token ids — run inside its span and carry
its name, so multi-agent runs are split into per-agent transitions::

    from otel_lightning_instrumentation_openai_agents import OpenAIAgentsInstrumentor

    OpenAIAgentsInstrumentor().instrument()

Under `opentelemetry-instrument python my_agent.py` it is picked up through the
`opentelemetry_instrumentor` entry point (and skipped when the SDK is not installed). It adds a
processor to the SDK's own tracing; the SDK's other processors are left as they are.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from otel_lightning import ensure_rollout_processor
from otel_lightning_instrumentation_openai_agents.package import _instruments
from otel_lightning_instrumentation_openai_agents.processor import LightningTracingProcessor
from otel_lightning_instrumentation_openai_agents.version import __version__

SCOPE_NAME = __name__


class OpenAIAgentsInstrumentor(BaseInstrumentor):
    """Mirrors the OpenAI Agents SDK's agent, tool, handoff and guardrail spans for otel-lightning."""

    _processor: LightningTracingProcessor | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        from agents import add_trace_processor

        tracer_provider = kwargs.get("tracer_provider")
        ensure_rollout_processor(tracer_provider)
        tracer = trace.get_tracer(SCOPE_NAME, __version__, tracer_provider=tracer_provider)
        processor = LightningTracingProcessor(tracer)
        add_trace_processor(processor)
        type(self)._processor = processor

    def _uninstrument(self, **kwargs: Any) -> None:
        from agents.tracing import get_trace_provider

        processor, type(self)._processor = type(self)._processor, None
        if processor is None:
            return
        processor.enabled = False
        # The SDK offers no way to remove one processor: keep all the others.
        multi = getattr(get_trace_provider(), "_multi_processor", None)
        current = getattr(multi, "_processors", ())
        if multi is not None:
            multi.set_processors([p for p in current if p is not processor])


__all__ = ["OpenAIAgentsInstrumentor", "__version__"]
