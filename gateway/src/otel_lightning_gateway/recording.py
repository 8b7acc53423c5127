"""One span per model call: where it hangs in the trace, who it belongs to, and how it ended.

Recording never breaks the proxying: errors here are logged and the caller's answer goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry.attributes import BoundedAttributes
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otel_lightning import semconv
from otel_lightning_gateway import attributes as attrs
from otel_lightning_gateway.routes import RolloutRoute
from otel_lightning_gateway.span_ids import ChosenSpanIds

logger = logging.getLogger(__name__)

# W3C trace context and baggage, whatever the process's global propagator is configured to.
TRACE_CONTEXT = TraceContextTextMapPropagator()
PROPAGATOR = CompositePropagator([TRACE_CONTEXT, W3CBaggagePropagator()])

_BAGGAGE_ATTRIBUTES = (
    (semconv.BAGGAGE_ROLLOUT_ID, semconv.ROLLOUT_ID),
    (semconv.BAGGAGE_TASK_ID, semconv.TASK_ID),
    (semconv.BAGGAGE_ATTEMPT, semconv.ATTEMPT),
    (semconv.BAGGAGE_AGENT_NAME, semconv.AGENT_NAME),
    (semconv.BAGGAGE_POLICY_VERSION, semconv.POLICY_VERSION),
)


def parent_context(headers: Mapping[str, str], route: RolloutRoute | None) -> Context:
    """The caller's span when the request carries `traceparent`, else the rollout's span, else none
    (a new trace); the request's baggage rides along either way."""
    if "traceparent" in headers or "baggage" in headers:
        context = PROPAGATOR.extract(headers)
        if trace.get_current_span(context).get_span_context().is_valid:
            return context
    else:
        context = Context()  # most calls: nothing to extract, and no span in it
    if route is not None and route.parent is not None and route.parent.is_valid:
        return trace.set_span_in_context(NonRecordingSpan(route.parent), context)
    return context


def trace_headers(span_context: SpanContext) -> list[tuple[str, str]]:
    """`traceparent` (and `tracestate`) naming `span_context` as the parent (none when it is invalid)."""
    headers: dict[str, str] = {}
    TRACE_CONTEXT.inject(headers, context=trace.set_span_in_context(NonRecordingSpan(span_context), Context()))
    return list(headers.items())


def identity_attributes(
    context: Context, rollout_id: str | None, route: RolloutRoute | None, unknown_rollout: bool
) -> dict[str, Any]:
    """lightning.rollout.id & co: from W3C baggage, overridden by the rollout URL and its registered route."""
    found: dict[str, Any] = {}
    entries = baggage.get_all(context)  # one read of the context (empty for most calls)
    if entries:
        for key, attribute in _BAGGAGE_ATTRIBUTES:
            value = entries.get(key)
            if value is not None:
                found[attribute] = str(value)
    if semconv.ATTEMPT in found:
        try:
            found[semconv.ATTEMPT] = int(found[semconv.ATTEMPT])
        except ValueError:
            found[semconv.ATTEMPT] = 0
    if rollout_id is not None:
        found[semconv.ROLLOUT_ID] = rollout_id
    if route is not None:
        found[semconv.TASK_ID] = route.task_id
        found[semconv.ATTEMPT] = route.attempt
        found.update(route.attributes)
    if unknown_rollout:
        found[semconv.GATEWAY_UNKNOWN_ROLLOUT] = True
    return found


_SCALARS = frozenset({str, bool, int, float})


def set_attributes(span: trace.Span, attributes: dict[str, Any]) -> None:
    """`span.set_attributes`, without the SDK's per-value check for values already of the types it
    stores (~5 us an attribute, ~1.5 us a list element: 0.75 ms for a 500-token prompt): a str/bool/int/
    float, or a list or tuple of one such type (bool and int apart, as the SDK tells them), goes into its
    BoundedAttributes as it is (lists as tuples), in one update under its lock, within its count
    limit; the rest (a user's attributes of other types, or all of them when a value length limit is
    set, or an SDK whose BoundedAttributes is built otherwise) take the SDK's way."""
    bounded = getattr(span, "_attributes", None)
    if not (
        isinstance(bounded, BoundedAttributes)
        and isinstance(getattr(bounded, "_dict", None), dict)
        and bounded.max_value_len is None
        and (bounded.maxlen is None or len(bounded) + len(attributes) <= bounded.maxlen)
        and span.is_recording()
    ):
        span.set_attributes(attributes)
        return
    ready = {}
    other = {}
    for key, value in attributes.items():
        kind = type(value)
        if type(key) is not str or not key:
            other[key] = value
        elif kind in _SCALARS:
            ready[key] = value
        elif (kind is list or kind is tuple) and len(kinds := set(map(type, value))) == 1 and kinds <= _SCALARS:
            ready[key] = tuple(value)
        else:
            other[key] = value
    with bounded._lock:  # room for all was checked above: nothing to evict
        bounded._dict.update(ready)
    if other:
        span.set_attributes(other)


class CallSpan:
    """The span of one model call, from when the request is ready to go upstream (which gets it as
    `traceparent`). Its attributes are gathered as the call goes and set once, at its end (`finish` /
    `fail` / `cancel`, exactly one of them): one pass instead of one per attribute. Where the tracer
    lets its ids be chosen (`ids`), the span itself is started late too, by `describe` (at the end, or
    once a stream's caller has its first tokens), with the request's attributes and its start time from
    when the request was ready: neither the caller nor the model server shares the gateway's turn with
    the SDK's bookkeeping. (Started while the model server worked, it made the gateway's added p50
    ~0.15 ms worse on the 2-core test machine: a server woken by the request is often put on the waking
    gateway's core, and waits there.)"""

    def __init__(
        self,
        tracer: trace.Tracer,
        api: str,
        body: Mapping[str, Any],
        context: Context,
        extra: Mapping[str, Any],
        content: attrs.ContentCapture | None,
        count: Callable[[str], None] | None = None,
        ids: ChosenSpanIds | None = None,
    ) -> None:
        self.api = api
        self.content = content
        self._count = count
        self._request: tuple[Mapping[str, Any], Mapping[str, Any]] | None = (body, extra)
        self.attributes: dict[str, Any] = {}
        self.outcome: str | None = None  # "ok", "failed" or "cancelled" once ended
        self._tracer = tracer
        self._name = attrs.span_name(api, body.get("model"))
        self._context = context
        self._ids = ids
        self._started_ns = time.time_ns()
        self._span: trace.Span | None = None
        parent = trace.get_current_span(context).get_span_context()
        self._chosen = ids.choose(parent) if ids is not None else None
        self._new_trace = not parent.is_valid
        if ids is None:
            self._start()

    @property
    def span(self) -> trace.Span:
        return self._start()

    @property
    def span_context(self) -> SpanContext:
        """What goes upstream as `traceparent`: the span's context, started or not."""
        return self._chosen if self._span is None and self._chosen is not None else self.span.get_span_context()

    def _start(self) -> trace.Span:
        if self._span is None:
            if self._ids is not None and self._chosen is not None:
                self._ids.use_next(self._chosen, self._new_trace)
            self._span = self._tracer.start_span(
                self._name, context=self._context, kind=SpanKind.CLIENT, start_time=self._started_ns
            )
        return self._span

    def describe(self) -> None:
        """The request's attributes (once; the body must not change until then): under what the call
        has recorded since, which is more specific."""
        self._start()
        if self._request is None:
            return
        body, extra = self._request
        self._request = None
        try:
            described = attrs.request_attributes(self.api, body, self.content)
        except Exception:
            logger.warning("could not record the request on the gateway span", exc_info=True)
            described = {}
        described.update(extra)
        described.update(self.attributes)
        self.attributes = described

    def take(self, response: Mapping[str, Any], answered_as: str | None = None) -> None:
        """Read the answer's attributes now (before the caller's copy of it is changed); `answered_as`:
        the API whose shape `response` has, when it is not the span's."""
        try:
            self.attributes.update(attrs.response_attributes(answered_as or self.api, response, self.content))
        except Exception:
            logger.warning("could not record the model's answer on the gateway span", exc_info=True)

    def finish(self, response: Mapping[str, Any] | None = None, answered_as: str | None = None) -> None:
        """A complete answer (already `take`n when None)."""
        if self.outcome is not None:
            return
        if response is not None:
            self.take(response, answered_as)
        self._end("ok")

    def fail(self, error_type: str, message: str, response: Mapping[str, Any] | None = None) -> None:
        if self.outcome is not None:
            return
        if response is not None:
            self.take(response)
        self.attributes["error.type"] = error_type
        try:
            self.span.set_status(Status(StatusCode.ERROR, message[:2000]))
        except Exception:
            logger.warning("could not record the failed call on the gateway span", exc_info=True)
        self._end("failed")

    def cancel(self, partial: Mapping[str, Any] | None = None) -> None:
        """The caller went away mid-answer: what arrived so far is recorded, the span says cancelled."""
        if self.outcome is not None:
            return
        self.attributes[semconv.LLM_CANCELLED] = True
        self.fail("cancelled", "the caller disconnected before the answer was complete", partial)

    def _end(self, outcome: str) -> None:
        self.describe()
        if self.attributes.get(semconv.LLM_CANCELLED):
            outcome = "cancelled"
        self.outcome = outcome
        if self._count is not None and outcome != "ok":
            self._count(outcome)  # before the span ends: whoever sees the span sees the count
        try:
            set_attributes(self.span, self.attributes)
        except Exception:
            logger.warning("could not set the gateway span's attributes", exc_info=True)
        self.span.end()
