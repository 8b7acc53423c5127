"""The Agents SDK's tracing processor that mirrors its agent, tool, handoff and guardrail spans as
OpenTelemetry spans, and makes them the current context while they run.

Being current is the point: the SDK calls the model through the OpenAI client, whose call our
OpenAI instrumentor records as the LLM span (with token ids) — nested in the agent span and
carrying the agent's name (baggage), so the collector splits transitions per agent. The SDK's own
generation/response spans are not mirrored: that would be a second span for the same LLM call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode

from otel_lightning import semconv
from otel_lightning.content import bounded, capture_content_enabled

logger = logging.getLogger(__name__)


@dataclass
class _Mirrored:
    span: trace.Span
    token: object


def _start_attributes(data: Any, capture: bool) -> tuple[str, dict[str, Any], str | None] | None:
    """(span name, attributes, agent name to scope) of an SDK span worth mirroring; None otherwise."""
    kind = data.type
    if kind == "agent":
        attributes = {
            semconv.SPAN_KIND: semconv.SPAN_KIND_AGENT,
            semconv.GEN_AI_OPERATION_NAME: "invoke_agent",
            semconv.GEN_AI_AGENT_NAME: data.name,
            semconv.AGENT_TOOLS: list(data.tools or []),
            semconv.AGENT_HANDOFFS: list(data.handoffs or []),
        }
        return f"invoke_agent {data.name}", attributes, data.name
    if kind == "function":
        attributes = {
            semconv.SPAN_KIND: semconv.SPAN_KIND_TOOL,
            semconv.GEN_AI_OPERATION_NAME: "execute_tool",
            semconv.GEN_AI_TOOL_NAME: data.name,
        }
        return f"execute_tool {data.name}", attributes, None
    if kind == "handoff":
        attributes = {semconv.SPAN_KIND: semconv.SPAN_KIND_HANDOFF}
        if data.from_agent:
            attributes[semconv.HANDOFF_FROM] = data.from_agent
        return "handoff", attributes, None
    if kind == "guardrail":
        attributes = {semconv.SPAN_KIND: semconv.SPAN_KIND_GUARDRAIL, semconv.GUARDRAIL_NAME: data.name}
        return f"guardrail {data.name}", attributes, None
    return None


def _end_attributes(data: Any, capture: bool) -> dict[str, Any]:
    kind = data.type
    if kind == "function":
        # The SDK fills in the input once the model's arguments are parsed, after the span started.
        ended = {}
        if capture and data.input is not None:
            ended[semconv.GEN_AI_TOOL_CALL_ARGUMENTS] = bounded(data.input)
        if capture and data.output is not None:
            ended[semconv.GEN_AI_TOOL_CALL_RESULT] = bounded(str(data.output))
        return ended
    if kind == "handoff" and data.to_agent:
        return {semconv.HANDOFF_TO: data.to_agent}
    if kind == "guardrail":
        return {semconv.GUARDRAIL_TRIGGERED: bool(data.triggered)}
    if kind == "agent":
        return {semconv.AGENT_TOOLS: list(data.tools or []), semconv.AGENT_HANDOFFS: list(data.handoffs or [])}
    return {}


class LightningTracingProcessor:
    """An `agents.tracing.TracingProcessor`; every callback logs and swallows its own errors."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self.enabled = True
        self._open: dict[str, _Mirrored] = {}

    def on_trace_start(self, trace_: Any) -> None:
        return None

    def on_trace_end(self, trace_: Any) -> None:
        return None

    def on_span_start(self, span: Any) -> None:
        if not self.enabled:
            return
        try:
            described = _start_attributes(span.span_data, capture_content_enabled())
            if described is None:
                return
            name, attributes, agent = described
            context = otel_context.get_current()
            if agent:
                context = baggage.set_baggage(semconv.BAGGAGE_AGENT_NAME, agent, context)
            mirrored = self.tracer.start_span(name, context=context, attributes=attributes)
            token = otel_context.attach(trace.set_span_in_context(mirrored, context))
            self._open[span.span_id] = _Mirrored(mirrored, token)
        except Exception:
            logger.warning("otel-lightning could not mirror an Agents SDK span", exc_info=True)

    def on_span_end(self, span: Any) -> None:
        mirrored = self._open.pop(getattr(span, "span_id", None), None)
        if mirrored is None:
            return
        try:
            mirrored.span.set_attributes(_end_attributes(span.span_data, capture_content_enabled()))
            error = span.error
            if error:
                message = error.get("message", "") if isinstance(error, dict) else str(error)
                mirrored.span.set_status(Status(StatusCode.ERROR, message))
                mirrored.span.set_attribute("error.type", message.split(":")[0] or "AgentsSDKError")
        except Exception:
            logger.warning("otel-lightning could not finish an Agents SDK span", exc_info=True)
        finally:
            mirrored.span.end()
            try:
                otel_context.detach(mirrored.token)
            except Exception:  # ended in another context than it started in: the span is still whole
                logger.debug("Agents SDK span ended outside the context it started in", exc_info=True)

    def shutdown(self) -> None:
        return None

    def force_flush(self) -> None:
        return None
