"""What completing a rollout takes besides its spans: the log records of its traces (GenAI message
events), the rewards recorded for it while it was open (feedback, evaluation log records), and, once
committed, what late feedback needs (its response ids; rewards that came meanwhile as RewardUpdates)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_lightning_collector import store_traces
from otel_lightning_collector.evaluations import Evaluation
from otel_lightning_collector.feedback import FeedbackRecorder
from otel_lightning_collector.store import Store
from otel_lightning_collector.transitions import BuiltRollout


@dataclass
class Taken:
    feedback_ids: list[int] = field(default_factory=list)
    response_ids: list[str] = field(default_factory=list)


def _rewards(items: list[store_traces.Feedback]) -> list[Evaluation]:
    return [
        Evaluation(
            name=item.name,
            score=item.value,
            time_ns=item.time_ns,
            span_id=bytes.fromhex(item.span_id) if item.span_id else b"",
            response_id=item.response_id,
        )
        for item in items
    ]


class RolloutInputs:
    def __init__(self, store: Store, recorder: FeedbackRecorder | None = None) -> None:
        self.store = store
        self.recorder = recorder
        self._taken: dict[str, Taken] = {}
        # LLM steps built with no token ids (shown by `otel-lightning status`).
        self.steps_without_token_ids = 0

    def build(
        self, rollout_id: str, build: Callable[[list[LogRecord], list[Evaluation]], BuiltRollout]
    ) -> BuiltRollout:
        """`build(logs, extra_rewards)` with this rollout's inputs; again if its steps' response ids
        name feedback that was waiting for them."""
        reader = self.store.reader()
        traces = store_traces.rollout_traces(reader, [rollout_id])[rollout_id]
        logs = [LogRecord.FromString(body) for body in store_traces.trace_logs(reader, traces)] if traces else []
        pending = store_traces.pending_feedback(reader, rollout_id, traces, [])
        built = build(logs, _rewards(pending))
        if built.response_ids:
            by_response = store_traces.pending_feedback(reader, None, [], built.response_ids)
            extra = [item for item in by_response if item.id not in {p.id for p in pending}]
            if extra:
                pending += extra
                built = build(logs, _rewards(pending))
        self._taken[rollout_id] = Taken([item.id for item in pending], built.response_ids)
        self.steps_without_token_ids += built.completed.steps_without_token_ids
        return built

    def committed(self, done: list[str], built: list[str]) -> None:
        """After a batch's completions are committed (`done`: those completed now; `built`: every
        rollout built for the batch): mark the rewards they took, record their response ids, and
        turn rewards that came in meanwhile into RewardUpdate events."""
        taken = {rollout_id: self._taken.pop(rollout_id, Taken()) for rollout_id in built}
        if not done:
            return
        with self.store.transaction() as db:
            for rollout_id in done:
                store_traces.mark_applied(db, taken[rollout_id].feedback_ids)
                store_traces.add_responses(db, rollout_id, taken[rollout_id].response_ids)
        if self.recorder is not None:
            self.recorder.flush_completed(done)
