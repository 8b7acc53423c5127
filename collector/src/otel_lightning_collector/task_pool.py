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

# What a task may hold, checked at submit: a lease must reach the worker that claims it, and our
# TaskPoolClient receives at most gRPC's default 4 MiB. A task too big to receive would kill each
# worker that claims it, again at every requeue. Room is left for the lease's own fields.
CLIENT_MAX_RECEIVE_BYTES = 4 * 1024 * 1024
MAX_TASK_BYTES = CLIENT_MAX_RECEIVE_BYTES - 16 * 1024
MAX_TASK_ID_BYTES = 1024
MAX_URL_BYTES = 2048
MAX_POLICY_VERSION_BYTES = 256
# A group is a handful to a few hundred rollouts of one task; submitting inserts every sample in one
# transaction that exports wait behind, so one request adds at most MAX_SAMPLES_PER_SUBMIT of them.
# 1,024 samples with MAX_ERROR_BYTES each still fit one SampleStates answer our client can receive.
MAX_GROUP_SIZE = 1024
MAX_SAMPLES_PER_SUBMIT = 100_000
MAX_ERROR_BYTES = 2048
_MAX_STATUS_BYTES = 64

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


def _bounded(text: str, limit: int) -> str:
    data = text.encode()
    if len(data) <= limit:
        return text
    note = f" ... [cut: {len(data)} bytes]"
    return data[: limit - len(note)].decode(errors="ignore") + note


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

    @staticmethod
    def check(tasks: list[TaskSpec]) -> None:
        """ValueError naming the task and field when a task is over a limit (nothing is then added)."""
        samples = 0
        for index, task in enumerate(tasks):
            if not task.task_id:
                raise ValueError(f"tasks[{index}]: every task needs a non-empty task_id")
            sizes = {
                "task_id": (len(task.task_id.encode()), MAX_TASK_ID_BYTES),
                "openai_base_url": (len(task.openai_base_url.encode()), MAX_URL_BYTES),
                "policy_version": (len(task.policy_version.encode()), MAX_POLICY_VERSION_BYTES),
            }
            for name, (size, limit) in sizes.items():
                if size > limit:
                    raise ValueError(f"tasks[{index}].{name} is {size} bytes; at most {limit}")
            total = len(task.input_json.encode()) + sum(size for size, _ in sizes.values())
            if total > MAX_TASK_BYTES:
                raise ValueError(
                    f"tasks[{index}] ({task.task_id[:80]!r}): input_json is {total} bytes with its fields; at most"
                    f" {MAX_TASK_BYTES} (a worker receives at most {CLIENT_MAX_RECEIVE_BYTES}); pass large inputs"
                    " by reference (a path or URL in the input)"
                )
            if not 1 <= task.group_size <= MAX_GROUP_SIZE:
                raise ValueError(f"tasks[{index}].group_size must be 1 to {MAX_GROUP_SIZE}, not {task.group_size}")
            samples += task.group_size
        if samples > MAX_SAMPLES_PER_SUBMIT:
            raise ValueError(
                f"one Submit adds at most {MAX_SAMPLES_PER_SUBMIT} samples (tasks x group_size), not {samples};"
                " submit in several requests"
            )

    def submit(self, tasks: list[TaskSpec]) -> tuple[int, int]:
        """Add tasks (ids already present are left as they are); returns (accepted, already_known)."""
        self.check(tasks)
        accepted = 0
        now = time.time_ns()
        with self.store.transaction() as db:
            for task in tasks:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO tasks"
                    " (task_id, input_json, group_size, submitted_ns, openai_base_url, policy_version)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        task.task_id,
                        task.input_json,
                        task.group_size,
                        now,
                        task.openai_base_url,
                        task.policy_version,
                    ),
                )
                if cursor.rowcount:
                    accepted += 1
                    db.executemany(
                        "INSERT INTO samples (task_id, sample, state) VALUES (?, ?, ?)",
                        [(task.task_id, sample, QUEUED) for sample in range(task.group_size)],
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
        """Finish a lease; False when it is unknown or no longer held (it expired and was requeued).

        The error is kept to MAX_ERROR_BYTES (the rest is cut, and the cut said), so what is stored
        fits the answers that carry it back."""
        if len(status.encode()) > _MAX_STATUS_BYTES:
            raise ValueError(f"status is at most {_MAX_STATUS_BYTES} bytes")
        error = _bounded(f"{error_type}: {error_message}".strip(": "), MAX_ERROR_BYTES)
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
