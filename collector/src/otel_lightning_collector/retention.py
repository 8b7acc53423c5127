"""RetentionSweeper: keeps a long-running collector's store flat.

Every `interval_s`, on a thread of its own and in small transactions (ingest waits at most one
chunk's delete), it deletes what `store_retention` says may go: completed rollouts' spans older
than `--retain-hours`, and events every durable consumer has acknowledged that are older than that.
With a byte budget (`--retain-mb`), while the store's pages in use exceed it, the oldest completed
rollouts and acknowledged events go regardless of age. Freed pages are given back to the disk by
SQLite's incremental vacuum (new stores are created with auto_vacuum=INCREMENTAL; in an older store
freed pages are reused, so the file stops growing, and a warning says how to convert it).

Nothing unacknowledged is deleted: a consumer that never acks holds every event after its ack (a
warning names it). A reader asking for events retention deleted gets OUT_OF_RANGE naming the
first sequence still kept (see stream_service).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from otel_lightning_collector import store_retention
from otel_lightning_collector.store import Store

logger = logging.getLogger(__name__)

# Rollouts deleted per transaction: a few thousand spans, a few milliseconds of the writer.
_CHUNK = 100
_WARN_EVERY_S = 600.0


@dataclass
class RetentionCounters:
    sweeps: int = 0
    rollouts_deleted: int = 0
    spans_deleted: int = 0
    events_deleted: int = 0
    pages_given_back: int = 0
    # Sweeps that ended with the store still over its byte budget (only unacked or open data left).
    sweeps_over_budget: int = 0


@dataclass
class RetentionPolicy:
    retain_s: float | None = None  # None: kept until the byte budget needs the room
    max_bytes: int | None = None
    interval_s: float = 10.0
    counters: RetentionCounters = field(default_factory=RetentionCounters)

    @property
    def enabled(self) -> bool:
        return bool(self.retain_s) or bool(self.max_bytes)


class RetentionSweeper:
    def __init__(self, store: Store, policy: RetentionPolicy) -> None:
        self.store = store
        self.policy = policy
        self.counters = policy.counters
        self._stopping = threading.Event()
        self._last_warning = 0.0
        self._thread = threading.Thread(target=self._run, name="store-retention", daemon=True)

    def start(self) -> RetentionSweeper:
        store_retention.prepare(self.store)
        if self.store.path != ":memory:" and store_retention.auto_vacuum_mode(self.store) != 2:
            # auto_vacuum cannot change while the store is in WAL mode with its connections open.
            logger.warning(
                "store %s predates incremental vacuum: retention frees pages that new data reuses (the file stops"
                " growing) but the file does not shrink; to convert it, stop the collector and run sqlite3 %s"
                " 'PRAGMA journal_mode=DELETE; PRAGMA auto_vacuum=INCREMENTAL; VACUUM; PRAGMA journal_mode=WAL;'",
                self.store.path,
                self.store.path,
            )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stopping.wait(self.policy.interval_s):
            try:
                self.sweep()
            except Exception:
                logger.exception("retention sweep of %s failed; trying again in %.0fs", self.store.path, 10)

    def sweep(self, now_ns: int | None = None) -> None:
        """One pass: mark the event log's position, delete what the policy allows, give space back."""
        now_ns = now_ns or time.time_ns()
        store = self.store
        store_retention.mark_events(store, now_ns)
        if self.policy.retain_s:
            cutoff = now_ns - int(self.policy.retain_s * 1e9)
            self._delete_rollouts_before(cutoff)
            self._delete_events(store_retention.deletable_events_through(store, cutoff))
        if self.policy.max_bytes:
            self._meet_budget(self.policy.max_bytes)
        self.counters.pages_given_back += store_retention.give_back_space(store)
        self.counters.sweeps += 1

    def _delete_rollouts_before(self, cutoff_ns: int, most: int | None = None) -> int:
        deleted = 0
        while not self._stopping.is_set() and (most is None or deleted < most):
            rollout_ids = store_retention.completed_before(self.store, cutoff_ns, _CHUNK)
            if not rollout_ids:
                break
            self.counters.spans_deleted += store_retention.delete_rollouts(self.store, rollout_ids)
            self.counters.rollouts_deleted += len(rollout_ids)
            deleted += len(rollout_ids)
        return deleted

    def _delete_events(self, through: int) -> int:
        if through <= store_retention.deleted_through(self.store):
            return 0
        deleted = store_retention.delete_events_through(self.store, through)
        self.counters.events_deleted += deleted
        return deleted

    def _meet_budget(self, max_bytes: int) -> None:
        """Oldest first, whatever their age, while over the budget; never what is not acknowledged."""
        store = self.store
        while store_retention.used_bytes(store) > max_bytes and not self._stopping.is_set():
            progressed = self._delete_rollouts_before(time.time_ns(), most=_CHUNK * 10)
            progressed += self._delete_events(store_retention.deletable_events_through(store, None))
            if not progressed:
                self.counters.sweeps_over_budget += 1
                self._warn_over_budget(max_bytes)
                return

    def _warn_over_budget(self, max_bytes: int) -> None:
        now = time.monotonic()
        if now - self._last_warning < _WARN_EVERY_S:
            return
        self._last_warning = now
        acked, consumers = store_retention.acked_by_all(self.store)
        behind = sorted(consumers.items(), key=lambda item: item[1])[:3]
        logger.warning(
            "store %s uses %.0f MB, over its --retain-mb budget of %.0f MB, and nothing more may be deleted: events"
            " after %d are not acknowledged by every consumer (furthest behind: %s), or rollouts are still open",
            self.store.path,
            store_retention.used_bytes(self.store) / 1e6,
            max_bytes / 1e6,
            acked,
            ", ".join(f"{name} at {sequence}" for name, sequence in behind) or "no consumer has subscribed",
        )
