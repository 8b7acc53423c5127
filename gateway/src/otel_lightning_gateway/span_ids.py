"""A call's span ids, chosen before its span starts: the request goes to the model server with its
`traceparent` at once, and the span is started (the SDK's bookkeeping: ~0.2 ms of CPU a call on the
2-core test machine, a quarter of the gateway's) once the caller has its answer (a stream's caller: its
first tokens).

The SDK has no way to start a span with given ids, but it lets a tracer's `IdGenerator` be replaced:
`ChosenSpanIds` wraps the tracer's own and hands out the chosen ids to the very next `start_span`.
Tracers that are not the SDK's (a proxy tracer before any provider is set) are left alone: their
spans start before the request goes, as before.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import INVALID_SPAN_CONTEXT, SpanContext, TraceFlags


class ChosenSpanIds(IdGenerator):
    def __init__(self, inner: IdGenerator) -> None:
        self.inner = inner
        self._trace_id: int | None = None
        self._span_id: int | None = None

    @classmethod
    def install(cls, tracer: Any) -> ChosenSpanIds | None:
        """Wrap `tracer`'s id generator (this tracer object only; the provider's stays as it is);
        None for a tracer that has none."""
        inner = getattr(tracer, "id_generator", None)
        if isinstance(inner, cls):
            return inner
        if not isinstance(inner, IdGenerator):
            return None
        tracer.id_generator = chosen = cls(inner)
        return chosen

    def choose(self, parent: SpanContext | None) -> SpanContext:
        """The context the span will have under `parent` (None or invalid: a new trace). Its flags are
        what the SDK's default sampler (parent-based, always on) decides: the parent's, or sampled."""
        parent = parent if parent is not None and parent.is_valid else INVALID_SPAN_CONTEXT
        if parent.is_valid:
            trace_id, flags = parent.trace_id, parent.trace_flags
        else:
            trace_id = self.inner.generate_trace_id()
            flags = TraceFlags.SAMPLED | (TraceFlags.RANDOM_TRACE_ID if self.inner.is_trace_id_random() else 0)
        return SpanContext(
            trace_id,
            self.inner.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=parent.trace_state,
        )

    def use_next(self, chosen: SpanContext, new_trace: bool) -> None:
        """The next span started gets `chosen`'s ids (call right before `start_span`, same thread)."""
        self._trace_id = chosen.trace_id if new_trace else None
        self._span_id = chosen.span_id

    def generate_trace_id(self) -> int:
        trace_id, self._trace_id = self._trace_id, None
        return trace_id if trace_id is not None else self.inner.generate_trace_id()

    def generate_span_id(self) -> int:
        span_id, self._span_id = self._span_id, None
        return span_id if span_id is not None else self.inner.generate_span_id()

    def is_trace_id_random(self) -> bool:
        return self.inner.is_trace_id_random()
