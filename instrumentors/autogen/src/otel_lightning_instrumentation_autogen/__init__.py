"""OpenTelemetry instrumentation of AutoGen (autogen-agentchat / autogen-core 0.7) for otel-lightning.

Agents, teams (each member's turn), model calls, tool calls and handoffs get otel-lightning's
attributes, and every span inside an agent's turn carries its name, so team runs are split into
per-agent transitions. AutoGen's own agent and tool spans are marked, not doubled; each
`AssistantAgent` model call gets an LLM span that an OpenAI-based client's call joins (token ids)::

    from otel_lightning_instrumentation_autogen import AutoGenInstrumentor

    AutoGenInstrumentor().instrument()

Under `opentelemetry-instrument python my_agent.py` it is picked up through the
`opentelemetry_instrumentor` entry point, skipped when autogen-agentchat is not installed, and
waits for AutoGen's import (a process that never uses it pays nothing).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from otel_lightning import ensure_rollout_processor
from otel_lightning.lazy_patches import LazyPatches, Patch
from otel_lightning_instrumentation_autogen.package import _instruments
from otel_lightning_instrumentation_autogen.version import __version__

SCOPE_NAME = __name__
_ASSISTANT = "autogen_agentchat.agents._assistant_agent"
_CONTAINER = "autogen_agentchat.teams._group_chat._chat_agent_container"


def _deferred(factory: str, tracer: trace.Tracer) -> Any:
    """A wrapper that imports `spans` (and with it AutoGen's types) at its first call: AutoGen is
    in use by then, and importing it from inside its own import hook could be circular."""
    built: list[Any] = []

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        if not built:
            from otel_lightning_instrumentation_autogen import spans

            built.append(getattr(spans, factory)(tracer))
        return built[0](wrapped, instance, args, kwargs)

    return wrapper


def _patches(tracer: trace.Tracer) -> list[Patch]:
    return [
        # AutoGen's agent-turn spans, where single agents and team members open them.
        Patch("autogen_agentchat.agents._base_chat_agent", "trace_invoke_agent_span", _deferred("agent_turn", tracer)),
        Patch(_CONTAINER, "trace_invoke_agent_span", _deferred("agent_turn", tracer)),
        Patch(_ASSISTANT, "AssistantAgent._call_llm", _deferred("model_call", tracer)),
        Patch(_ASSISTANT, "AssistantAgent._reflect_on_tool_use_flow", _deferred("model_call", tracer)),
        Patch(_ASSISTANT, "AssistantAgent._check_and_handle_handoff", _deferred("handoff", tracer)),
        Patch("autogen_core.tools._function_tool", "FunctionTool.run", _deferred("tool_run", tracer)),
    ]


class AutoGenInstrumentor(BaseInstrumentor):
    """Marks AutoGen's agents, model calls, tools and handoffs as otel-lightning steps, per agent."""

    _patches: LazyPatches | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        tracer_provider = kwargs.get("tracer_provider")
        ensure_rollout_processor(tracer_provider)
        tracer = trace.get_tracer(SCOPE_NAME, __version__, tracer_provider=tracer_provider)
        patches = LazyPatches(_patches(tracer))
        patches.apply()
        type(self)._patches = patches

    def _uninstrument(self, **kwargs: Any) -> None:
        patches, type(self)._patches = type(self)._patches, None
        if patches is not None:
            patches.remove()


__all__ = ["AutoGenInstrumentor", "__version__"]
