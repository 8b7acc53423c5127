"""Decode OTLP trace requests into the span records the collector keeps."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_lightning import semconv
from otel_lightning_collector.dialects.step import SpanView

_ROLLOUT_KEYS = frozenset((semconv.ROLLOUT_ID, semconv.TASK_ID, semconv.ATTEMPT, semconv.SPAN_KIND))
_ROLLOUT_ID_BYTES = semconv.ROLLOUT_ID.encode()
# Times are fixed64 in OTLP; the store (SQLite INTEGER) holds signed 64-bit values.
_MAX_TIME_NS = 2**63


_SCALAR_KINDS = ("int_value", "double_value", "string_value", "bool_value")


def _array(values: Any) -> list[Any]:
    # Span attribute arrays are homogeneous by the OTel spec (the SDK refuses mixed ones), and token-id
    # arrays hold hundreds of ints: reading them with a C-level map() is ~5x faster than one by one.
    # The first and last elements are checked; an array that is visibly mixed takes the slow path.
    if not values:
        return []
    kind = values[0].WhichOneof("value")
    if kind in _SCALAR_KINDS and values[-1].WhichOneof("value") == kind:
        return list(map(attrgetter(kind), values))
    return [any_value(v) for v in values]


def any_value(value: AnyValue) -> Any:
    """The Python value of an OTLP AnyValue (arrays and maps recursively)."""
    which = value.WhichOneof("value")
    if which == "array_value":
        return _array(value.array_value.values)
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


def attributes(key_values: Any) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in key_values}


@dataclass(slots=True)
class SpanRecord:
    """A span of a rollout, as stored: ids in hex, the span itself as serialized OTLP."""

    rollout_id: str
    task_id: str
    attempt: int
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    start_ns: int
    end_ns: int
    is_root: bool
    body: bytes


@dataclass
class DecodedRequest:
    records: list[SpanRecord] = field(default_factory=list)
    # Spans outside any rollout: not ours to keep (the forwarder passes them on, if configured).
    foreign_spans: int = 0
    # Rollout spans that cannot be used, with the reason: (reason, serialized span).
    rejected: list[tuple[str, bytes]] = field(default_factory=list)

    def reject(self, span: Span, problem: str) -> None:
        self.rejected.append((f"span {span.name!r} {span.span_id.hex() or '?'}: {problem}", span.SerializeToString()))


def rollout_attributes(key_values: Any) -> dict[str, Any] | None:
    """The rollout keys of a span's attributes, in one pass; None for a span outside any rollout.

    Only these few keys are decoded here; the rest waits for the assembler.
    """
    found: dict[str, Any] = {}
    for kv in key_values:
        key = kv.key
        if key in _ROLLOUT_KEYS:
            found[key] = any_value(kv.value)
    return found if semconv.ROLLOUT_ID in found else None


def id_or_time_problem(span: Span) -> str | None:
    """What makes a span unusable whatever its attributes (bad ids, times past 2^63 ns); None if nothing.
    Cheap enough for the acknowledgement path (a `partial_success` reports these)."""
    trace_id, span_id, parent_span_id = span.trace_id, span.span_id, span.parent_span_id
    if len(trace_id) != 16 or not any(trace_id):
        return "trace_id must be 16 bytes, not all zero"
    if len(span_id) != 8 or not any(span_id):
        return "span_id must be 8 bytes, not all zero"
    if parent_span_id and len(parent_span_id) != 8:
        return "parent_span_id must be empty or 8 bytes"
    if span.start_time_unix_nano >= _MAX_TIME_NS or span.end_time_unix_nano >= _MAX_TIME_NS:
        return "start and end times must be below 2^63 ns (the year 2262)"
    return None


def _check_span(span: Span, found: dict[str, Any]) -> str | None:
    problem = id_or_time_problem(span)
    if problem is not None:
        return problem
    rollout_id = found[semconv.ROLLOUT_ID]
    if not isinstance(rollout_id, str) or not rollout_id:
        return f"{semconv.ROLLOUT_ID} must be a non-empty string"
    if not isinstance(found.get(semconv.TASK_ID, ""), str):
        return f"{semconv.TASK_ID} must be a string"
    if not isinstance(found.get(semconv.ATTEMPT, 0), int):
        return f"{semconv.ATTEMPT} must be an int"
    return None


def _spans(request: Any) -> Iterator[Span]:
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            yield from scope_spans.spans


def decode_request(request: Any) -> DecodedRequest:
    """Split an ExportTraceServiceRequest into span records, foreign spans and rejects.

    A span with no rollout id is a record too, with rollout_id '': a rollout is a trace, and the store
    files it under the rollout of its trace (now or once that trace's rollout spans arrive). Only a
    span with unusable ids or times and no rollout id is foreign (not ours to keep).
    """
    decoded = DecodedRequest()
    records = decoded.records
    for span in _spans(request):
        found = rollout_attributes(span.attributes)
        if found is None:
            if id_or_time_problem(span) is not None:
                decoded.foreign_spans += 1
                continue
            found = {semconv.ROLLOUT_ID: ""}
        elif (problem := _check_span(span, found)) is not None:
            decoded.reject(span, problem)
            continue
        records.append(
            SpanRecord(
                rollout_id=found[semconv.ROLLOUT_ID],
                task_id=found.get(semconv.TASK_ID, ""),
                attempt=found.get(semconv.ATTEMPT, 0),
                trace_id=span.trace_id.hex(),
                span_id=span.span_id.hex(),
                parent_span_id=span.parent_span_id.hex(),
                name=span.name,
                start_ns=span.start_time_unix_nano,
                end_ns=span.end_time_unix_nano,
                is_root=found.get(semconv.SPAN_KIND) == semconv.SPAN_KIND_ROLLOUT,
                body=span.SerializeToString(),
            )
        )
    return decoded


def has_rollout_spans(raw_request: bytes) -> bool:
    """False when no span of this serialized request can belong to a rollout: the rollout id key is
    nowhere in its bytes (protobuf keeps strings verbatim). One C-level search, so the user's other
    spans cost nothing but their decoding; True may still mean none (the key inside some value)."""
    return _ROLLOUT_ID_BYTES in raw_request


def key_value(key: str, value: Any) -> KeyValue:
    """Build an OTLP KeyValue (used by tests and benchmarks that craft requests by hand)."""
    kv = KeyValue(key=key)
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    elif isinstance(value, (list, tuple)):
        kv.value.array_value.values.extend(key_value("", v).value for v in value)
    else:
        kv.value.string_value = str(value)
    return kv


def span_view(span: Span, logs: list[tuple[str, dict[str, Any], Any]] | None = None) -> SpanView:
    """What the dialects read of a span: its name, decoded attributes and events, and the log records
    (event name, attributes, body) that refer to it."""
    return SpanView(
        name=span.name,
        attributes=attributes(span.attributes),
        events=[(event.name, attributes(event.attributes)) for event in span.events],
        logs=list(logs or ()),
    )
