"""A rollout is a trace: the store's tables for membership by trace id, log records, feedback.

- `traces` maps each trace to the rollout whose spans carry it (first one wins), so a span with no
  `lightning.rollout.id` (evicted by the SDK's 128-attribute limit, or sent by an agent in another
  language) joins the rollout of its trace.
- A span whose trace no rollout has claimed yet is stored with rollout_id '' ("loose"), and its trace
  is tracked in `loose_traces`; a later rollout span of that trace adopts it. A loose trace that stays
  quiet becomes an episode (`collector --episodes`) or is dropped with the reason (logged, counted).
- `logs` keeps OTLP log records by trace (the GenAI message and evaluation events).
- `feedback` keeps rewards recorded by the Feedback service until their rollout takes them.
- `responses` maps gen_ai.response.id of completed steps to their rollout (feedback by response id).

Functions here run inside the Store's write transaction (`db`) or on its reader connection.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass

SCHEMA = """
CREATE TABLE IF NOT EXISTS traces (
    trace_id TEXT PRIMARY KEY,
    rollout_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_by_rollout ON traces (rollout_id);
CREATE TABLE IF NOT EXISTS loose_traces (
    trace_id TEXT PRIMARY KEY,
    first_seen_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS loose_traces_by_time ON loose_traces (last_seen_ns);
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    body BLOB NOT NULL,
    received_ns INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS logs_by_trace ON logs (trace_id);
CREATE INDEX IF NOT EXISTS logs_by_received ON logs (received_ns);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY,
    rollout_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    response_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    time_ns INTEGER NOT NULL,
    origin TEXT NOT NULL,
    applied INTEGER NOT NULL DEFAULT 0,
    received_ns INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS feedback_pending ON feedback (applied, rollout_id);
CREATE TABLE IF NOT EXISTS responses (
    response_id TEXT PRIMARY KEY,
    rollout_id TEXT NOT NULL
);
"""


def _in(values: list[str]) -> str:
    return ",".join("?" * len(values))


def _chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def owners(db: sqlite3.Connection, trace_ids: Iterable[str]) -> dict[str, str]:
    """trace id -> rollout id, for the traces a rollout has claimed."""
    found: dict[str, str] = {}
    for chunk in _chunks(list(trace_ids)):
        found.update(db.execute(f"SELECT trace_id, rollout_id FROM traces WHERE trace_id IN ({_in(chunk)})", chunk))
    return found


def claim(db: sqlite3.Connection, pairs: dict[str, str], completed: set[str]) -> int:
    """Record (trace -> rollout) for traces seen with a rollout's spans, and move the loose spans
    those traces already had into the rollout (late ones if it is complete). Returns spans adopted."""
    if not pairs:
        return 0
    db.executemany("INSERT OR IGNORE INTO traces (trace_id, rollout_id) VALUES (?, ?)", pairs.items())
    loose: list[str] = []
    for chunk in _chunks(list(pairs)):
        loose.extend(
            row[0] for row in db.execute(f"SELECT trace_id FROM loose_traces WHERE trace_id IN ({_in(chunk)})", chunk)
        )
    if not loose:
        return 0
    owner = owners(db, loose)
    adopted = 0
    for trace_id in loose:
        rollout_id = owner[trace_id]
        cursor = db.execute(
            "UPDATE spans SET rollout_id = ?, late = ? WHERE rollout_id = '' AND trace_id = ?",
            (rollout_id, int(rollout_id in completed), trace_id),
        )
        adopted += cursor.rowcount
    db.executemany("DELETE FROM loose_traces WHERE trace_id = ?", [(t,) for t in loose])
    return adopted


def touch_loose(db: sqlite3.Connection, trace_ids: Iterable[str], now_ns: int) -> None:
    db.executemany(
        "INSERT INTO loose_traces (trace_id, first_seen_ns, last_seen_ns) VALUES (?, ?, ?)"
        " ON CONFLICT(trace_id) DO UPDATE SET last_seen_ns = excluded.last_seen_ns",
        [(trace_id, now_ns, now_ns) for trace_id in trace_ids],
    )


def quiet_loose_traces(db: sqlite3.Connection, idle_since_ns: int, limit: int = 256) -> list[str]:
    rows = db.execute(
        "SELECT trace_id FROM loose_traces WHERE last_seen_ns < ? ORDER BY last_seen_ns LIMIT ?", (idle_since_ns, limit)
    )
    return [row[0] for row in rows]


def loose_spans(db: sqlite3.Connection, trace_id: str) -> list[bytes]:
    rows = db.execute(
        "SELECT body FROM spans WHERE rollout_id = '' AND trace_id = ? ORDER BY start_ns, span_id", (trace_id,)
    )
    return [row[0] for row in rows]


def drop_loose(db: sqlite3.Connection, trace_id: str) -> int:
    """Forget a loose trace and its spans; returns how many spans went."""
    count = db.execute("DELETE FROM spans WHERE rollout_id = '' AND trace_id = ?", (trace_id,)).rowcount
    db.execute("DELETE FROM loose_traces WHERE trace_id = ?", (trace_id,))
    return count


def adopt_as(db: sqlite3.Connection, trace_id: str, rollout_id: str) -> None:
    """Make a loose trace the rollout (episode) `rollout_id`."""
    db.execute("UPDATE spans SET rollout_id = ? WHERE rollout_id = '' AND trace_id = ?", (rollout_id, trace_id))
    db.execute("DELETE FROM loose_traces WHERE trace_id = ?", (trace_id,))
    db.execute("INSERT OR IGNORE INTO traces (trace_id, rollout_id) VALUES (?, ?)", (trace_id, rollout_id))


def rollout_traces(db: sqlite3.Connection, rollout_ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {rollout_id: [] for rollout_id in rollout_ids}
    for chunk in _chunks(rollout_ids):
        for trace_id, rollout_id in db.execute(
            f"SELECT trace_id, rollout_id FROM traces WHERE rollout_id IN ({_in(chunk)})", chunk
        ):
            found[rollout_id].append(trace_id)
    return found


# --- log records ----------------------------------------------------------------------------------


def add_logs(db: sqlite3.Connection, rows: list[tuple[str, str, int, bytes]], received_ns: int) -> None:
    """(trace id hex, span id hex, time ns, serialized LogRecord) rows."""
    db.executemany(
        "INSERT INTO logs (trace_id, span_id, time_ns, body, received_ns) VALUES (?, ?, ?, ?, ?)",
        [(*row, received_ns) for row in rows],
    )


def drop_unclaimed(db: sqlite3.Connection, received_before_ns: int) -> tuple[int, int]:
    """Log records and feedback received before `received_before_ns` whose trace (or response) no
    rollout has claimed: (log records, feedback rows) deleted. Without it, the logs of traffic that
    is not kept would pile up."""
    logs = db.execute(
        "DELETE FROM logs WHERE received_ns < ? AND trace_id NOT IN (SELECT trace_id FROM traces)",
        (received_before_ns,),
    ).rowcount
    feedback = db.execute(
        "DELETE FROM feedback WHERE applied = 0 AND rollout_id = '' AND received_ns < ?"
        " AND trace_id NOT IN (SELECT trace_id FROM traces)"
        " AND response_id NOT IN (SELECT response_id FROM responses)",
        (received_before_ns,),
    ).rowcount
    return logs, feedback


def trace_logs(db: sqlite3.Connection, trace_ids: list[str]) -> list[bytes]:
    found: list[bytes] = []
    for chunk in _chunks(trace_ids):
        found.extend(
            row[0] for row in db.execute(f"SELECT body FROM logs WHERE trace_id IN ({_in(chunk)}) ORDER BY id", chunk)
        )
    return found


# --- feedback -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Feedback:
    id: int
    rollout_id: str
    trace_id: str
    response_id: str
    span_id: str  # the rated span (an evaluation log record's), hex; "" if none
    name: str
    value: float
    time_ns: int
    origin: str  # "feedback" or "evaluation"


_FEEDBACK_COLUMNS = "id, rollout_id, trace_id, response_id, span_id, name, value, time_ns, origin"


def add_feedback(db: sqlite3.Connection, item: Feedback, applied: bool) -> int:
    return db.execute(
        "INSERT INTO feedback"
        " (rollout_id, trace_id, response_id, span_id, name, value, time_ns, origin, applied, received_ns)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            item.rollout_id,
            item.trace_id,
            item.response_id,
            item.span_id,
            item.name,
            item.value,
            item.time_ns,
            item.origin,
            int(applied),
            time.time_ns(),
        ),
    ).lastrowid


def pending_feedback(
    db: sqlite3.Connection, rollout_id: str | None, trace_ids: list[str], response_ids: list[str]
) -> list[Feedback]:
    """Feedback not yet applied that names this rollout (None: any), one of its traces or responses."""
    clauses, values = (["rollout_id = ?"], [rollout_id]) if rollout_id is not None else ([], [])
    if trace_ids:
        clauses.append(f"trace_id IN ({_in(trace_ids)})")
        values.extend(trace_ids)
    if response_ids:
        clauses.append(f"response_id IN ({_in(response_ids)})")
        values.extend(response_ids)
    if not clauses:
        return []
    rows = db.execute(
        f"SELECT {_FEEDBACK_COLUMNS} FROM feedback WHERE applied = 0 AND ({' OR '.join(clauses)}) ORDER BY id",
        values,
    )
    return [Feedback(*row) for row in rows]


def mark_applied(db: sqlite3.Connection, ids: list[int]) -> None:
    db.executemany("UPDATE feedback SET applied = 1 WHERE id = ?", [(i,) for i in ids])


def add_responses(db: sqlite3.Connection, rollout_id: str, response_ids: Iterable[str]) -> None:
    db.executemany(
        "INSERT OR IGNORE INTO responses (response_id, rollout_id) VALUES (?, ?)",
        [(response_id, rollout_id) for response_id in response_ids if response_id],
    )


def rollout_of_response(db: sqlite3.Connection, response_id: str) -> str | None:
    row = db.execute("SELECT rollout_id FROM responses WHERE response_id = ?", (response_id,)).fetchone()
    return row[0] if row else None


def rollout_responses(db: sqlite3.Connection, rollout_id: str) -> list[str]:
    return [row[0] for row in db.execute("SELECT response_id FROM responses WHERE rollout_id = ?", (rollout_id,))]
