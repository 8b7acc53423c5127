"""One step per model call, however many spans recorded it.

A call may be recorded at several layers: a framework's LLM span (LangChain's chat model run) around
a client's (the OpenAI instrumentor's), and the model gateway's span at the model server's door.
They become one step; the gateway's token ids win (they are what the model saw and said).

How the spans of one call are found:
- Nested: an LLM span inside another LLM span is the same call seen deeper (the gateway's span is a
  child of the client's when the client propagated `traceparent`). The innermost is the step, and
  takes from the outer ones what it lacks (agent, messages, tools, response id).
- Siblings: without `traceparent` the gateway's span hangs under the rollout span, beside the
  client's. A gateway span is matched, within the same trace, to the client LLM span with the same
  `gen_ai.response.id`; else to the one whose time interval contains the gateway's with the same
  input messages; else, when exactly one client span contains it in time, to that one. The client
  span stays the step (its place in the agent's tree, its agent) and takes the gateway's token ids,
  logprobs and policy version (and messages where it has none). An unmatched gateway span is a step
  of its own (an agent with no tracing at all). Two client layers side by side (OpenInference's
  LangChain span beside our OpenAI client's: its spans are not made current) pair the same way;
  the inner one in time stays and takes what it lacks from the outer.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_lightning import semconv
from otel_lightning_collector.dialects import CanonicalStep

_TOKEN_FIELDS = ("prompt_token_ids", "response_token_ids", "response_logprobs", "policy_version")


@dataclass
class Step:
    span: Span
    step: CanonicalStep

    @property
    def agent(self) -> str:
        return self.step.agent or semconv.DEFAULT_AGENT_NAME

    @property
    def is_gateway(self) -> bool:
        return self.step.source == semconv.LLM_SOURCE_GATEWAY


def _fill(into: CanonicalStep, other: CanonicalStep) -> None:
    """Fields `into` lacks, from `other`."""
    for field in dataclasses.fields(CanonicalStep):
        if getattr(into, field.name) in (None, "") and getattr(other, field.name) not in (None, ""):
            setattr(into, field.name, getattr(other, field.name))


def _take_tokens(into: CanonicalStep, gateway: CanonicalStep) -> None:
    for name in _TOKEN_FIELDS:
        value = getattr(gateway, name)
        if value not in (None, ""):
            setattr(into, name, value)
    if gateway.input_messages and not into.input_messages:
        into.input_messages = gateway.input_messages
    if gateway.output_messages and not into.output_messages:
        into.output_messages = gateway.output_messages
    into.source = semconv.LLM_SOURCE_GATEWAY


def _merge_nested(steps: list[Step], spans: list[Span]) -> list[Step]:
    parent_of = {span.span_id: span.parent_span_id for span in spans}
    by_id = {step.span.span_id: step for step in steps}
    covered: set[bytes] = set()

    def depth(step: Step) -> int:
        seen, parent = {step.span.span_id}, parent_of.get(step.span.span_id)
        while parent and parent not in seen:
            seen.add(parent)
            parent = parent_of.get(parent)
        return len(seen)

    # Outermost first, so each step takes from an outer step that has already taken from its own.
    for step in sorted(steps, key=depth):
        seen = {step.span.span_id}
        parent = parent_of.get(step.span.span_id)
        while parent and parent not in seen:  # `seen`: malformed input may hold a cycle
            seen.add(parent)
            outer = by_id.get(parent)
            if outer is not None:
                covered.add(parent)
                if outer.is_gateway and not step.is_gateway:
                    _take_tokens(step.step, outer.step)
                _fill(step.step, outer.step)
                break
            parent = parent_of.get(parent)
    return [step for step in steps if step.span.span_id not in covered]


def _contains(outer: Span, inner: Span) -> bool:
    return (
        outer.start_time_unix_nano <= inner.start_time_unix_nano
        and inner.end_time_unix_nano <= outer.end_time_unix_nano
    )


def _match(inner: Step, candidates: list[Step]) -> Step | None:
    """The step of the same call as `inner` among the others: same response id; else, among those
    whose time interval contains inner's, the one with the same input messages, else the only one."""
    same_trace = [c for c in candidates if c.span.trace_id == inner.span.trace_id]
    if inner.step.response_id:
        for candidate in same_trace:
            if candidate.step.response_id == inner.step.response_id:
                return candidate
    around = [c for c in same_trace if _contains(c.span, inner.span)]
    same_request = [c for c in around if c.step.input_messages and c.step.input_messages == inner.step.input_messages]
    if same_request:
        return min(same_request, key=lambda c: c.span.end_time_unix_nano - c.span.start_time_unix_nano)
    return around[0] if len(around) == 1 else None


def _duration(step: Step) -> int:
    return step.span.end_time_unix_nano - step.span.start_time_unix_nano


def _merge_siblings(steps: list[Step]) -> list[Step]:
    """Spans of one call that are not nested: the gateway's beside the client's (the client's stays,
    with the gateway's token ids), or two client layers recorded side by side (a framework's LLM span
    and the OpenAI client's, when the framework's instrumentation does not make its span current:
    the inner one in time stays, taking what it lacks from the outer). Each span joins one other."""
    gone: set[bytes] = set()
    paired: set[bytes] = set()
    # Gateways first (their match by response id is exact); then client layers, innermost first.
    order = sorted(steps, key=lambda s: (not s.is_gateway, _duration(s)))
    for inner in order:
        if inner.span.span_id in paired:
            continue
        others = [s for s in steps if s is not inner and s.span.span_id not in paired and not s.is_gateway]
        if not inner.is_gateway:
            # A client layer pairs only with a longer one that contains it (not with the gateway's).
            others = [s for s in others if _duration(s) > _duration(inner) or s.span.span_id > inner.span.span_id]
        outer = _match(inner, others)
        if outer is None:
            continue
        if inner.is_gateway:
            _take_tokens(outer.step, inner.step)
            _fill(outer.step, inner.step)
            gone.add(inner.span.span_id)
        else:
            if outer.is_gateway or (outer.step.has_token_ids and not inner.step.has_token_ids):
                _take_tokens(inner.step, outer.step)
            _fill(inner.step, outer.step)
            gone.add(outer.span.span_id)
        paired.update((inner.span.span_id, outer.span.span_id))
    return [step for step in steps if step.span.span_id not in gone]


def one_step_per_call(steps: list[Step], spans: list[Span]) -> list[Step]:
    """The steps left once every model call's spans are merged into one (see the module docstring)."""
    return _merge_siblings(_merge_nested(steps, spans))
