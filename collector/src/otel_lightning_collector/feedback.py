"""Rewards that arrive on their own: late feedback (the Feedback service, `otel-lightning feedback`)
and `gen_ai.evaluation.result` log records.

Each is a row of the store's `feedback` table, resolved to a rollout by rollout id, trace or
response id. While the rollout is open, the row waits: its completion takes it as a reward. Once it
is complete, the reward becomes a `RewardUpdate` event on the transition stream, in the same
transaction that marks the row applied, so a reward is counted once whichever comes first. Rows
that name a trace or response no rollout has yet wait for one (an episode still forming, a rollout
whose spans are still on their way).
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from dataclasses import dataclass

from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning_collector import store_traces
from otel_lightning_collector.notifier import Notifier
from otel_lightning_collector.store import COMPLETED, EVENT_REWARD_UPDATE, Store

logger = logging.getLogger(__name__)

FEEDBACK = "feedback"
EVALUATION = "evaluation"


class FeedbackTargetError(ValueError):
    """The feedback names nothing (or more than one thing) that can be rated."""


class UnknownTargetError(LookupError):
    """The rollout the feedback names does not exist."""


@dataclass(frozen=True)
class Recorded:
    rollout_id: str  # "" while no rollout has the named trace or response yet
    rollout_completed: bool
    feedback_id: int = 0  # its row in the store's feedback table


def _rollout_state(db: sqlite3.Connection, rollout_id: str) -> tuple[str, str, int] | None:
    return db.execute("SELECT state, task_id, attempt FROM rollouts WHERE rollout_id = ?", (rollout_id,)).fetchone()


def _reward_update_event(db: sqlite3.Connection, item: store_traces.Feedback, task_id: str, attempt: int) -> None:
    update = pb.RewardUpdate(
        rollout_id=item.rollout_id,
        task_id=task_id,
        attempt=attempt,
        name=item.name,
        value=item.value,
        trace_id=item.trace_id,
        response_id=item.response_id,
        origin=item.origin,
        span_id=item.span_id,
    )
    db.execute(
        "INSERT INTO events (kind, rollout_id, body) VALUES (?, ?, ?)",
        (EVENT_REWARD_UPDATE, item.rollout_id, update.SerializeToString()),
    )


class FeedbackRecorder:
    def __init__(self, store: Store, notifier: Notifier) -> None:
        self.store = store
        self.notifier = notifier
        self.recorded = 0
        self.reward_updates = 0

    def record(
        self,
        *,
        score: float,
        name: str = "",
        rollout_id: str = "",
        trace_id: str = "",
        response_id: str = "",
        span_id: str = "",
        origin: str = FEEDBACK,
        time_ns: int | None = None,
    ) -> Recorded:
        """Record one reward. Raises FeedbackTargetError (no target, or not exactly one from the
        user), UnknownTargetError (a rollout id the collector has never seen)."""
        if origin == FEEDBACK and sum(bool(x) for x in (rollout_id, trace_id, response_id)) != 1:
            raise FeedbackTargetError("name exactly one of a trace id, a rollout id or a response id")
        if not (rollout_id or trace_id or response_id):
            raise FeedbackTargetError("feedback must name a trace, a rollout or a response")
        if score != score or score in (float("inf"), float("-inf")):
            raise FeedbackTargetError(f"score must be a finite number, not {score}")
        with self.store.transaction() as db:
            if not rollout_id and trace_id:
                rollout_id = store_traces.owners(db, [trace_id]).get(trace_id, "")
            if not rollout_id and response_id:
                rollout_id = store_traces.rollout_of_response(db, response_id) or ""
            state = _rollout_state(db, rollout_id) if rollout_id else None
            if rollout_id and state is None:
                raise UnknownTargetError(f"no rollout {rollout_id!r} in this collector")
            item = store_traces.Feedback(
                0,
                rollout_id,
                trace_id,
                response_id,
                span_id,
                name,
                float(score),
                time_ns or time.time_ns(),
                origin,
            )
            completed = state is not None and state[0] == COMPLETED
            feedback_id = store_traces.add_feedback(db, item, applied=completed)
            if completed:
                _reward_update_event(db, item, state[1], state[2])
        self.recorded += 1
        if completed:
            self.reward_updates += 1
            self.notifier.notify()
        return Recorded(rollout_id, completed, feedback_id)

    def flush_completed(self, rollout_ids: list[str]) -> int:
        """After these rollouts' completions are committed: rewards recorded for them meanwhile (not
        taken by the completion) become RewardUpdate events. Returns how many."""
        if not rollout_ids:
            return 0
        count = 0
        with self.store.transaction() as db:
            traces = store_traces.rollout_traces(db, rollout_ids)
            for rollout_id in rollout_ids:
                state = _rollout_state(db, rollout_id)
                if state is None or state[0] != COMPLETED:
                    continue
                responses = store_traces.rollout_responses(db, rollout_id)
                pending = store_traces.pending_feedback(db, rollout_id, traces[rollout_id], responses)
                for item in pending:
                    _reward_update_event(db, dataclasses.replace(item, rollout_id=rollout_id), state[1], state[2])
                store_traces.mark_applied(db, [item.id for item in pending])
                count += len(pending)
        if count:
            self.reward_updates += count
            self.notifier.notify()
        return count
