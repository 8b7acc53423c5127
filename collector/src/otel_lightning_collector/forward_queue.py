"""ForwardQueue: export requests waiting to be forwarded, in a SQLite file beside the store.

A request is committed here before the export that carried it is acknowledged, so a collector
killed while its upstream is down forwards it after the restart. Bounded by bytes: when a new
request would take the queue past its bound, the oldest requests not being sent right now are
dropped (counted and logged by the forwarder): an upstream that is down for days costs a bounded
disk, and the newest data, which a backend's users look at first, is kept. Each row counts the
attempts made to send it: one found with attempts after a restart may have reached the upstream
before the crash (a possible duplicate, counted).
"""

from __future__ import annotations

import collections
import sqlite3
import threading
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS forward_queue (
    id INTEGER PRIMARY KEY,
    attempts INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL
);
"""


class ForwardQueue:
    """Thread-safe; `path` None keeps the queue in memory (lost on restart)."""

    def __init__(self, path: str | Path | None, max_bytes: int) -> None:
        self.path = str(path) if path is not None else ":memory:"
        self.max_bytes = max_bytes
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path != ":memory:":
            # WAL and NORMAL: a commit survives a killed process (as the store's do).
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        # id -> size of each queued request, oldest first; the bodies stay on disk.
        self._sizes: collections.OrderedDict[int, int] = collections.OrderedDict()
        self._in_flight: set[int] = set()
        self.queued_bytes = 0
        self.found_attempted = 0
        for row_id, size, attempts in self._db.execute(
            "SELECT id, length(body), attempts FROM forward_queue ORDER BY id"
        ):
            self._sizes[row_id] = size
            self.queued_bytes += size
            self.found_attempted += attempts > 0

    def __len__(self) -> int:
        return len(self._sizes)

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def put(self, raw: bytes) -> int:
        """Commit one request; returns how many of the oldest were dropped to stay within the bound."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row_id = self._db.execute("INSERT INTO forward_queue (body) VALUES (?)", (raw,)).lastrowid
                dropped = []
                total = self.queued_bytes + len(raw)
                for old_id, size in self._sizes.items():
                    if total <= self.max_bytes:
                        break
                    if old_id not in self._in_flight:
                        dropped.append(old_id)
                        total -= size
                self._db.executemany("DELETE FROM forward_queue WHERE id = ?", [(old_id,) for old_id in dropped])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            for old_id in dropped:
                del self._sizes[old_id]
            self._sizes[row_id] = len(raw)
            self.queued_bytes = total
            return len(dropped)

    def take(self) -> tuple[int, bytes] | None:
        """The oldest request no consumer is sending, marked in flight (and attempted, on disk)."""
        with self._lock:
            row_id = next((i for i in self._sizes if i not in self._in_flight), None)
            if row_id is None:
                return None
            self._in_flight.add(row_id)
            self._db.execute("UPDATE forward_queue SET attempts = attempts + 1 WHERE id = ?", (row_id,))
            body = self._db.execute("SELECT body FROM forward_queue WHERE id = ?", (row_id,)).fetchone()[0]
            return row_id, body

    def done(self, row_id: int) -> None:
        """Delivered, or given up on: gone from the queue."""
        with self._lock:
            self._db.execute("DELETE FROM forward_queue WHERE id = ?", (row_id,))
            self._in_flight.discard(row_id)
            self.queued_bytes -= self._sizes.pop(row_id, 0)

    def release(self, row_id: int) -> None:
        """Not delivered (stopping): stays queued for the next start."""
        with self._lock:
            self._in_flight.discard(row_id)

    def close(self) -> None:
        with self._lock:
            self._db.close()
