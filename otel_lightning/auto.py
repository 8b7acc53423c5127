"""Join a rollout handed over through the environment (what `otel-lightning worker` does for
a subprocess agent): W3C `TRACEPARENT` and `BAGGAGE` become this process's base context.

Registered as an `opentelemetry_instrumentor`, so `opentelemetry-instrument python agent.py`
applies it before the agent's code runs; nothing in the agent changes.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Any
from urllib.parse import quote

from opentelemetry import context as otel_context
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_lightning import semconv
from otel_lightning.context import current_rollout
from otel_lightning.processor import ensure_rollout_processor

ENV_TRACEPARENT = "TRACEPARENT"
ENV_BAGGAGE = "BAGGAGE"
ENV_RESOURCE_ATTRIBUTES = "OTEL_RESOURCE_ATTRIBUTES"


def context_from_environment(environ: dict[str, str] | None = None) -> otel_context.Context | None:
    environ = os.environ if environ is None else environ
    carrier = {"traceparent": environ.get(ENV_TRACEPARENT, ""), "baggage": environ.get(ENV_BAGGAGE, "")}
    if not carrier["traceparent"] and not carrier["baggage"]:
        return None
    ctx = TraceContextTextMapPropagator().extract(carrier)
    return W3CBaggagePropagator().extract(carrier, context=ctx)


def environment_for_current_context() -> dict[str, str]:
    """TRACEPARENT/BAGGAGE of the current context, for a child process to join it, and the rollout
    in OTEL_RESOURCE_ATTRIBUTES (added to any already set), so every span of the process names it."""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    W3CBaggagePropagator().inject(carrier)
    environment = {ENV_TRACEPARENT: carrier.get("traceparent", ""), ENV_BAGGAGE: carrier.get("baggage", "")}
    info = current_rollout()
    if info is not None:
        pairs = {semconv.ROLLOUT_ID: info.rollout_id, semconv.TASK_ID: info.task_id, semconv.ATTEMPT: info.attempt}
        ours = ",".join(f"{key}={quote(str(value), safe='')}" for key, value in pairs.items())
        given = os.environ.get(ENV_RESOURCE_ATTRIBUTES, "")
        environment[ENV_RESOURCE_ATTRIBUTES] = f"{given},{ours}" if given else ours
    return environment


class RolloutContextInstrumentor(BaseInstrumentor):
    """Stamps rollout attributes on this process's spans and joins a rollout given in the environment."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()

    def _instrument(self, **kwargs: Any) -> None:
        ensure_rollout_processor(kwargs.get("tracer_provider"))
        ctx = context_from_environment()
        if ctx is not None:
            self._token = otel_context.attach(ctx)

    def _uninstrument(self, **kwargs: Any) -> None:
        token = getattr(self, "_token", None)
        if token is not None:
            otel_context.detach(token)
            self._token = None
