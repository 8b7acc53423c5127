"""OpenTelemetry instrumentation of LangChain and LangGraph for otel-lightning.

Built on OpenInference's LangChain instrumentor, which turns LangChain's callbacks into spans
(it is instrumented here unless it already is, so its spans are never doubled). This package
adds what RL needs:

- each chat model call, tool call and `create_agent` agent is marked as a step
  (`lightning.span.kind`), with the agent's name — the `create_agent` name, else the LangGraph node
  the call runs in — so multi-agent graphs are split into per-agent transitions;
- messages in and out in the OpenAI chat format the collector reads, tool definitions, tool
  arguments and results (unless content capture is off);
- while a chat model works, its span is the current one, so the OpenAI client's LLM call (our
  OpenAI instrumentor: exact token ids from the policy server) joins it — one span per call.

    from otel_lightning_instrumentation_langchain import LangChainInstrumentor

    LangChainInstrumentor().instrument()

Under `opentelemetry-instrument python my_agent.py` it is picked up through the
`opentelemetry_instrumentor` entry point, and skipped when langchain-core is not installed.
"""

from __future__ import annotations

from collections.abc import Collection
from types import ModuleType
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.trace import TracerProvider
from wrapt import register_post_import_hook

from otel_lightning import ensure_rollout_processor
from otel_lightning.lazy_patches import LazyPatches, Patch
from otel_lightning_instrumentation_langchain.package import _instruments
from otel_lightning_instrumentation_langchain.version import __version__

_TRACER = "openinference.instrumentation.langchain._tracer"
_CHAT_MODEL = "langchain_core.language_models.chat_models"


def _patches() -> LazyPatches:
    from otel_lightning_instrumentation_langchain import model_calls, tracer_hooks
    from otel_lightning_instrumentation_langchain.run_spans import RunSpans

    open_runs = RunSpans()
    return LazyPatches(
        [
            Patch(_TRACER, "OpenInferenceTracer._start_trace", tracer_hooks.after_start(open_runs)),
            Patch(_TRACER, "OpenInferenceTracer._end_trace", tracer_hooks.before_end(open_runs)),
            Patch(_CHAT_MODEL, "BaseChatModel._generate_with_cache", model_calls.generate(open_runs)),
            Patch(_CHAT_MODEL, "BaseChatModel._agenerate_with_cache", model_calls.agenerate(open_runs)),
            Patch(_CHAT_MODEL, "BaseChatModel.stream", model_calls.stream(open_runs)),
            Patch(_CHAT_MODEL, "BaseChatModel.astream", model_calls.astream(open_runs)),
        ]
    )


class LangChainInstrumentor(BaseInstrumentor):
    """Marks LangChain's chat model, tool and agent runs as otel-lightning steps, per agent."""

    _patches: LazyPatches | None = None
    _owns_upstream = False
    _generation: object | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        tracer_provider = kwargs.get("tracer_provider")
        ensure_rollout_processor(tracer_provider)
        generation = object()
        type(self)._generation = generation

        def on_import(module: ModuleType) -> None:
            if type(self)._generation is generation:  # not uninstrumented before LangChain was imported
                self._apply(tracer_provider)

        # When the agent imports LangChain (now, if it has): a process that never uses it pays nothing,
        # which matters under `opentelemetry-instrument`, where every installed instrumentor runs.
        register_post_import_hook(on_import, "langchain_core")

    def _apply(self, tracer_provider: TracerProvider | None) -> None:
        from openinference.instrumentation.langchain import LangChainInstrumentor as OpenInferenceLangChain

        upstream = OpenInferenceLangChain()
        # One OpenInference tracer per process: instrumented by the user (or its own entry point) or by us.
        type(self)._owns_upstream = not upstream.is_instrumented_by_opentelemetry
        if type(self)._owns_upstream:
            upstream.instrument(tracer_provider=tracer_provider)
        patches = _patches()
        patches.apply()
        type(self)._patches = patches

    def _uninstrument(self, **kwargs: Any) -> None:
        type(self)._generation = None
        patches, type(self)._patches = type(self)._patches, None
        if patches is not None:
            patches.remove()
        if type(self)._owns_upstream:
            from openinference.instrumentation.langchain import LangChainInstrumentor as OpenInferenceLangChain

            OpenInferenceLangChain().uninstrument()
            type(self)._owns_upstream = False


__all__ = ["LangChainInstrumentor", "__version__"]
