"""The store as `otel-lightning export` reads it: read-only, one snapshot, the event log as the truth.

Retention may delete a completed rollout's row while its events live on, so what a rollout was
(status, reward, transitions) comes from its events; only its completion time is the row's. A
rollout's transitions and completion are committed together, so they are neighbours in the log.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning_collector.store import EVENT_REWARD_UPDATE, EVENT_ROLLOUT, EVENT_TRANSITION


class StoreReadError(Exception):
    """The store cannot be read; the message says why and what to do."""


@dataclass
class StoredRollout:
    rollout_id: str
    task_id: str
    status: str
    # The completion's rewards plus late ones (reward updates): what the rollout scored in the end.
    reward: float
    has_reward: bool
    transition_count: int
    completed_ns: int | None  # None: its row was removed by retention


@contextlib.contextmanager
def open_store(path: str | Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection inside one read transaction (a consistent snapshot beside a running collector)."""
    file = Path(path)
    if not file.is_file():
        raise StoreReadError(f"no store at {path} (give the collector's --store file)")
    try:
        connection = sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as error:
        raise StoreReadError(f"cannot open the store {path}: {error}") from None
    try:
        connection.execute("BEGIN")
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"events", "rollouts"} <= tables:
            raise StoreReadError(f"{path} is not an otel-lightning collector store (no events table)")
        yield connection
    except sqlite3.DatabaseError as error:
        raise StoreReadError(f"cannot read the store {path}: {error}") from None
    finally:
        connection.close()


def completed_rollouts(db: sqlite3.Connection) -> tuple[list[StoredRollout], int]:
    """Every completed rollout with events, in completion order; and how many completed rollouts have a
    row but no events left (retention deleted them)."""
    found: dict[str, StoredRollout] = {}
    for kind, body in db.execute(
        "SELECT kind, body FROM events WHERE kind IN (?, ?) ORDER BY sequence", (EVENT_ROLLOUT, EVENT_REWARD_UPDATE)
    ):
        if kind == EVENT_ROLLOUT:
            done = pb.RolloutCompleted.FromString(body)
            found[done.rollout_id] = StoredRollout(
                done.rollout_id,
                done.task_id,
                done.status,
                done.total_reward,
                done.has_reward,
                done.transition_count,
                None,
            )
        elif (rollout := found.get((update := pb.RewardUpdate.FromString(body)).rollout_id)) is not None:
            rollout.reward += update.value
            rollout.has_reward = True
    without_events = 0
    for rollout_id, completed_ns in db.execute(
        "SELECT rollout_id, completed_ns FROM rollouts WHERE state = 'completed'"
    ):
        if rollout_id in found:
            found[rollout_id].completed_ns = completed_ns
        else:
            without_events += 1
    return list(found.values()), without_events


def transitions(db: sqlite3.Connection, rollout_ids: set[str]) -> Iterator[list[pb.Transition]]:
    """The transitions of the given rollouts, one rollout's list at a time, in commit order."""
    current: list[pb.Transition] = []
    for rollout_id, body in db.execute(
        "SELECT rollout_id, body FROM events WHERE kind = ? ORDER BY sequence", (EVENT_TRANSITION,)
    ):
        if rollout_id not in rollout_ids:
            continue
        if current and current[0].rollout_id != rollout_id:
            yield current
            current = []
        current.append(pb.Transition.FromString(body))
    if current:
        yield current


def task_inputs(db: sqlite3.Connection) -> dict[str, Any]:
    """Each pooled task's input (decoded JSON), by task id; none for a store without a task pool."""
    if not db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tasks'").fetchone():
        return {}
    inputs: dict[str, Any] = {}
    for task_id, input_json in db.execute("SELECT task_id, input_json FROM tasks"):
        try:
            inputs[task_id] = json.loads(input_json)
        except ValueError:
            inputs[task_id] = input_json
    return inputs
