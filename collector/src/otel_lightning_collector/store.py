"""The collector's durable state in one SQLite file (WAL): spans, rollouts, events, consumer acks.

Spans are committed before the OTLP export is acknowledged; a rollout's transitions and its
completion event are committed in one transaction, so a crash leaves either all or none of them.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from otel_lightning_collector import store_traces
from otel_lightning_collector.spans import SpanRecord

logger = logging.getLogger(__name__)

EVENT_TRANSITION = 1
EVENT_ROLLOUT = 2
# A reward recorded after its rollout was streamed (feedback.py); only to subscribers that ask.
EVENT_REWARD_UPDATE = 3

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
    -- A rowid table: spans are large rows, which WITHOUT ROWID tables store badly.
    UNIQUE (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_by_rollout ON spans (rollout_id);
CREATE TABLE IF NOT EXISTS rollouts (
    rollout_id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    root_seen INTEGER NOT NULL DEFAULT 0,
    last_seen_ns INTEGER NOT NULL,
    status TEXT,
    error_type TEXT,
    error_message TEXT,
    completed_ns INTEGER
);
CREATE INDEX IF NOT EXISTS rollouts_by_state ON rollouts (state, last_seen_ns);
CREATE TABLE IF NOT EXISTS events (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    kind INTEGER NOT NULL,
    rollout_id TEXT NOT NULL,
    body BLOB NOT NULL
);
-- Export requests acknowledged but not yet split into spans (the receiver's write-ahead log).
CREATE TABLE IF NOT EXISTS batches (
    batch_id INTEGER PRIMARY KEY,
    body BLOB NOT NULL
);
-- Rollout spans that could not be used, kept with the reason (nothing received is dropped unseen).
CREATE TABLE IF NOT EXISTS rejected_spans (
    id INTEGER PRIMARY KEY,
    received_ns INTEGER NOT NULL,
    reason TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS consumers (
    name TEXT PRIMARY KEY,
    acked_sequence INTEGER NOT NULL
);
"""


_INSERT_SPAN = (
    "INSERT OR IGNORE INTO spans (trace_id, span_id, rollout_id, parent_span_id, name, start_ns, end_ns, late, body)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


# Export requests are stored whole (hundreds of KB): large pages write them in a few page copies
# (64 KiB pages: 4.3 us per span of a 512-span request; 4 KiB pages: 16.7 us, measured).
_PAGE_SIZE = 65536
_CHECKPOINT_S = 1.0
_WAL_LIMIT_BYTES = 64 * 1024 * 1024
# Past this the checkpointer empties the WAL (TRUNCATE) instead of copying beside the writers (PASSIVE):
# a PASSIVE checkpoint cannot reset a WAL that reads keep using, so under steady load it only grew
# (p90 255 MB, once 1.1 GB in the 22-minute retention soak).
_WAL_TRUNCATE_BYTES = 2 * _WAL_LIMIT_BYTES


def _rollback(connection: sqlite3.Connection) -> None:
    # After some errors (a full disk) SQLite has rolled back already: ROLLBACK would raise "no
    # transaction is active" and hide the error that says what happened.
    if connection.in_transaction:
        connection.execute("ROLLBACK")


def _chunks(items: list[str], size: int = 500) -> list[list[str]]:
    # SQLite limits the number of bound parameters per statement.
    return [items[start : start + size] for start in range(0, len(items), size)]


def _span_row(record: SpanRecord, late: bool) -> tuple:
    return (
        record.trace_id,
        record.span_id,
        record.rollout_id,
        record.parent_span_id,
        record.name,
        record.start_ns,
        record.end_ns,
        int(late),
        record.body,
    )


@dataclass
class IngestResult:
    stored: int = 0
    duplicates: int = 0
    late: int = 0
    # Open rollouts whose root span has arrived, in arrival order: ready to be completed.
    ready: dict[str, None] = field(default_factory=dict)
    # Spans with no rollout id that joined a rollout by their trace (now, or stored loose earlier).
    adopted: int = 0
    # Spans stored loose: their trace has no rollout (yet).
    loose: int = 0


@dataclass(frozen=True)
class RolloutRow:
    rollout_id: str
    task_id: str
    attempt: int
    span_count: int
    late_span_count: int


@dataclass(frozen=True)
class Completion:
    """What completing one rollout writes: its events in order, and its final status."""

    rollout_id: str
    events: list[tuple[int, bytes]]
    status: str
    error_type: str = ""
    error_message: str = ""


@dataclass(frozen=True)
class StoredEvent:
    sequence: int
    kind: int
    body: bytes


class Store:
    """Thread-safe: one writer connection behind a lock, one reader connection per thread."""

    def __init__(self, path: str | Path, *, synchronous: str = "NORMAL", max_bytes: int | None = None) -> None:
        """`max_bytes`: the most the database file may grow to; beyond it writes fail as on a full disk."""
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._synchronous = synchronous
        self._write_lock = threading.Lock()
        self._writer = self._connect(new_file_page_size=_PAGE_SIZE)
        self._writer.executescript(_SCHEMA)
        self._writer.executescript(store_traces.SCHEMA)
        # Stores written before rollouts had a completion time.
        if "completed_ns" not in {row[1] for row in self._writer.execute("PRAGMA table_info(rollouts)")}:
            self._writer.execute("ALTER TABLE rollouts ADD COLUMN completed_ns INTEGER")
        # The WAL counts toward max_bytes: the database gets 3/4, the WAL the rest (trimmed to it after
        # each checkpoint, and checkpointed down to nothing when it grows past it).
        self._wal_budget = max_bytes // 4 if max_bytes else None
        if max_bytes:
            page_size = self._writer.execute("PRAGMA page_size").fetchone()[0]
            self._writer.execute(f"PRAGMA max_page_count={max((max_bytes - self._wal_budget) // page_size, 1)}")
            self._writer.execute(f"PRAGMA journal_size_limit={self._wal_budget}")
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._closed = threading.Event()
        self._checkpointer = threading.Thread(
            target=self._checkpoint_periodically, name="store-checkpoint", daemon=True
        )
        self._checkpointer.start()

    def _checkpoint_periodically(self) -> None:
        """Copy the WAL into the database file every _CHECKPOINT_S, beside the writers (PASSIVE: it
        takes no lock they wait on; SQLite does the I/O without holding Python's GIL)."""
        if self.path == ":memory:":
            return
        connection = self._connect()
        try:
            while not self._closed.wait(_CHECKPOINT_S):
                try:
                    connection.execute(f"PRAGMA wal_checkpoint({self._checkpoint_mode()})").fetchall()
                except sqlite3.Error as error:
                    logger.warning("WAL checkpoint of %s failed (%s); retrying", self.path, error)
        finally:
            connection.close()

    def _checkpoint_mode(self) -> str:
        # TRUNCATE waits for the writer and the readers and empties the WAL: only once the WAL is past its
        # bound (its share of max_bytes, else _WAL_TRUNCATE_BYTES), so writers wait rarely.
        bound = self._wal_budget if self._wal_budget is not None else _WAL_TRUNCATE_BYTES
        with contextlib.suppress(OSError):
            if Path(self.path + "-wal").stat().st_size > bound:
                return "TRUNCATE"
        return "PASSIVE"

    def _connect(self, new_file_page_size: int | None = None) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        if new_file_page_size:
            # Takes effect only on a new file (before WAL mode is set); existing stores keep theirs.
            connection.execute(f"PRAGMA page_size={new_file_page_size}")
            # Likewise: retention gives freed pages back with incremental vacuum (store_retention).
            connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL survives a killed process (WAL is fsynced at checkpoints); FULL also survives power loss.
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        # Checkpoints run on the checkpointer's thread: one inside a commit stalled it by up to 0.1 s.
        connection.execute("PRAGMA wal_autocheckpoint=0")
        # A burst (or a retention sweep) grows the WAL; once checkpointed it is cut back to this, so the
        # files on disk stay flat in a steady state.
        connection.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
        return connection

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._write_lock:
                self._readers.append(connection)
        return connection

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """The writer connection inside BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error)."""
        with self._write_lock:
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
                self._writer.execute("COMMIT")
            except BaseException:
                # SQLite has already rolled back after some errors (a full disk): the original error
                # must be raised, not "cannot rollback - no transaction is active".
                if self._writer.in_transaction:
                    self._writer.execute("ROLLBACK")
                raise

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (WAL: reads do not wait for the writer)."""
        return self._reader()

    def close(self) -> None:
        self._closed.set()
        self._checkpointer.join(timeout=10)
        with self._write_lock:
            for connection in self._readers:
                connection.close()
            self._readers.clear()
            self._writer.close()

    # --- ingest -----------------------------------------------------------------------------------

    def append_batch(self, raw_request: bytes) -> int:
        """Commit an export request as received; it stays until `ingest` stores its spans."""
        with self._write_lock:
            return self._writer.execute("INSERT INTO batches (body) VALUES (?)", (raw_request,)).lastrowid

    def pending_batch_ids(self) -> list[int]:
        """Batches appended but not yet ingested (after a restart: the work left undone), oldest first."""
        return [row[0] for row in self._reader().execute("SELECT batch_id FROM batches ORDER BY batch_id")]

    def batch(self, batch_id: int) -> bytes:
        return self._reader().execute("SELECT body FROM batches WHERE batch_id = ?", (batch_id,)).fetchone()[0]

    def ingest(
        self, records: list[SpanRecord], batch_ids: list[int] = (), rejected: list[tuple[str, bytes]] = ()
    ) -> IngestResult:
        """Store spans (duplicates by (trace_id, span_id) are ignored) and their rollouts, keep the
        rejected ones aside (reason, serialized span), and drop the batches they came from, in one commit.

        A handful of batched statements per call, whatever its size: per-span statements made
        SQLite the bottleneck of ingest.
        """
        result = IngestResult()
        now = time.time_ns()
        if any(not r.rollout_id for r in records):
            # A rollout is a trace: spans with no rollout id join the rollout of their trace, if known.
            with self._write_lock:
                known = store_traces.owners(self._writer, {r.trace_id for r in records if not r.rollout_id})
            for record in records:
                if not record.rollout_id and record.trace_id in known:
                    record.rollout_id = known[record.trace_id]
                    result.adopted += 1
            loose = [r for r in records if not r.rollout_id]
            records = [r for r in records if r.rollout_id]
            if loose:
                result.loose = self._store_loose(loose, now)
                # Loose spans are stored too: counted with the others (every span is accounted for).
                result.stored += result.loose
                result.duplicates += len(loose) - result.loose
        if not records:
            with self._write_lock:
                self._writer.execute("BEGIN IMMEDIATE")
                try:
                    self._keep_rejected(rejected, now)
                    self._drop_batches(batch_ids)
                    self._writer.execute("COMMIT")
                except BaseException:
                    _rollback(self._writer)
                    raise
            return result
        rollout_ids = list(dict.fromkeys(r.rollout_id for r in records))
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                completed = self._completed_among(rollout_ids)
                db.executemany(
                    "INSERT OR IGNORE INTO rollouts (rollout_id, task_id, attempt, state, last_seen_ns)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [
                        (r.rollout_id, r.task_id, r.attempt, OPEN, now)
                        for r in {r.rollout_id: r for r in records}.values()
                    ],
                )
                for late in (False, True):
                    rows = [_span_row(r, late) for r in records if (r.rollout_id in completed) == late]
                    before = db.total_changes
                    db.executemany(_INSERT_SPAN, rows)
                    inserted = db.total_changes - before
                    result.stored += inserted
                    result.duplicates += len(rows) - inserted
                    if late:
                        result.late = inserted
                claimed = {r.trace_id: r.rollout_id for r in reversed(records)}
                result.adopted += store_traces.claim(db, claimed, completed)
                roots = {r.rollout_id for r in records if r.is_root}
                db.executemany(
                    "UPDATE rollouts SET last_seen_ns = ?, root_seen = root_seen OR ? WHERE rollout_id = ?",
                    [(now, int(rollout_id in roots), rollout_id) for rollout_id in rollout_ids],
                )
                self._keep_rejected(rejected, now)
                self._drop_batches(batch_ids)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        # A retried root of an open rollout is submitted again: completing is idempotent.
        result.ready = {rollout_id: None for rollout_id in rollout_ids if rollout_id in roots - completed}
        return result

    def _store_loose(self, loose: list[SpanRecord], now: int) -> int:
        """Store spans whose trace no rollout has claimed yet (rollout id ''); returns how many were new."""
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                before = db.total_changes
                db.executemany(_INSERT_SPAN, [_span_row(r, False) for r in loose])
                stored = db.total_changes - before
                store_traces.touch_loose(db, {r.trace_id for r in loose}, now)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        return stored

    def _keep_rejected(self, rejected: list[tuple[str, bytes]], now: int) -> None:
        self._writer.executemany(
            "INSERT INTO rejected_spans (received_ns, reason, body) VALUES (?, ?, ?)",
            [(now, reason, body) for reason, body in rejected],
        )

    def rejected_spans(self, limit: int = 100) -> list[tuple[str, bytes]]:
        """The latest rejected spans: (reason, serialized span), newest first."""
        rows = self._reader().execute("SELECT reason, body FROM rejected_spans ORDER BY id DESC LIMIT ?", (limit,))
        return [(reason, body) for reason, body in rows]

    def _drop_batches(self, batch_ids: list[int]) -> None:
        self._writer.executemany("DELETE FROM batches WHERE batch_id = ?", [(batch_id,) for batch_id in batch_ids])

    def _completed_among(self, rollout_ids: list[str]) -> set[str]:
        completed: set[str] = set()
        for chunk in _chunks(rollout_ids):
            rows = self._writer.execute(
                f"SELECT rollout_id FROM rollouts WHERE state = ? AND rollout_id IN ({','.join('?' * len(chunk))})",
                (COMPLETED, *chunk),
            )
            completed.update(row[0] for row in rows)
        return completed

    # --- rollouts ---------------------------------------------------------------------------------

    def rollout(self, rollout_id: str) -> RolloutRow | None:
        rows = self.rollouts([rollout_id])
        return rows[0] if rows else None

    def rollouts(self, rollout_ids: list[str]) -> list[RolloutRow]:
        """Rows of the given rollouts (unknown ids are left out), in no particular order."""
        found: list[RolloutRow] = []
        for chunk in _chunks(rollout_ids):
            rows = self._reader().execute(
                "SELECT r.rollout_id, task_id, attempt, COUNT(s.span_id), COALESCE(SUM(s.late), 0)"
                " FROM rollouts r LEFT JOIN spans s ON s.rollout_id = r.rollout_id"
                f" WHERE r.rollout_id IN ({','.join('?' * len(chunk))}) GROUP BY r.rollout_id",
                chunk,
            )
            found.extend(RolloutRow(*row) for row in rows)
        return found

    def rollout_spans(self, rollout_ids: list[str]) -> dict[str, list[bytes]]:
        """Serialized spans of each rollout (late ones left out), in start order."""
        spans: dict[str, list[bytes]] = {rollout_id: [] for rollout_id in rollout_ids}
        for chunk in _chunks(rollout_ids):
            rows = self._reader().execute(
                f"SELECT rollout_id, body FROM spans WHERE rollout_id IN ({','.join('?' * len(chunk))})"
                " AND late = 0 ORDER BY rollout_id, start_ns, span_id",
                chunk,
            )
            for rollout_id, body in rows:
                spans[rollout_id].append(body)
        return spans

    def ensure_rollouts(self, rollouts: list[tuple[str, str, int]]) -> None:
        """Rows for (rollout_id, task_id, attempt), open, where none exist (a rollout with no span yet)."""
        now = time.time_ns()
        with self.transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO rollouts (rollout_id, task_id, attempt, state, last_seen_ns)"
                " VALUES (?, ?, ?, ?, ?)",
                [(rollout_id, task_id, attempt, OPEN, now) for rollout_id, task_id, attempt in rollouts],
            )

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

    def complete_rollouts(self, completions: list[Completion]) -> list[str]:
        """Append each rollout's events and mark it completed, all in one transaction.

        Rollouts that were already completed are skipped; returns the ids that were completed now.
        """
        done: list[str] = []
        now = time.time_ns()
        with self._write_lock:
            db = self._writer
            db.execute("BEGIN IMMEDIATE")
            try:
                for completion in completions:
                    cursor = db.execute(
                        "UPDATE rollouts SET state = ?, status = ?, error_type = ?, error_message = ?, completed_ns = ?"
                        " WHERE rollout_id = ? AND state = ?",
                        (
                            COMPLETED,
                            completion.status,
                            completion.error_type,
                            completion.error_message,
                            now,
                            completion.rollout_id,
                            OPEN,
                        ),
                    )
                    if cursor.rowcount == 0:
                        continue
                    db.executemany(
                        "INSERT INTO events (kind, rollout_id, body) VALUES (?, ?, ?)",
                        [(kind, completion.rollout_id, body) for kind, body in completion.events],
                    )
                    done.append(completion.rollout_id)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
        return done

    # --- status -----------------------------------------------------------------------------------

    def status_counts(self, since_ns: int) -> dict[str, tuple[int, int]]:
        """Completed rollouts by status: (total, completed since `since_ns`)."""
        rows = self._reader().execute(
            "SELECT status, COUNT(*), SUM(completed_ns >= ?) FROM rollouts WHERE state = ? GROUP BY status",
            (since_ns, COMPLETED),
        )
        return {status: (total, recent or 0) for status, total, recent in rows}

    def open_rollout_count(self) -> int:
        return self._reader().execute("SELECT COUNT(*) FROM rollouts WHERE state = ?", (OPEN,)).fetchone()[0]

    def top_errors(self, limit: int) -> list[tuple[str, str, int, str, str, str]]:
        """The most frequent (status, error_type) of rollouts that did not succeed, each with its
        latest example: (status, error_type, count, rollout_id, task_id, error_message)."""
        rows = (
            self._reader()
            .execute(
                "SELECT status, error_type, COUNT(*), MAX(completed_ns) FROM rollouts WHERE state = ? AND status != ?"
                " GROUP BY status, error_type ORDER BY COUNT(*) DESC LIMIT ?",
                (COMPLETED, "succeeded", limit),
            )
            .fetchall()
        )
        found = []
        for status, error_type, count, latest in rows:
            example = self._reader().execute(
                "SELECT rollout_id, task_id, error_message FROM rollouts"
                " WHERE state = ? AND status = ? AND error_type IS ? AND completed_ns IS ? LIMIT 1",
                (COMPLETED, status, error_type, latest),
            ).fetchone() or ("", "", "")
            found.append((status, error_type or "", count, example[0], example[1], example[2] or ""))
        return found

    def consumers(self) -> dict[str, int]:
        """Durable consumers and their acked sequence."""
        return dict(self._reader().execute("SELECT name, acked_sequence FROM consumers"))

    # --- events and consumers ---------------------------------------------------------------------

    def events_after(self, sequence: int, limit: int, up_to: int | None = None) -> list[StoredEvent]:
        bound = up_to if up_to is not None else (1 << 62)
        rows = self._reader().execute(
            "SELECT sequence, kind, body FROM events WHERE sequence > ? AND sequence <= ? ORDER BY sequence LIMIT ?",
            (sequence, bound, limit),
        )
        return [StoredEvent(*row) for row in rows]

    def last_sequence(self) -> int:
        # AUTOINCREMENT's counter too: retention may have deleted every event up to the last one.
        row = (
            self._reader()
            .execute(
                "SELECT MAX(COALESCE((SELECT MAX(sequence) FROM events), 0),"
                " COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0))"
            )
            .fetchone()
        )
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
