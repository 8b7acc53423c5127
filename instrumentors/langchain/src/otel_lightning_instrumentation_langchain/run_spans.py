"""The spans of LangChain runs that are still open, by run id, and a span that stands for one of them.

OpenInference's tracer opens a span per run but never makes it current (a callback system cannot
promise to detach a context). The model-call wrappers use this table to make the model run's span
current while the model works, so the OpenAI client's LLM span joins it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from opentelemetry import trace
from opentelemetry.util.types import Attributes


@dataclass(frozen=True)
class OpenRun:
    span: trace.Span
    agent: str | None


class RunSpans:
    """Open runs' spans; entries leave when their run ends."""

    def __init__(self) -> None:
        self._open: dict[UUID, OpenRun] = {}
        self._lock = threading.Lock()

    def add(self, run_id: UUID, span: trace.Span, agent: str | None) -> None:
        with self._lock:
            self._open[run_id] = OpenRun(span, agent)

    def discard(self, run_id: UUID) -> None:
        with self._lock:
            self._open.pop(run_id, None)

    def get(self, run_id: UUID | None) -> OpenRun | None:
        if run_id is None:
            return None
        with self._lock:
            return self._open.get(run_id)


class RunSpan(trace.Span):
    """Stands for the span of a run that has not started yet.

    `model.stream()` starts its run inside the first step of the generator and calls the model
    right after, so the context for that step must be set before the span exists: this span
    resolves to the run's span at each use, and to `fallback` (the span current before) otherwise.
    """

    def __init__(self, runs: RunSpans, run_id: UUID, fallback: trace.Span) -> None:
        self._runs = runs
        self._run_id = run_id
        self._fallback = fallback

    def _target(self) -> trace.Span:
        found = self._runs.get(self._run_id)
        return found.span if found is not None else self._fallback

    def __getattr__(self, name: str) -> Any:  # instrumentation_scope, attributes, end_time, ...
        return getattr(self._target(), name)

    def get_span_context(self) -> trace.SpanContext:
        return self._target().get_span_context()

    def is_recording(self) -> bool:
        return self._target().is_recording()

    def set_attributes(self, attributes: dict[str, Any]) -> None:
        self._target().set_attributes(attributes)

    def set_attribute(self, key: str, value: Any) -> None:
        self._target().set_attribute(key, value)

    def add_event(self, name: str, attributes: Attributes = None, timestamp: int | None = None) -> None:
        self._target().add_event(name, attributes, timestamp)

    def update_name(self, name: str) -> None:
        self._target().update_name(name)

    def set_status(self, status: Any, description: str | None = None) -> None:
        self._target().set_status(status, description)

    def record_exception(self, exception: BaseException, attributes: Attributes = None, **kwargs: Any) -> None:
        self._target().record_exception(exception, attributes, **kwargs)

    def end(self, end_time: int | None = None) -> None:
        # The run's span is ended by the tracer that opened it, never through this stand-in.
        return None
