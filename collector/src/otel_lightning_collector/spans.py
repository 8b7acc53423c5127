"""Decode OTLP trace requests into the span records the collector keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_lightning import semconv

_ROLLOUT_KEYS = frozenset((semconv.ROLLOUT_ID, semconv.TASK_ID, semconv.ATTEMPT, semconv.SPAN_KIND))
_MAX_REASONS = 5


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
    # Spans outside any rollout: not ours to keep (forwarding is the pipeline's job).
    foreign_spans: int = 0
    rejected_spans: int = 0
    reasons: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected_spans += 1
        if len(self.reasons) < _MAX_REASONS:
            self.reasons.append(reason)


def _rollout_attributes(key_values: Any) -> dict[str, Any]:
    # Only the few keys the receiver needs are decoded here; the rest waits for the assembler.
    return {kv.key: any_value(kv.value) for kv in key_values if kv.key in _ROLLOUT_KEYS}


def _check_span(span: Span, found: dict[str, Any]) -> str | None:
    if len(span.trace_id) != 16 or not any(span.trace_id):
        return "trace_id must be 16 bytes, not all zero"
    if len(span.span_id) != 8 or not any(span.span_id):
        return "span_id must be 8 bytes, not all zero"
    if span.parent_span_id and len(span.parent_span_id) != 8:
        return "parent_span_id must be empty or 8 bytes"
    rollout_id = found.get(semconv.ROLLOUT_ID)
    if not isinstance(rollout_id, str) or not rollout_id:
        return f"{semconv.ROLLOUT_ID} must be a non-empty string"
    if not isinstance(found.get(semconv.TASK_ID, ""), str):
        return f"{semconv.TASK_ID} must be a string"
    if not isinstance(found.get(semconv.ATTEMPT, 0), int):
        return f"{semconv.ATTEMPT} must be an int"
    return None


def _has_rollout_id(key_values: Any) -> bool:
    return any(kv.key == semconv.ROLLOUT_ID for kv in key_values)


def decode_request(request: Any) -> DecodedRequest:
    """Split an ExportTraceServiceRequest into rollout span records, foreign spans and rejects."""
    decoded = DecodedRequest()
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if not _has_rollout_id(span.attributes):
                    decoded.foreign_spans += 1
                    continue
                found = _rollout_attributes(span.attributes)
                problem = _check_span(span, found)
                if problem is not None:
                    decoded.reject(f"span {span.name!r} {span.span_id.hex() or '?'}: {problem}")
                    continue
                decoded.records.append(
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
