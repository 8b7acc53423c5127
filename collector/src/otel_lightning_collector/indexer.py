"""SpanIndexer: splits acknowledged export requests into stored spans, off the acknowledgement path.

The receiver commits each request whole (`Store.append_batch`) and acknowledges it; this thread
decodes the spans, stores them (dedup, late spans, rollout rows) and drops the batch in one
commit, then hands rollouts whose root arrived to the assembler. A crash in between leaves the
batch in the store, and the next start indexes it: acknowledged means durable either way.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_lightning_collector.assembler import RolloutAssembler
from otel_lightning_collector.export_activity import ExportActivity
from otel_lightning_collector.export_tickets import ExportTicket
from otel_lightning_collector.spans import SpanRecord, decode_request
from otel_lightning_collector.store import Store

logger = logging.getLogger(__name__)

_STOP = object()
_REASONS_LOGGED = 5
_MAX_RETRY_S = 5.0
# Deferral to in-flight exports (see ExportActivity), bounded, and only while the backlog is under
# half its bound.
_MAX_DEFER_S = 1.0
# Batches stored per commit: one commit per request made the commit the cost of small requests.
_MAX_BATCHES_PER_COMMIT = 2


@dataclass
class IndexCounters:
    spans_stored: int = 0
    spans_duplicate: int = 0
    spans_late: int = 0
    # Spans outside any rollout, in requests that also held rollout spans.
    spans_foreign: int = 0
    # Rollout spans that cannot be used (bad ids, wrong attribute types): kept aside with the reason.
    spans_rejected: int = 0
    batches_indexed: int = 0


class SpanIndexer:
    def __init__(
        self,
        store: Store,
        assembler: RolloutAssembler,
        *,
        max_pending_spans: int = 50_000,
        activity: ExportActivity | None = None,
    ) -> None:
        self.store = store
        self.activity = activity or ExportActivity()
        self.assembler = assembler
        self.max_pending_spans = max_pending_spans
        self.counters = IndexCounters()
        self._queue: queue.Queue[Any] = queue.Queue()
        self._pending_spans = 0
        self._idle = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="span-indexer", daemon=True)

    @property
    def pending_spans(self) -> int:
        """Spans acknowledged and held in memory, not yet stored one by one."""
        return self._pending_spans

    def has_room(self) -> bool:
        return self._pending_spans < self.max_pending_spans

    def start(self) -> None:
        # Requests acknowledged before a crash or restart are indexed first, in their order.
        tickets = self.activity.tickets
        stored = [(batch_id, tickets.for_stored_request()) for batch_id in self.store.pending_batch_ids()]
        for batch_id, ticket in stored:
            tickets.end_request(ticket)
            self._queue.put((batch_id, None, 0, ticket))
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(_STOP)
        self._thread.join(timeout=30)

    def submit(self, batch_id: int, request: ExportTraceServiceRequest, span_count: int, ticket: ExportTicket) -> None:
        """Index a committed batch; `request` is its parsed form (saves parsing it again); its
        `ticket` is closed once it is indexed (see ExportTickets)."""
        with self._idle:
            self._pending_spans += span_count
        self._queue.put((batch_id, request, span_count, ticket))

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every submitted batch is indexed (tests, shutdown); False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._queue.unfinished_tasks == 0, timeout=timeout_s)

    def _run(self) -> None:
        while True:
            items = [self._queue.get()]
            self._defer_to_exports()
            while len(items) < _MAX_BATCHES_PER_COMMIT:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            batches = [item for item in items if item is not _STOP]
            try:
                self._index_until_stored(batches, stopping=_STOP in items)
            except Exception:
                self._index_one_by_one(batches)
            finally:
                # Indexed, or left in the store for the next start: no completion waits on it now.
                for *_, ticket in batches:
                    self.activity.tickets.close(ticket)
                with self._idle:
                    self._pending_spans -= sum(span_count for _, _, span_count, _ in batches)
                    for _ in items:
                        self._queue.task_done()
                    self._idle.notify_all()
            if _STOP in items:
                return

    def _index_one_by_one(self, batches: list[tuple[int, Any, int, ExportTicket]]) -> None:
        """After a failed commit: each request alone, so one that cannot be indexed holds back no
        other. It stays in the store (the next start tries it again), loudly."""
        for batch in batches:
            try:
                self._index([batch])
            except Exception:
                logger.exception("could not index export request %d; it stays in the store", batch[0])

    def _index_until_stored(self, batches: list[tuple[int, Any, int, ExportTicket]], stopping: bool) -> None:
        """Index, retrying while the store cannot be written (a full disk): the batches are already
        durable, so they wait (the intake refuses new exports meanwhile) rather than being skipped."""
        backoff = 0.1
        while True:
            try:
                return self._index(batches)
            except sqlite3.OperationalError as error:
                if stopping or self._stopping.is_set():
                    raise
                logger.error("store %s cannot take spans (%s); retrying in %.1fs", self.store.path, error, backoff)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, _MAX_RETRY_S)

    def _defer_to_exports(self) -> None:
        if self._pending_spans < self.max_pending_spans // 2:
            self.activity.wait_quiet(_MAX_DEFER_S)

    def _index(self, batches: list[tuple[int, Any, int, ExportTicket]]) -> None:
        if not batches:
            return
        records: list[SpanRecord] = []
        rejected: list[tuple[str, bytes]] = []
        foreign = 0
        for batch_id, request, _, _ in batches:
            if request is None:
                request = ExportTraceServiceRequest.FromString(self.store.batch(batch_id))
            decoded = decode_request(request)
            records.extend(decoded.records)
            rejected.extend(decoded.rejected)
            foreign += decoded.foreign_spans
        result = self.store.ingest(records, [batch_id for batch_id, *_ in batches], rejected)
        counters = self.counters
        counters.spans_foreign += foreign
        counters.spans_rejected += len(rejected)
        if rejected:
            logger.warning(
                "%d span(s) rejected and kept aside in %s (table rejected_spans): %s",
                len(rejected),
                self.store.path,
                "; ".join(reason for reason, _ in rejected[:_REASONS_LOGGED]),
            )
        counters.spans_stored += result.stored
        counters.spans_duplicate += result.duplicates
        counters.spans_late += result.late
        counters.batches_indexed += len(batches)
        if result.late:
            logger.warning("%d span(s) arrived after their rollout was completed; kept, not trained on", result.late)
        # Each ready rollout waits for the requests acknowledged before or with its root's.
        self.assembler.submit(result.ready, after=[ticket for *_, ticket in batches])
