"""OpenTelemetry instrumentation of the OpenAI Agents SDK for otel-lightning.

Agent runs, tool calls, handoffs and guardrails become spans (`invoke_agent NAME`,
`execute_tool NAME`, `handoff`, `guardrail NAME`) with otel-lightning's attributes; each agent's
LLM calls — recorded by the OpenAI instrumentor, with token ids — run inside its span and carry
its name, so multi-agent runs are split into per-agent transitions::

    from otel_lightning_instrumentation_openai_agents import OpenAIAgentsInstrumentor

    OpenAIAgentsInstrumentor().instrument()

Under `opentelemetry-instrument python my_agent.py` it is picked up through the
`opentelemetry_instrumentor` entry point (and skipped when the SDK is not installed). It sees the
SDK's spans where the SDK hands them to its processors, ahead of them, so it works whatever
processors are registered — also when another instrumentor replaces them all (OpenInference's
does by default) — and leaves them as they are.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from otel_lightning import ensure_rollout_processor
from otel_lightning.lazy_patches import LazyPatches, Patch
from otel_lightning_instrumentation_openai_agents.package import _instruments
from otel_lightning_instrumentation_openai_agents.processor import LightningTracingProcessor
from otel_lightning_instrumentation_openai_agents.vendor_upload import no_vendor_upload_patches, vendor_upload_enabled
from otel_lightning_instrumentation_openai_agents.version import __version__

SCOPE_NAME = __name__

# The SDK hands every span to one multi-processor, whatever processors are registered with it.
_DISPATCH = "agents.tracing.provider"
_DISPATCH_CLASS = "SynchronousMultiTracingProcessor"


def _before(processor: LightningTracingProcessor) -> Any:
    def on_span_start(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        processor.on_span_start(*args, **kwargs)  # first, so other processors' spans nest in ours
        return wrapped(*args, **kwargs)

    return on_span_start


def _after(processor: LightningTracingProcessor) -> Any:
    def on_span_end(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        try:
            return wrapped(*args, **kwargs)
        finally:
            processor.on_span_end(*args, **kwargs)  # last: contexts are detached in reverse order

    return on_span_end


class OpenAIAgentsInstrumentor(BaseInstrumentor):
    """Mirrors the OpenAI Agents SDK's agent, tool, handoff and guardrail spans for otel-lightning."""

    _processor: LightningTracingProcessor | None = None
    _patches: LazyPatches | None = None
    _vendor_patches: LazyPatches | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        tracer_provider = kwargs.get("tracer_provider")
        ensure_rollout_processor(tracer_provider)
        tracer = trace.get_tracer(SCOPE_NAME, __version__, tracer_provider=tracer_provider)
        processor = LightningTracingProcessor(tracer)
        # When the agent imports the SDK (now, if it has): a process that never uses it pays nothing,
        # which matters under `opentelemetry-instrument`, where every installed instrumentor runs.
        patches = LazyPatches(
            [
                Patch(_DISPATCH, f"{_DISPATCH_CLASS}.on_span_start", _before(processor)),
                Patch(_DISPATCH, f"{_DISPATCH_CLASS}.on_span_end", _after(processor)),
            ]
        )
        patches.apply()
        type(self)._processor, type(self)._patches = processor, patches
        if not vendor_upload_enabled():  # LIGHTNING_VENDOR_TRACE_UPLOAD=false: the worker's agents
            type(self)._vendor_patches = no_vendor_upload_patches()
            type(self)._vendor_patches.apply()

    def _uninstrument(self, **kwargs: Any) -> None:
        processor, type(self)._processor = type(self)._processor, None
        if processor is not None:
            processor.enabled = False
        patches, type(self)._patches = type(self)._patches, None
        if patches is not None:
            patches.remove()
        vendor_patches, type(self)._vendor_patches = type(self)._vendor_patches, None
        if vendor_patches is not None:
            vendor_patches.remove()


__all__ = ["OpenAIAgentsInstrumentor", "__version__"]
