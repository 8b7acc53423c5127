"""The store's retention queries: what may be deleted, deleting it in small transactions, giving the
space back (SQLite incremental vacuum).

What may go: a completed rollout's spans and rows (its transitions live on as events), once it
completed before the cutoff; events every durable consumer has acknowledged, once they were
written before the cutoff. Nothing a consumer has not acknowledged, nothing of an open rollout,
and no export request not yet indexed is ever deleted.
"""

from __future__ import annotations

import sqlite3
import time

from otel_lightning_collector.store import COMPLETED, Store

SCHEMA = """
CREATE INDEX IF NOT EXISTS rollouts_by_completion ON rollouts (state, completed_ns);
-- When each event sequence was reached (one mark per sweep): events have no time of their own.
CREATE TABLE IF NOT EXISTS event_marks (
    sequence INTEGER PRIMARY KEY,
    at_ns INTEGER NOT NULL
);
-- Events up to this sequence were deleted by retention: a reader asking for them is told so.
CREATE TABLE IF NOT EXISTS retention_state (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

# Tables of other parts keyed by rollout (trace membership, feedback, response ids): their rows go
# with the rollout. Checked at run time, so a store without them works too.
_BY_ROLLOUT = ("traces", "feedback", "responses")


def prepare(store: Store) -> None:
    with store.transaction() as db:
        for statement in filter(str.strip, SCHEMA.split(";")):
            db.execute(statement)


def auto_vacuum_mode(store: Store) -> int:
    """0: none (freed pages are reused, never given back), 1: full, 2: incremental."""
    return store.reader().execute("PRAGMA auto_vacuum").fetchone()[0]


def used_bytes(store: Store) -> int:
    """Bytes of the store's pages in use (the file may be larger by its free pages)."""
    db = store.reader()
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    free = db.execute("PRAGMA freelist_count").fetchone()[0]
    return (pages - free) * page_size


def mark_events(store: Store, now_ns: int) -> None:
    last = store.last_sequence()
    with store.transaction() as db:
        db.execute("INSERT OR IGNORE INTO event_marks (sequence, at_ns) VALUES (?, ?)", (last, now_ns))


def completed_before(store: Store, cutoff_ns: int, limit: int) -> list[str]:
    """Completed rollouts, oldest completion first, that completed before `cutoff_ns`."""
    rows = store.reader().execute(
        "SELECT rollout_id FROM rollouts WHERE state = ? AND completed_ns < ? ORDER BY completed_ns LIMIT ?",
        (COMPLETED, cutoff_ns, limit),
    )
    return [row[0] for row in rows]


def delete_rollouts(store: Store, rollout_ids: list[str]) -> int:
    """Delete completed rollouts' spans and rows (and other parts' rows of them); returns spans deleted."""
    with store.transaction() as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        params = [(rollout_id,) for rollout_id in rollout_ids]
        before = db.total_changes
        db.executemany("DELETE FROM spans WHERE rollout_id = ?", params)
        spans = db.total_changes - before
        if "logs" in tables and "traces" in tables:
            db.executemany(
                "DELETE FROM logs WHERE trace_id IN (SELECT trace_id FROM traces WHERE rollout_id = ?)", params
            )
        for table in _BY_ROLLOUT:
            if table in tables:
                db.executemany(f"DELETE FROM {table} WHERE rollout_id = ?", params)
        db.executemany("DELETE FROM rollouts WHERE rollout_id = ? AND state = ?", [(r, COMPLETED) for r in rollout_ids])
    return spans


def acked_by_all(store: Store) -> tuple[int, dict[str, int]]:
    """The highest sequence every durable consumer has acknowledged (0 with no consumer), and each one's."""
    consumers = store.consumers()
    return (min(consumers.values()) if consumers else 0), consumers


def deletable_events_through(store: Store, cutoff_ns: int | None) -> int:
    """The last event sequence that may go: acknowledged by every durable consumer and, with a
    cutoff, reached before it."""
    acked, _ = acked_by_all(store)
    if cutoff_ns is None:
        return acked
    row = store.reader().execute("SELECT MAX(sequence) FROM event_marks WHERE at_ns < ?", (cutoff_ns,)).fetchone()
    return min(acked, row[0] or 0)


def deleted_through(store: Store) -> int:
    """Events up to this sequence were deleted by retention (0: none)."""
    try:
        row = store.reader().execute("SELECT value FROM retention_state WHERE name = 'events_deleted_through'")
    except sqlite3.OperationalError:  # a store retention never ran on
        return 0
    found = row.fetchone()
    return found[0] if found else 0


def delete_events_through(store: Store, sequence: int, chunk: int = 5000) -> int:
    """Delete events up to `sequence`, `chunk` at a time (the writer is held briefly); returns how many."""
    deleted = 0
    start = deleted_through(store)
    while start < sequence:
        upper = min(start + chunk, sequence)
        with store.transaction() as db:
            before = db.total_changes
            db.execute("DELETE FROM events WHERE sequence <= ?", (upper,))
            deleted += db.total_changes - before
            db.execute("DELETE FROM event_marks WHERE sequence < ?", (upper,))
            db.execute(
                "INSERT INTO retention_state (name, value) VALUES ('events_deleted_through', ?)"
                " ON CONFLICT(name) DO UPDATE SET value = MAX(value, excluded.value)",
                (upper,),
            )
        start = upper
        time.sleep(0)  # let a waiting writer in between chunks
    return deleted


def give_back_space(store: Store, keep_fraction: float = 0.1) -> int:
    """Incremental vacuum of the free pages beyond `keep_fraction` of the file (kept for reuse);
    returns the pages given back."""
    with store._write_lock:
        db = store._writer
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        surplus = free - int(pages * keep_fraction)
        if surplus <= 0:
            return 0
        # executescript steps the pragma to its end (execute() frees one page per call).
        db.executescript(f"PRAGMA incremental_vacuum({surplus});")
    return surplus
