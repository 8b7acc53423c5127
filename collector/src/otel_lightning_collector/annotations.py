"""Arize Phoenix's span annotations as rewards: `POST /v1/span_annotations` on the OTLP/HTTP port.

Phoenix records annotations (a human's thumbs-up, an LLM judge's grade) over REST, not OTLP. The
collector answers that endpoint with Phoenix's body and answer, so an app that points the Phoenix
client at it (`Client(base_url="http://127.0.0.1:4318").spans.add_span_annotation(...)` or
`log_span_annotations(...)`) gives rewards:

    {"data": [{"span_id": "<16 hex>", "name": "correctness", "annotator_kind": "HUMAN" | "LLM" | "CODE",
               "result": {"score": 1.0, "label": "...", "explanation": "..."}, "metadata": {...},
               "identifier": "..."}]}
    ?sync=true  ->  200 {"data": [{"id": "..."}, ...]}  (one per annotation, in order)
    otherwise   ->  200 {"data": []}

Each annotation's `result.score` becomes a reward named by its `name`, for the step of the span it
rates (feedback.py: taken by the rollout's completion, or a RewardUpdate once the rollout is complete).
The span is found by its id among the spans stored here (after the spans acknowledged so far are
indexed). As in Phoenix, with `sync=true` an unknown span fails the whole request with 404 and records
nothing. Without it, an annotation whose span is not here yet (a thumbs-up can beat the exporter's
batch) waits for it, in memory, up to `wait_for_span_s` (60 s), looked for again every second, as
Phoenix's own queue does. Not a reward, counted, logged (at most once a minute per reason) and shown by
`otel-lightning status`: an annotation with no score (a label or an explanation only: Phoenix keeps
it, there is no number to train on), one whose span did not come in time (not kept: its trace is in no
rollout and --episodes is off; deleted by retention; never exported), and those still waiting when
the collector stops. A body Phoenix would refuse gets 422 with the reason (400 for the reserved name
`note`, as Phoenix answers).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from otel_lightning_collector.feedback import FeedbackRecorder
from otel_lightning_collector.store import Store

logger = logging.getLogger(__name__)

ANNOTATION = "annotation"  # the origin of these rewards (RewardUpdate.origin)
ANNOTATOR_KINDS = ("LLM", "CODE", "HUMAN")
RESERVED_NAME = "note"  # Phoenix keeps it for span notes (POST /v1/span_notes)
WITHOUT_SCORE = "an annotation with no result.score is not a reward (Phoenix keeps labels; there is no number)"
UNKNOWN_SPAN = (
    "an annotation for a span this collector does not hold (not kept: its trace is in no rollout and"
    " --episodes is off; deleted by retention; or not exported)"
)
_LOG_EVERY_S = 60.0
# How long a request with unknown span ids waits for the spans already acknowledged to be indexed.
_INDEX_WAIT_S = 2.0
# Without sync: how long an annotation waits for its span, how often it is looked for, how many may wait.
WAIT_FOR_SPAN_S = 60.0
_RETRY_EVERY_S = 1.0
MAX_WAITING = 10_000
# Unknown span ids named in a 404 (Phoenix names them all; a body may hold thousands).
_NAMED_IN_ERROR = 20
_TRUE, _FALSE = ("1", "true", "yes", "on", "t", "y"), ("0", "false", "no", "off", "f", "n")


class AnnotationBodyError(ValueError):
    """A body Phoenix would refuse (422), with the reason."""


@dataclass
class AnnotationCounters:
    requests: int = 0
    requests_refused: int = 0  # bad bodies (4xx)
    received: int = 0  # annotations in accepted bodies
    recorded: int = 0  # rewards recorded
    without_score: int = 0
    unknown_span: int = 0
    waiting: int = 0  # now: annotations waiting for their span (not a total)


@dataclass(frozen=True)
class SpanAnnotation:
    span_id: str  # lowercase hex
    name: str
    score: float | None


def _score(result: Any, where: str) -> float | None:
    if result is None:
        return None
    if not isinstance(result, dict):
        raise AnnotationBodyError(f"{where}.result must be an object or null")
    for field in ("label", "explanation"):
        if result.get(field) is not None and not isinstance(result[field], str):
            raise AnnotationBodyError(f"{where}.result.{field} must be a string or null")
    score = result.get("score")
    if score is None:
        return None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
        raise AnnotationBodyError(f"{where}.result.score must be a finite number or null, not {score!r}")
    return float(score)


def _annotation(item: Any, index: int) -> SpanAnnotation:
    where = f"data[{index}]"
    if not isinstance(item, dict):
        raise AnnotationBodyError(f"{where} must be an object")
    name, kind, span_id = item.get("name"), item.get("annotator_kind"), item.get("span_id")
    if not isinstance(name, str) or not name.strip():
        raise AnnotationBodyError(f"{where}.name must be a non-empty string")
    if kind not in ANNOTATOR_KINDS:
        raise AnnotationBodyError(f"{where}.annotator_kind must be one of {', '.join(ANNOTATOR_KINDS)}, not {kind!r}")
    if not isinstance(span_id, str):
        raise AnnotationBodyError(f"{where}.span_id must be a string (the span id in hex)")
    span_id = span_id.strip().lower()
    try:
        if len(bytes.fromhex(span_id)) != 8:
            raise ValueError
    except ValueError:
        message = f"{where}.span_id {span_id[:40]!r} is not an OpenTelemetry span id (16 hex digits)"
        raise AnnotationBodyError(message) from None
    if item.get("metadata") is not None and not isinstance(item["metadata"], dict):
        raise AnnotationBodyError(f"{where}.metadata must be an object or null")
    if item.get("identifier") is not None and not isinstance(item["identifier"], str):
        raise AnnotationBodyError(f"{where}.identifier must be a string")
    return SpanAnnotation(span_id, name.strip(), _score(item.get("result"), where))


def parse_body(body: bytes) -> list[SpanAnnotation]:
    """The annotations of a Phoenix `AnnotateSpansRequestBody`; AnnotationBodyError says what is wrong."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError) as error:
        raise AnnotationBodyError(f"the body is not JSON: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise AnnotationBodyError('the body must be {"data": [span annotation, ...]}')
    return [_annotation(item, index) for index, item in enumerate(document["data"])]


def _sync(query: str) -> bool:
    values = parse_qs(query).get("sync") or ["false"]
    value = values[-1].strip().lower()
    if value not in _TRUE + _FALSE:
        raise AnnotationBodyError(f"sync must be true or false, not {values[-1]!r}")
    return value in _TRUE


def _answer(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


class SpanAnnotationService:
    def __init__(
        self,
        store: Store,
        recorder: FeedbackRecorder,
        wait_indexed: Callable[[float], bool] | None = None,
        log_every_s: float = _LOG_EVERY_S,
        wait_for_span_s: float = WAIT_FOR_SPAN_S,
    ) -> None:
        self.store = store
        self.recorder = recorder
        # Waits (up to the given seconds) until the spans acknowledged so far are stored one by one.
        self.wait_indexed = wait_indexed
        self.counters = AnnotationCounters()
        self.log_every_s = log_every_s
        self._unlogged: dict[str, int] = {}
        self._logged_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self.wait_for_span_s = wait_for_span_s
        self._waiting: list[tuple[float, SpanAnnotation]] = []  # (give-up time, annotation)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._retry_waiting, name="span-annotations", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        with self._lock:
            left, self._waiting = len(self._waiting), []
            self.counters.waiting = 0
        if left:
            self._note(UNKNOWN_SPAN, left, "still waiting for their span when the collector stopped")

    def http(self, body: bytes, query: str = "") -> tuple[HTTPStatus, bytes]:
        """(status, JSON answer) for one `POST /v1/span_annotations`, as Phoenix answers it."""
        with self._lock:
            self.counters.requests += 1
        try:
            sync = _sync(query)
            annotations = parse_body(body)
        except AnnotationBodyError as error:
            return self._refused(HTTPStatus.UNPROCESSABLE_ENTITY, str(error))
        if any(item.name == RESERVED_NAME for item in annotations):
            return self._refused(
                HTTPStatus.BAD_REQUEST, "The name 'note' is reserved for span notes. Use POST /v1/span_notes instead."
            )
        with self._lock:
            self.counters.received += len(annotations)
        try:
            traces = self._traces_of({item.span_id for item in annotations})
            unknown = {item.span_id for item in annotations} - set(traces)
            if unknown and sync:
                self._note(UNKNOWN_SPAN, sum(item.span_id in unknown for item in annotations))
                named = ", ".join(sorted(unknown)[:_NAMED_IN_ERROR])
                more = f" and {len(unknown) - _NAMED_IN_ERROR} more" if len(unknown) > _NAMED_IN_ERROR else ""
                return HTTPStatus.NOT_FOUND, _answer({"detail": f"Spans with IDs {named}{more} do not exist."})
            ids = [self._take(item, traces.get(item.span_id)) for item in annotations]
        except sqlite3.Error as error:
            logger.error("store %s refused span annotations: %s", self.store.path, error)
            return HTTPStatus.SERVICE_UNAVAILABLE, _answer({"detail": f"collector store is not writable ({error})"})
        return HTTPStatus.OK, _answer({"data": [{"id": found} for found in ids] if sync else []})

    def _refused(self, status: HTTPStatus, reason: str) -> tuple[HTTPStatus, bytes]:
        with self._lock:
            self.counters.requests_refused += 1
        logger.info("span annotations refused (%d): %s", status, reason)
        return status, _answer({"detail": reason})

    def _traces_of(self, span_ids: set[str]) -> dict[str, str]:
        """{span id: trace id} of the stored spans among `span_ids`; waits once for indexing if some are missing."""
        found = self._lookup(span_ids)
        if len(found) < len(span_ids) and self.wait_indexed is not None and self.wait_indexed(_INDEX_WAIT_S):
            found = self._lookup(span_ids)
        return found

    def _lookup(self, span_ids: set[str]) -> dict[str, str]:
        # No index on span_id alone (spans are written far more often than annotated): one scan per request,
        # the ids in one JSON parameter (any number of them: SQLite bounds the number of parameters).
        rows = self.store.reader().execute(
            "SELECT span_id, trace_id FROM spans WHERE span_id IN (SELECT value FROM json_each(?))",
            (json.dumps(sorted(span_ids)),),
        )
        return {span_id: trace_id for span_id, trace_id in rows}

    def _take(self, item: SpanAnnotation, trace_id: str | None) -> str:
        """Record one annotation (or count why not; or hold it until its span comes); its id in Phoenix's
        form (a Relay global id)."""
        if item.score is None:
            self._note(WITHOUT_SCORE, 1)
            return _global_id(f"unscored:{item.span_id}")
        if trace_id is None:
            with self._lock:
                held = len(self._waiting) < MAX_WAITING
                if held:
                    self._waiting.append((time.monotonic() + self.wait_for_span_s, item))
                    self.counters.waiting = len(self._waiting)
            if not held:
                self._note(UNKNOWN_SPAN, 1, f"{MAX_WAITING} annotations wait for their spans already")
            return _global_id(f"waiting:{item.span_id}")
        return self._record(item, trace_id)

    def _record(self, item: SpanAnnotation, trace_id: str) -> str:
        recorded = self.recorder.record(
            score=item.score, name=item.name, trace_id=trace_id, span_id=item.span_id, origin=ANNOTATION
        )
        with self._lock:
            self.counters.recorded += 1
        return _global_id(str(recorded.feedback_id))

    def _retry_waiting(self) -> None:
        """Look for the spans of waiting annotations every second; record those found, give up on the late."""
        while not self._stopping.wait(_RETRY_EVERY_S):
            with self._lock:
                waiting, self._waiting = self._waiting, []
            if not waiting:
                continue
            kept: list[tuple[float, SpanAnnotation]] = []
            try:
                traces = self._lookup({item.span_id for _, item in waiting})
            except sqlite3.Error as error:
                logger.warning("span annotations: looking for their spans failed (%s); trying again", error)
                traces, kept = {}, waiting
                waiting = []
            now, late = time.monotonic(), 0
            for give_up_at, item in waiting:
                trace_id = traces.get(item.span_id)
                try:
                    if trace_id is not None:
                        self._record(item, trace_id)
                    elif now >= give_up_at:
                        late += 1
                    else:
                        kept.append((give_up_at, item))
                except sqlite3.Error as error:
                    logger.warning("span annotation for %s not recorded yet (%s); trying again", item.span_id, error)
                    kept.append((give_up_at, item))
            with self._lock:
                self._waiting[:0] = kept
                self.counters.waiting = len(self._waiting)
            if late:
                self._note(UNKNOWN_SPAN, late, f"no such span came within {self.wait_for_span_s:g} s")

    def _note(self, reason: str, count: int, detail: str = "") -> None:
        """Count annotations that give no reward; log the reason at most once a minute per reason."""
        with self._lock:
            if reason == UNKNOWN_SPAN:
                self.counters.unknown_span += count
            else:
                self.counters.without_score += count
            self._unlogged[reason] = self._unlogged.get(reason, 0) + count
            now = time.monotonic()
            if now - self._logged_at.get(reason, -self.log_every_s) < self.log_every_s:
                return
            self._logged_at[reason] = now
            count = self._unlogged.pop(reason)
        logger.warning(
            "%d span annotation(s) not recorded as rewards: %s%s", count, reason, f" ({detail})" if detail else ""
        )


def _global_id(local: str) -> str:
    # Phoenix answers Relay global ids, base64("SpanAnnotation:<row id>"); ours number the feedback row.
    return base64.b64encode(f"SpanAnnotation:{local}".encode()).decode()
