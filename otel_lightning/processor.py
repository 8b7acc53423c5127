"""A span processor that stamps the active rollout's identity on every span started inside it."""

from __future__ import annotations

import logging
import threading

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider

from otel_lightning import semconv

logger = logging.getLogger(__name__)

_INSTALL_LOCK = threading.Lock()
_MARKER = "_otel_lightning_rollout_processor"


class RolloutSpanProcessor(SpanProcessor):
    """Copies rollout id, task id, attempt, agent name and policy version from baggage onto each new span.

    Reading baggage from the parent context (not a thread-local) is what makes this work across
    asyncio tasks, threads that propagate context, and processes that received W3C baggage.
    """

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        entries = baggage.get_all(parent_context)
        rollout_id = entries.get(semconv.BAGGAGE_ROLLOUT_ID)
        if not rollout_id:
            return
        span.set_attribute(semconv.ROLLOUT_ID, str(rollout_id))
        span.set_attribute(semconv.TASK_ID, str(entries.get(semconv.BAGGAGE_TASK_ID, "")))
        try:
            span.set_attribute(semconv.ATTEMPT, int(entries.get(semconv.BAGGAGE_ATTEMPT, 0)))
        except (TypeError, ValueError):
            span.set_attribute(semconv.ATTEMPT, 0)
        agent = entries.get(semconv.BAGGAGE_AGENT_NAME)
        if agent:
            span.set_attribute(semconv.AGENT_NAME, str(agent))
        # The version the task was run for; an LLM span whose server reports one gets that instead.
        version = entries.get(semconv.BAGGAGE_POLICY_VERSION)
        if version:
            span.set_attribute(semconv.POLICY_VERSION, str(version))
        # The optimisation candidate (otel-lightning eval / optimize-prompt) the rollout runs under.
        candidate = entries.get(semconv.BAGGAGE_CANDIDATE)
        if candidate:
            span.set_attribute(semconv.CANDIDATE, str(candidate))

    def on_end(self, span: ReadableSpan) -> None:
        return None

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def ensure_rollout_processor(provider: object | None = None) -> bool:
    """Add a RolloutSpanProcessor to `provider` (default: the global one) once.

    Returns False when the provider is not the SDK's (tracing is off: nothing to stamp).
    Also turns on thread context propagation, so threads started inside a rollout belong to it.
    """
    provider = provider if provider is not None else trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        return False
    with _INSTALL_LOCK:
        if not getattr(provider, _MARKER, False):
            provider.add_span_processor(RolloutSpanProcessor())
            setattr(provider, _MARKER, True)
    _instrument_threading()
    return True


def _auto_instrumentation_instruments_threading() -> bool:
    """Under `opentelemetry-instrument`, whose loader instruments threading through its entry point
    (before or after ours): doing it here too made it log "Attempting to instrument while already
    instrumented" in every agent process."""
    import os
    import sys
    from importlib.metadata import entry_points

    if "opentelemetry.instrumentation.auto_instrumentation" not in sys.modules:
        return False
    disabled = [name.strip() for name in os.environ.get("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "").split(",")]
    if "threading" in disabled or "*" in disabled:
        return False
    return any(point.name == "threading" for point in entry_points(group="opentelemetry_instrumentor"))


def _instrument_threading() -> None:
    from opentelemetry.instrumentation.threading import ThreadingInstrumentor

    instrumentor = ThreadingInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry and not _auto_instrumentation_instruments_threading():
        try:
            instrumentor.instrument()
        except Exception:  # never break the host program over context propagation
            logger.warning("could not instrument threading; threads will not inherit rollouts", exc_info=True)
