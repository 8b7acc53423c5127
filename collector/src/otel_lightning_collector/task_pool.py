"""TaskPool: tasks in, leased rollouts out, in the collector's SQLite store (survives restarts).

A task of group size n is n samples. A worker claims a sample with a lease; it heartbeats and
completes it. A lease that expires (worker crashed or hung), a completion with `requeue` or a
failed model call puts the sample back, with its attempt count up and a growing wait before it can
be claimed again (`retry_backoff_s`, doubling), until `max_attempts`; then the sample is failed
with the reason. Each claim gets a fresh rollout id, which the worker's rollout carries.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from otel_lightning_collector.assembler import AbandonedRollout
from otel_lightning_collector.store import Store

logger = logging.getLogger(__name__)
_MAX_RETRY_BACKOFF_S = 60.0

QUEUED, LEASED, DONE, FAILED = "queued", "leased", "done", "failed"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY,
    input_json TEXT NOT NULL,
    group_size INTEGER NOT NULL,
    submitted_ns INTEGER NOT NULL,
    openai_base_url TEXT NOT NULL DEFAULT '',
    policy_version TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id TEXT NOT NULL,
    sample INTEGER NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_id TEXT,
    lease_expires_ns INTEGER,
    lease_ns INTEGER,
    worker TEXT,
    rollout_id TEXT,
    status TEXT,
    error TEXT,
    retry_reason TEXT,
    available_ns INTEGER NOT NULL DEFAULT 0,
    UNIQUE (task_id, sample)
);
CREATE INDEX IF NOT EXISTS samples_by_state ON samples (state, seq);
CREATE UNIQUE INDEX IF NOT EXISTS samples_by_lease ON samples (lease_id);
"""
# Task columns added after the first release, each TEXT NOT NULL DEFAULT ''.
_ADDED_TASK_COLUMNS = ("openai_base_url", "policy_version")


@dataclass(frozen=True)
class TaskSpec:
    task_id: str
    input_json: str
    group_size: int = 1
    openai_base_url: str = ""
    policy_version: str = ""


@dataclass(frozen=True)
class LeaseInfo:
    lease_id: str
    task_id: str
    input_json: str
    sample: int
    attempt: int
    rollout_id: str
    lease_s: float
    openai_base_url: str = ""
    policy_version: str = ""


@dataclass(frozen=True)
class SampleInfo:
    sample: int
    state: str
    attempts: int
    status: str
    error: str
    rollout_id: str


class TaskPool:
    def __init__(
        self,
        store: Store,
        *,
        max_attempts: int = 3,
        on_abandoned: Callable[[list[AbandonedRollout]], None] | None = None,
        retry_backoff_s: float = 1.0,
    ) -> None:
        self.retry_backoff_s = retry_backoff_s
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.store = store
        self.max_attempts = max_attempts
        # Told of the rollouts whose lease expired (the assembler marks them abandoned).
        self.on_abandoned = on_abandoned
        self._reaping = threading.Event()
        self._reaper: threading.Thread | None = None
        self._available = threading.Condition()
        with store.transaction() as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            # Stores written before tasks had these columns.
            columns = {row[1] for row in db.execute("PRAGMA table_info(tasks)")}
            for added in _ADDED_TASK_COLUMNS:
                if added not in columns:
                    db.execute(f"ALTER TABLE tasks ADD COLUMN {added} TEXT NOT NULL DEFAULT ''")
            sample_columns = {row[1] for row in db.execute("PRAGMA table_info(samples)")}
            if "retry_reason" not in sample_columns:
                db.execute("ALTER TABLE samples ADD COLUMN retry_reason TEXT")
            if "available_ns" not in sample_columns:
                db.execute("ALTER TABLE samples ADD COLUMN available_ns INTEGER NOT NULL DEFAULT 0")

    def submit(self, tasks: list[TaskSpec]) -> tuple[int, int]:
        """Add tasks (ids already present are left as they are); returns (accepted, already_known)."""
        accepted = 0
        now = time.time_ns()
        with self.store.transaction() as db:
            for task in tasks:
                if not task.task_id:
                    raise ValueError("every task needs a non-empty task_id")
                cursor = db.execute(
                    "INSERT OR IGNORE INTO tasks"
                    " (task_id, input_json, group_size, submitted_ns, openai_base_url, policy_version)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        task.task_id,
                        task.input_json,
                        max(task.group_size, 1),
                        now,
                        task.openai_base_url,
                        task.policy_version,
                    ),
                )
                if cursor.rowcount:
                    accepted += 1
                    db.executemany(
                        "INSERT INTO samples (task_id, sample, state) VALUES (?, ?, ?)",
                        [(task.task_id, sample, QUEUED) for sample in range(max(task.group_size, 1))],
                    )
        with self._available:
            self._available.notify_all()
        return accepted, len(tasks) - accepted

    def claim(self, worker: str, lease_s: float, wait_s: float = 0.0) -> LeaseInfo | None:
        deadline = time.monotonic() + wait_s
        while True:
            self.expire_leases()
            lease = self._claim_now(worker, lease_s)
            remaining = deadline - time.monotonic()
            if lease is not None or remaining <= 0:
                return lease
            with self._available:
                self._available.wait(min(remaining, 0.5))

    def _claim_now(self, worker: str, lease_s: float) -> LeaseInfo | None:
        lease_id, rollout_id = uuid.uuid4().hex, uuid.uuid4().hex
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT s.seq, s.task_id, s.sample, s.attempts, t.input_json, t.openai_base_url, t.policy_version"
                " FROM samples s"
                " JOIN tasks t ON t.task_id = s.task_id WHERE s.state = ? AND s.available_ns <= ?"
                " ORDER BY s.seq LIMIT 1",
                (QUEUED, time.time_ns()),
            ).fetchone()
            if row is None:
                return None
            seq, task_id, sample, attempts, input_json, openai_base_url, policy_version = row
            db.execute(
                "UPDATE samples SET state = ?, lease_id = ?, lease_expires_ns = ?, lease_ns = ?, worker = ?,"
                " rollout_id = ? WHERE seq = ?",
                (LEASED, lease_id, time.time_ns() + int(lease_s * 1e9), int(lease_s * 1e9), worker, rollout_id, seq),
            )
        return LeaseInfo(
            lease_id, task_id, input_json, sample, attempts, rollout_id, lease_s, openai_base_url, policy_version
        )

    def heartbeat(self, lease_id: str) -> bool:
        """Renew a lease for its own length; False when it already expired (the sample is requeued)."""
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT lease_expires_ns, lease_ns FROM samples WHERE lease_id = ? AND state = ?", (lease_id, LEASED)
            ).fetchone()
            now = time.time_ns()
            if row is None or row[0] < now:
                return False
            db.execute("UPDATE samples SET lease_expires_ns = ? WHERE lease_id = ?", (now + row[1], lease_id))
        return True

    def complete(
        self, lease_id: str, status: str, error_type: str = "", error_message: str = "", requeue: bool = False
    ) -> bool:
        """Finish a lease; False when it is unknown or no longer held (it expired and was requeued)."""
        error = f"{error_type}: {error_message}".strip(": ")
        with self.store.transaction() as db:
            row = db.execute(
                "SELECT seq, attempts, retry_reason FROM samples WHERE lease_id = ? AND state = ?", (lease_id, LEASED)
            ).fetchone()
            if row is None:
                return False
            seq, attempts, retry_reason = row
            if requeue or retry_reason:
                self._requeue(db, seq, attempts, status, retry_reason or error or "the worker asked to requeue")
            else:
                db.execute(
                    "UPDATE samples SET state = ?, status = ?, error = ?, attempts = attempts + 1 WHERE seq = ?",
                    (DONE, status, error, seq),
                )
        return True

    def retry_rollouts(self, rollouts: list[tuple[str, str]]) -> set[str]:
        """Put the samples of these (rollout_id, reason) back in the queue (up to max_attempts): rollouts
        that failed for a reason outside the agent (the model server), so another try is fair.
        A sample still leased is requeued when its worker completes it. Returns the rollout ids whose
        sample will run again (the others were not the pool's, or used up their attempts)."""
        retried: set[str] = set()
        with self.store.transaction() as db:
            for rollout_id, reason in rollouts:
                row = db.execute(
                    "SELECT seq, attempts, state FROM samples WHERE rollout_id = ?", (rollout_id,)
                ).fetchone()
                if row is None:
                    continue
                seq, attempts, state = row
                if state == DONE:
                    # complete() counted the attempt already.
                    if self._requeue(db, seq, attempts - 1, "llm_error", reason):
                        retried.add(rollout_id)
                elif state == LEASED:
                    db.execute("UPDATE samples SET retry_reason = ? WHERE seq = ?", (reason, seq))
                    if attempts + 1 < self.max_attempts:  # what complete() will decide
                        retried.add(rollout_id)
        return retried

    def start_reaper(self, interval_s: float = 1.0) -> None:
        """Expire leases every `interval_s` (claims do too, but a pool nobody claims from must notice)."""

        def reap() -> None:
            while not self._reaping.wait(interval_s):
                try:
                    self.expire_leases()
                except Exception:
                    logger.exception("could not expire leases; retrying")

        self._reaper = threading.Thread(target=reap, name="lease-reaper", daemon=True)
        self._reaper.start()

    def stop_reaper(self) -> None:
        self._reaping.set()
        if self._reaper is not None:
            self._reaper.join(timeout=10)

    def _requeue(self, db, seq: int, attempts: int, status: str, reason: str) -> bool:
        """Back in the queue (True), or failed for good once it used up its attempts (False)."""
        attempts += 1
        if attempts >= self.max_attempts:
            db.execute(
                "UPDATE samples SET state = ?, attempts = ?, status = ?, error = ?, lease_id = NULL,"
                " retry_reason = NULL WHERE seq = ?",
                (FAILED, attempts, status, f"gave up after {attempts} attempts; last: {reason}", seq),
            )
            return False
        # Backoff before the next try: a model server that is down for a few seconds must not use up
        # every attempt of the samples it fails.
        delay_s = min(self.retry_backoff_s * 2 ** (attempts - 1), _MAX_RETRY_BACKOFF_S)
        db.execute(
            "UPDATE samples SET state = ?, attempts = ?, status = ?, error = ?, lease_id = NULL,"
            " retry_reason = NULL, available_ns = ? WHERE seq = ?",
            (QUEUED, attempts, status, reason, time.time_ns() + int(delay_s * 1e9), seq),
        )
        with self._available:
            self._available.notify_all()
        return True

    def expire_leases(self) -> int:
        """Requeue (or fail) samples whose lease ran out, and report their rollouts abandoned; returns how many."""
        now = time.time_ns()
        abandoned = []
        with self.store.transaction() as db:
            rows = db.execute(
                "SELECT seq, attempts, worker, task_id, rollout_id FROM samples"
                " WHERE state = ? AND lease_expires_ns < ?",
                (LEASED, now),
            ).fetchall()
            for seq, attempts, worker, task_id, rollout_id in rows:
                reason = f"lease of worker {worker!r} expired"
                retried = self._requeue(db, seq, attempts, "abandoned", reason)
                abandoned.append(AbandonedRollout(rollout_id, task_id, attempts, reason, retried))
        if abandoned and self.on_abandoned is not None:
            self.on_abandoned(abandoned)
        return len(rows)

    def stats(self) -> dict[str, int]:
        rows = self.store.reader().execute("SELECT state, COUNT(*) FROM samples GROUP BY state").fetchall()
        counts = {QUEUED: 0, LEASED: 0, DONE: 0, FAILED: 0}
        counts.update(dict(rows))
        return counts

    def samples(self, task_id: str) -> list[SampleInfo]:
        rows = (
            self.store.reader()
            .execute(
                "SELECT sample, state, attempts, status, error, rollout_id FROM samples WHERE task_id = ?"
                " ORDER BY sample",
                (task_id,),
            )
            .fetchall()
        )
        return [
            SampleInfo(sample, state, attempts, status or "", error or "", rollout_id or "")
            for sample, state, attempts, status, error, rollout_id in rows
        ]

    def sample(self, task_id: str, sample: int) -> dict[str, object] | None:
        row = (
            self.store.reader()
            .execute(
                "SELECT state, attempts, status, error, rollout_id FROM samples WHERE task_id = ? AND sample = ?",
                (task_id, sample),
            )
            .fetchone()
        )
        keys = ("state", "attempts", "status", "error", "rollout_id")
        return dict(zip(keys, row, strict=True)) if row else None
