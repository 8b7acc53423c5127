"""Wrappers that give AutoGen's agent turns, model calls, tools and handoffs otel-lightning's spans.

AutoGen (0.7) traces agent turns (`invoke_agent NAME`) and tool runs (`execute_tool NAME`) itself,
as current spans; those are marked here (kind, agent, tool arguments and result) rather than
doubled, and the agent's name goes into baggage for everything inside its turn. AutoGen records no
model call, so each of `AssistantAgent`'s model calls gets an LLM span, current while the model
client works: an OpenAI-based client's call (our OpenAI instrumentor, with token ids) joins it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from autogen_agentchat.base import Response
from autogen_agentchat.messages import HandoffMessage
from autogen_core.models import CreateResult
from autogen_core.tools import StaticWorkbench
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode

from otel_lightning import semconv
from otel_lightning.content import bounded, capture_content_enabled
from otel_lightning.context import attached
from otel_lightning_instrumentation_autogen import messages

logger = logging.getLogger(__name__)

_AUTOGEN_TOOL_OPERATION = "execute_tool"


def _agent_context(agent: str | None, context: otel_context.Context | None = None) -> otel_context.Context:
    context = context or otel_context.get_current()
    return baggage.set_baggage(semconv.BAGGAGE_AGENT_NAME, agent, context) if agent else context


# --- agent turns ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _agent_turn(turn: Any, agent: str | None) -> Iterator[Any]:
    with turn as span:
        try:
            span.set_attributes({semconv.SPAN_KIND: semconv.SPAN_KIND_AGENT, semconv.AGENT_NAME: agent or ""})
        except Exception:
            logger.warning("otel-lightning could not mark an AutoGen agent span", exc_info=True)
        with attached(_agent_context(agent)):
            yield span


def agent_turn(tracer: trace.Tracer) -> Any:
    """Around AutoGen's `trace_invoke_agent_span(agent_name=...)`."""

    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        return _agent_turn(wrapped(*args, **kwargs), kwargs.get("agent_name", args[0] if args else None))

    return wrapper


# --- model calls -----------------------------------------------------------------------------------


async def _tool_schemas(kwargs: dict[str, Any]) -> list[Any]:
    # Only local tool lists: listing an MCP workbench's tools would be a remote call of our own.
    schemas: list[Any] = []
    for workbench in kwargs.get("workbench") or []:
        if isinstance(workbench, StaticWorkbench):
            schemas.extend(await workbench.list_tools())
    return [*schemas, *(kwargs.get("handoff_tools") or [])]


async def _request_attributes(kwargs: dict[str, Any]) -> dict[str, Any]:
    agent = kwargs.get("agent_name")
    attributes: dict[str, Any] = {semconv.SPAN_KIND: semconv.SPAN_KIND_LLM, semconv.GEN_AI_OPERATION_NAME: "chat"}
    if agent:
        attributes[semconv.AGENT_NAME] = attributes[semconv.GEN_AI_AGENT_NAME] = agent
    if capture_content_enabled():
        context_messages = await kwargs["model_context"].get_messages()
        conversation = [*(kwargs.get("system_messages") or []), *context_messages]
        attributes[semconv.GEN_AI_INPUT_MESSAGES] = messages.dumps(messages.to_openai(conversation))
        tools = messages.tool_definitions(await _tool_schemas(kwargs))
        if tools:
            attributes[semconv.GEN_AI_TOOL_DEFINITIONS] = messages.dumps(tools)
    return attributes


def _output_message(item: Any) -> dict[str, Any] | None:
    if isinstance(item, CreateResult):
        return messages.result_to_openai(item)
    if isinstance(item, Response):  # the reflection flow yields the agent's final response
        return {"role": "assistant", "content": item.chat_message.to_model_text()}
    return None


async def _recorded_model_call(tracer: trace.Tracer, steps: AsyncIterator[Any], kwargs: dict[str, Any]) -> Any:
    try:
        attributes = await _request_attributes(kwargs)
    except Exception:
        logger.warning("otel-lightning could not describe an AutoGen model call", exc_info=True)
        attributes = {semconv.SPAN_KIND: semconv.SPAN_KIND_LLM}
    agent = kwargs.get("agent_name")
    span = tracer.start_span(f"chat {agent or ''}".strip(), attributes=attributes)
    context = _agent_context(agent, trace.set_span_in_context(span))
    output: dict[str, Any] | None = None
    try:
        while True:
            with attached(context):
                try:
                    item = await steps.__anext__()
                except StopAsyncIteration:
                    break
            output = _output_message(item) or output
            yield item
    except Exception as error:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.set_attribute("error.type", type(error).__qualname__)
        raise
    finally:
        # An OpenAI-level instrumentor that joined this span recorded the exact response already.
        recorded = getattr(span, "attributes", None) or {}
        if output is not None and capture_content_enabled() and semconv.GEN_AI_OUTPUT_MESSAGES not in recorded:
            span.set_attribute(semconv.GEN_AI_OUTPUT_MESSAGES, messages.dumps([output]))
        span.end()
        with attached(context):
            await steps.aclose()


def model_call(tracer: trace.Tracer) -> Any:
    """Around `AssistantAgent._call_llm` and `_reflect_on_tool_use_flow`: one model call each."""

    def wrapper(wrapped: Any, cls: Any, args: tuple, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        return _recorded_model_call(tracer, wrapped(*args, **kwargs), kwargs)

    return wrapper


# --- tools and handoffs ------------------------------------------------------------------------------


def tool_run(tracer: trace.Tracer) -> Any:
    """Around `FunctionTool.run`, which runs inside AutoGen's own `execute_tool` span."""
    return _marked_tool_run


async def _marked_tool_run(wrapped: Any, tool: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    span = trace.get_current_span()
    attributes = getattr(span, "attributes", None) or {}
    ours = (
        attributes.get(semconv.GEN_AI_OPERATION_NAME) == _AUTOGEN_TOOL_OPERATION
        and attributes.get(semconv.GEN_AI_TOOL_NAME) == tool.name
        and span.is_recording()
    )
    if not ours:
        return await wrapped(*args, **kwargs)
    capture = capture_content_enabled()
    span.set_attribute(semconv.SPAN_KIND, semconv.SPAN_KIND_TOOL)
    if capture and args:
        span.set_attribute(semconv.GEN_AI_TOOL_CALL_ARGUMENTS, bounded(args[0].model_dump(mode="json")))
    result = await wrapped(*args, **kwargs)
    if capture:
        span.set_attribute(semconv.GEN_AI_TOOL_CALL_RESULT, bounded(tool.return_value_as_string(result)))
    return result


def handoff(tracer: trace.Tracer) -> Any:
    """Around `AssistantAgent._check_and_handle_handoff`: a `handoff` span when the agent hands off."""

    def wrapper(wrapped: Any, cls: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        response = wrapped(*args, **kwargs)
        message = getattr(response, "chat_message", None)
        if isinstance(message, HandoffMessage):
            now = time.time_ns()
            attributes = {
                semconv.SPAN_KIND: semconv.SPAN_KIND_HANDOFF,
                semconv.HANDOFF_FROM: message.source,
                semconv.HANDOFF_TO: message.target,
            }
            tracer.start_span("handoff", attributes=attributes, start_time=now).end(end_time=now)
        return response

    return wrapper
