"""The collector's durable state in one SQLite file (WAL): spans, rollouts, events, consumer acks.

Spans are committed before the OTLP export is acknowledged; a rollout's transitions and its
completion event are committed in one transaction, so a crash leaves either all or none of them.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from otel_lightning_collector.spans import SpanRecord

EVENT_TRANSITION = 1
EVENT_ROLLOUT = 2

OPEN = "open"
COMPLETED = "completed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    rollout_id TEXT NOT NULL,
    parent_span_id TEXT NOT NULL,
    name TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    late INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spans_by_rollout ON spans (rollout_id);
CREATE TABLE IF NOT EXISTS rollouts (
    rollout_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    root_seen INTEGER NOT NULL DEFAULT 0,
    span_count INTEGER NOT NULL DEFAULT 0,
    late_span_count INTEGER NOT NULL DEFAULT 0,
    last_seen_ns INTEGER NOT NULL,
    status TEXT,
    error_type TEXT,
    error_message TEXT
);
CREATE INDEX IF NOT EXISTS rollouts_by_state ON rollouts (state, last_seen_ns);
CREATE TABLE IF NOT EXISTS events (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,
    rollout_id TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY,
    acked_sequence INTEGER NOT NULL
);
"""


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    late: int = 0
    # Open rollouts whose root span has arrived, in arrival order: ready to be completed.
    ready: dict[str, None] = field(default_factory=dict)


@dataclass(frozen=True)
class RolloutRow:
    rollout_id: str
    task_id: str
    attempt: int
    span_count: int
    late_span_count: int


@dataclass(frozen=True)
class StoredEvent:
    sequence: int
    kind: int
    body: bytes


class Store:
    """Thread-safe: one writer connection behind a lock, one reader connection per thread."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL") -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._synchronous = synchronous
        self._write_lock = threading.Lock()
        self._writer = self._connect()
        self._writer.executescript(_SCHEMA)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL survives a killed process (WAL is fsynced at checkpoints); FULL also survives power loss.
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._write_lock:
                self._readers.append(connection)
        return connection

    def close(self) -> None:
        with self._write_lock:
            for connection in self._readers:
                connection.close()
            self._readers.clear()
            self._writer.close()

    # --- ingest -----------------------------------------------------------------------------------

    def ingest(self, records: Iterable[SpanRecord]) -> IngestResult:
        """Store spans (duplicates by (trace_id, span_id) are ignored) and their rollouts, in one commit."""
        result = IngestResult()
        now = time.time_ns()
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                states: dict[str, str] = {}
                for record in records:
                    state = states.get(record.rollout_id)
                    if state is None:
                        db.execute(
                            "INSERT OR IGNORE INTO rollouts (rollout_id, task_id, attempt, state, last_seen_ns)"
                            " VALUES (?, ?, ?, ?, ?)",
                            (record.rollout_id, record.task_id, record.attempt, OPEN, now),
                        )
                        state = db.execute(
                            "SELECT state FROM rollouts WHERE rollout_id = ?", (record.rollout_id,)
                        ).fetchone()[0]
                        states[record.rollout_id] = state
                    late = state == COMPLETED
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO spans (trace_id, span_id, rollout_id, parent_span_id, name,"
                        " start_ns, end_ns, late, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            record.trace_id,
                            record.span_id,
                            record.rollout_id,
                            record.parent_span_id,
                            record.name,
                            record.start_ns,
                            record.end_ns,
                            int(late),
                            record.body,
                        ),
                    )
                    if cursor.rowcount == 0:
                        result.duplicates += 1
                        continue
                    result.stored += 1
                    if late:
                        result.late += 1
                    db.execute(
                        "UPDATE rollouts SET span_count = span_count + 1, late_span_count = late_span_count + ?,"
                        " root_seen = root_seen OR ?, last_seen_ns = ? WHERE rollout_id = ?",
                        (int(late), int(record.is_root), now, record.rollout_id),
                    )
                    if record.is_root and not late:
                        result.ready[record.rollout_id] = None
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return result

    # --- rollouts ---------------------------------------------------------------------------------

    def rollout(self, rollout_id: str) -> RolloutRow | None:
        row = (
            self._reader()
            .execute(
                "SELECT rollout_id, task_id, attempt, span_count, late_span_count FROM rollouts WHERE rollout_id = ?",
                (rollout_id,),
            )
            .fetchone()
        )
        return RolloutRow(*row) if row else None

    def rollout_state(self, rollout_id: str) -> tuple[str, str | None] | None:
        row = (
            self._reader().execute("SELECT state, status FROM rollouts WHERE rollout_id = ?", (rollout_id,)).fetchone()
        )
        return (row[0], row[1]) if row else None

    def rollout_spans(self, rollout_id: str) -> list[bytes]:
        rows = self._reader().execute(
            "SELECT body FROM spans WHERE rollout_id = ? AND late = 0 ORDER BY start_ns, span_id", (rollout_id,)
        )
        return [row[0] for row in rows]

    def ready_rollouts(self) -> list[str]:
        """Open rollouts whose root span is stored (after a restart: the work left undone)."""
        rows = self._reader().execute("SELECT rollout_id FROM rollouts WHERE state = ? AND root_seen = 1", (OPEN,))
        return [row[0] for row in rows]

    def stale_rollouts(self, idle_since_ns: int) -> list[str]:
        """Open rollouts with no root span and no new span since `idle_since_ns`."""
        rows = self._reader().execute(
            "SELECT rollout_id FROM rollouts WHERE state = ? AND root_seen = 0 AND last_seen_ns < ?",
            (OPEN, idle_since_ns),
        )
        return [row[0] for row in rows]

    def complete_rollout(
        self,
        rollout_id: str,
        events: list[tuple[int, bytes]],
        status: str,
        error_type: str = "",
        error_message: str = "",
    ) -> bool:
        """Append the rollout's events and mark it completed, atomically; False if it already was."""
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                cursor = db.execute(
                    "UPDATE rollouts SET state = ?, status = ?, error_type = ?, error_message = ?"
                    " WHERE rollout_id = ? AND state = ?",
                    (COMPLETED, status, error_type, error_message, rollout_id, OPEN),
                )
                if cursor.rowcount == 0:
                    db.execute("ROLLBACK")
                    return False
                db.executemany(
                    "INSERT INTO events (kind, rollout_id, body) VALUES (?, ?, ?)",
                    [(kind, rollout_id, body) for kind, body in events],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return True

    def status_counts(self) -> dict[str, int]:
        rows = self._reader().execute(
            "SELECT COALESCE(status, state), COUNT(*) FROM rollouts GROUP BY COALESCE(status, state)"
        )
        return {row[0]: row[1] for row in rows}

    # --- events and consumers ---------------------------------------------------------------------

    def events_after(self, sequence: int, limit: int, up_to: int | None = None) -> list[StoredEvent]:
        bound = up_to if up_to is not None else (1 << 62)
        rows = self._reader().execute(
            "SELECT sequence, kind, body FROM events WHERE sequence > ? AND sequence <= ? ORDER BY sequence LIMIT ?",
            (sequence, bound, limit),
        )
        return [StoredEvent(*row) for row in rows]

    def last_sequence(self) -> int:
        row = self._reader().execute("SELECT MAX(sequence) FROM events").fetchone()
        return row[0] or 0

    def acked_sequence(self, consumer: str) -> int:
        row = self._reader().execute("SELECT acked_sequence FROM consumers WHERE name = ?", (consumer,)).fetchone()
        return row[0] if row else 0

    def ack(self, consumer: str, sequence: int) -> None:
        """Record a cumulative ack; acks never move backwards."""
        with self._write_lock:
            self._writer.execute(
                "INSERT INTO consumers (name, acked_sequence) VALUES (?, ?) ON CONFLICT(name) DO UPDATE"
                " SET acked_sequence = MAX(acked_sequence, excluded.acked_sequence)",
                (consumer, sequence),
            )
