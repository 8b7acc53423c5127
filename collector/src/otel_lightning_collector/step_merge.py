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
  of its own (an agent with no tracing at all).
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


def _match(gateway: Step, clients: list[Step]) -> Step | None:
    same_trace = [c for c in clients if c.span.trace_id == gateway.span.trace_id]
    if gateway.step.response_id:
        for client in same_trace:
            if client.step.response_id == gateway.step.response_id:
                return client
    around = [c for c in same_trace if _contains(c.span, gateway.span)]
    same_request = [c for c in around if c.step.input_messages and c.step.input_messages == gateway.step.input_messages]
    if same_request:
        return min(same_request, key=lambda c: c.span.end_time_unix_nano - c.span.start_time_unix_nano)
    return around[0] if len(around) == 1 else None


def _merge_siblings(steps: list[Step]) -> list[Step]:
    gateways = [step for step in steps if step.is_gateway]
    if not gateways:
        return steps
    clients = [step for step in steps if not step.is_gateway]
    taken: set[bytes] = set()
    merged: set[bytes] = set()
    for gateway in gateways:
        client = _match(gateway, [c for c in clients if c.span.span_id not in taken])
        if client is None:
            continue
        _take_tokens(client.step, gateway.step)
        _fill(client.step, gateway.step)
        taken.add(client.span.span_id)
        merged.add(gateway.span.span_id)
    # The gateway spans that were merged leave; their clients stay as the steps.
    return [step for step in steps if step.span.span_id not in merged]


def one_step_per_call(steps: list[Step], spans: list[Span]) -> list[Step]:
    """The steps left once every model call's spans are merged into one (see the module docstring)."""
    return _merge_siblings(_merge_nested(steps, spans))
