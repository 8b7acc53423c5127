"""Hooks on OpenInference's LangChain tracer: its run spans get otel-lightning's attributes.

The tracer opens a span when a run starts and fills and ends it when the run ends; ours add the
step kind and agent name right after the span opens, and the outputs right before it ends.
"""

from __future__ import annotations

import logging
from typing import Any

from otel_lightning import semconv
from otel_lightning.content import capture_content_enabled
from otel_lightning_instrumentation_langchain import runs
from otel_lightning_instrumentation_langchain.run_spans import RunSpans

logger = logging.getLogger(__name__)


def _run_of(args: tuple, kwargs: dict[str, Any]) -> Any:
    return args[0] if args else kwargs["run"]


def after_start(open_runs: RunSpans) -> Any:
    def hook(wrapped: Any, tracer: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            run = _run_of(args, kwargs)
            span = tracer.get_span(run.id)
            if span is not None and span.is_recording():
                attributes = runs.start_attributes(run, capture_content_enabled())
                span.set_attributes(attributes)
                open_runs.add(run.id, span, attributes.get(semconv.AGENT_NAME))
        except Exception:
            logger.warning("otel-lightning could not describe a LangChain run's span", exc_info=True)
        return result

    return hook


def before_end(open_runs: RunSpans) -> Any:
    def hook(wrapped: Any, tracer: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        try:
            run = _run_of(args, kwargs)
            open_runs.discard(run.id)
            span = tracer.get_span(run.id)
            if span is not None and span.is_recording():
                recorded = getattr(span, "attributes", None) or {}
                span.set_attributes(runs.end_attributes(run, capture_content_enabled(), recorded))
        except Exception:
            logger.warning("otel-lightning could not record a LangChain run's outputs", exc_info=True)
        return wrapped(*args, **kwargs)

    return hook
