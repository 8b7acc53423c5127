"""RolloutAssembler: completes rollouts (builds and commits their transitions) off the ingest path."""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning_collector.credit import credit_rule
from otel_lightning_collector.episodes import LooseTraces, is_episode
from otel_lightning_collector.export_activity import ExportActivity
from otel_lightning_collector.export_tickets import ExportTicket
from otel_lightning_collector.notifier import Notifier
from otel_lightning_collector.rollout_inputs import RolloutInputs
from otel_lightning_collector.store import EVENT_ROLLOUT, EVENT_TRANSITION, Completion, RolloutRow, Store
from otel_lightning_collector.transitions import (
    ABANDONED,
    EPISODE,
    INCOMPLETE,
    MALFORMED,
    SUCCEEDED,
    agent_selector,
    build_rollout,
)

logger = logging.getLogger(__name__)

_STOP = object()
_WAKE = object()
_BATCH = 8
# Deferral to in-flight exports (see ExportActivity), bounded.
_MAX_DEFER_S = 1.0
# How often a wait for the requests acknowledged with a root (see ExportTickets) checks for a stop.
_WAIT_STEP_S = 1.0


@dataclass(frozen=True)
class AbandonedRollout:
    rollout_id: str
    task_id: str
    attempt: int
    reason: str
    retried: bool  # the pool runs the sample again


def _marked_retried(completion: Completion) -> Completion:
    kind, body = completion.events[-1]
    completed = pb.RolloutCompleted.FromString(body)
    completed.retried = True
    events = [*completion.events[:-1], (kind, completed.SerializeToString())]
    return dataclasses.replace(completion, events=events)


class RolloutAssembler:
    """Completes a rollout when its root span is stored and every export request acknowledged
    before or with the root's is indexed (after `settle_s`), or as `incomplete` when it has had no
    root and no new span for `rollout_timeout_s`. One thread, so completion is serial and the commit
    order of the event log is the completion order. A rollout that cannot be built (any exception)
    ends `malformed` with the reason; the others completed with it are not held back.
    """

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        *,
        credit: str = "auto",
        settle_s: float = 0.0,
        rollout_timeout_s: float = 600.0,
        sweep_interval_s: float = 1.0,
        train_agents: Sequence[str] = (),
        activity: ExportActivity | None = None,
        require_reward: bool = False,
    ) -> None:
        self.require_reward = require_reward
        self.activity = activity or ExportActivity()
        self.store = store
        self.notifier = notifier
        self.credit = credit_rule(credit)
        self.trains_agent = agent_selector(train_agents)
        self.settle_s = settle_s
        self.rollout_timeout_s = rollout_timeout_s
        self.sweep_interval_s = sweep_interval_s
        self._queue: queue.Queue[object] = queue.Queue()
        # Asked, before a batch is committed, which of its rollouts run again (the task pool retries
        # those whose model calls failed); their completions say so (`retried`).
        self.retry_decider: Callable[[list[Completion]], set[str]] | None = None
        self._abandoned: list[AbandonedRollout] = []
        self._abandoned_lock = threading.Lock()
        self._stopping = threading.Event()
        # Log records, feedback and evaluations a completion takes (the server sets its recorder).
        self.inputs = RolloutInputs(store)
        # Traces with no rollout: episodes or dropped with the reason (the server sets it up).
        self.loose: LooseTraces | None = None
        self._thread = threading.Thread(target=self._run, name="rollout-assembler", daemon=True)
        self.completed = 0

    def start(self) -> None:
        # Rollouts whose root arrived before a crash or restart are completed first, once the
        # requests left unindexed by that run are indexed.
        self.submit(self.store.ready_rollouts(), after=[self.activity.tickets.fence()])
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._queue.put(_STOP)
        self._thread.join(timeout=10)

    def abandon(self, rollouts: Iterable[AbandonedRollout]) -> None:
        """Complete these rollouts as `abandoned` (their worker lost its lease): no transitions, ever."""
        with self._abandoned_lock:
            self._abandoned.extend(rollouts)
        self._queue.put(_WAKE)

    def _complete_abandoned(self) -> None:
        with self._abandoned_lock:
            abandoned, self._abandoned = self._abandoned, []
        if not abandoned:
            return
        try:
            self.store.ensure_rollouts([(a.rollout_id, a.task_id, a.attempt) for a in abandoned])
            rows = {row.rollout_id: row for row in self.store.rollouts([a.rollout_id for a in abandoned])}
            completions = []
            for item in abandoned:
                completed = pb.RolloutCompleted(
                    rollout_id=item.rollout_id,
                    task_id=item.task_id,
                    attempt=item.attempt,
                    status=ABANDONED,
                    error_type="LeaseExpired",
                    error_message=item.reason,
                    span_count=rows[item.rollout_id].span_count,
                    retried=item.retried,
                )
                completions.append(
                    Completion(
                        item.rollout_id,
                        [(EVENT_ROLLOUT, completed.SerializeToString())],
                        ABANDONED,
                        "LeaseExpired",
                        item.reason,
                    )
                )
            done = self.store.complete_rollouts(completions)
        except Exception:
            logger.exception(
                "could not mark %d rollout(s) abandoned; they complete as incomplete later", len(abandoned)
            )
            return
        for rollout_id in done:
            logger.warning("rollout %s abandoned: its worker lost the lease; never trained on", rollout_id)
        if done:
            self.notifier.notify()

    def submit(self, rollout_ids: Iterable[str], after: Sequence[ExportTicket] = ()) -> None:
        """Complete these rollouts once the requests `after` stands for are indexed (see ExportTickets)."""
        due = time.monotonic() + self.settle_s
        for rollout_id in rollout_ids:
            self._queue.put((due, rollout_id, after))

    def _run(self) -> None:
        next_sweep = time.monotonic() + self.sweep_interval_s
        while True:
            found = self._next_batch(timeout=max(next_sweep - time.monotonic(), 0.0))
            if found is None:
                return
            batch, tickets = found
            if batch and self._wait_for_requests(tickets):
                self.activity.wait_quiet(_MAX_DEFER_S)
                self._complete_safely(batch)
            self._complete_abandoned()
            if time.monotonic() >= next_sweep:
                self._sweep()
                self._sweep_loose()
                next_sweep = time.monotonic() + self.sweep_interval_s

    def _wait_for_requests(self, tickets: list[ExportTicket]) -> bool:
        """Wait until the requests acknowledged before or with these rollouts' roots are indexed;
        False if the assembler stops first (the rollouts stay open: the next start completes them)."""
        waited = 0.0
        while not self.activity.tickets.wait_settled(tickets, _WAIT_STEP_S):
            waited += _WAIT_STEP_S
            if self._stopping.is_set():
                logger.warning("stopping before the spans of %d ready rollout(s) were indexed; left open", len(tickets))
                return False
            if waited == 10 * _WAIT_STEP_S:
                logger.warning("rollouts have waited %.0fs for their spans to be indexed (is the store full?)", waited)
        return True

    def _next_batch(self, timeout: float) -> tuple[list[str], list[ExportTicket]] | None:
        """Rollout ids ready now (up to _BATCH, committed together) and the tickets they wait for;
        None once stopped."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return [], []
        items = [item]
        while len(items) < _BATCH:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        stop = _STOP in items
        due = [entry for entry in items if entry is not _STOP and entry is not _WAKE]
        if due and not stop:
            delay = max(at for at, _, _ in due) - time.monotonic()  # type: ignore[misc]
            if delay > 0:
                time.sleep(delay)
        batch = list(dict.fromkeys(rollout_id for _, rollout_id, _ in due))  # type: ignore[misc]
        tickets = list({id(t): t for _, _, after in due for t in after}.values())  # type: ignore[misc]
        if stop:
            if self._wait_for_requests(tickets):
                self._complete_safely(batch)
            return None
        return batch, tickets

    def _sweep(self) -> None:
        idle_since = time.time_ns() - int(self.rollout_timeout_s * 1e9)
        stale = self.store.stale_rollouts(idle_since)
        for rollout_id in stale:
            logger.warning(
                "rollout %s: no root span for %.0fs, completing it as incomplete", rollout_id, self.rollout_timeout_s
            )
        if stale:
            self._complete_safely(stale)

    def _sweep_loose(self) -> None:
        if self.loose is None:
            return
        try:
            self.loose.sweep()
        except Exception:
            # They stay in the store: the next sweep tries again.
            logger.exception("could not sweep the traces that have no rollout")

    def _complete_safely(self, rollout_ids: list[str]) -> None:
        if not rollout_ids:
            return
        try:
            self.complete(rollout_ids)
        except Exception:
            # They stay open in the store: the next start (or sweep) tries again.
            logger.exception("could not complete rollouts %s", rollout_ids[:5])

    def build(self, row: RolloutRow, span_bodies: list[bytes]) -> Completion:
        built = self.inputs.build(
            row.rollout_id,
            lambda logs, extra_rewards: build_rollout(
                row.rollout_id,
                row.task_id,
                row.attempt,
                span_bodies,
                self.credit,
                root_missing_status=INCOMPLETE,
                trains_agent=self.trains_agent,
                require_reward=self.require_reward,
                logs=logs,
                extra_rewards=extra_rewards,
                source=EPISODE if is_episode(row.rollout_id) else "",
            ),
        )
        completed = built.completed
        completed.late_span_count = row.late_span_count
        events = [(EVENT_TRANSITION, t.SerializeToString()) for t in built.transitions]
        events.append((EVENT_ROLLOUT, completed.SerializeToString()))
        if completed.status != SUCCEEDED:
            logger.info(
                "rollout %s (task %s) ended %s: %s %s",
                row.rollout_id,
                row.task_id,
                completed.status,
                completed.error_type,
                completed.error_message,
            )
        return Completion(row.rollout_id, events, completed.status, completed.error_type, completed.error_message)

    def _build_isolated(self, row: RolloutRow, span_bodies: list[bytes]) -> Completion:
        """`build`, or, when it raises, the rollout ended `malformed` with the reason: one rollout
        that cannot be built must not hold back those completed with it."""
        try:
            return self.build(row, span_bodies)
        except Exception as error:
            reason = f"could not be built ({type(error).__name__}: {error}); no transition kept"
            logger.exception("rollout %s (task %s) %s", row.rollout_id, row.task_id, reason)
            completed = pb.RolloutCompleted(
                rollout_id=row.rollout_id,
                task_id=row.task_id,
                attempt=row.attempt,
                status=MALFORMED,
                error_type=type(error).__name__,
                error_message=reason[:2000],
                span_count=row.span_count,
                late_span_count=row.late_span_count,
            )
            return Completion(
                row.rollout_id,
                [(EVENT_ROLLOUT, completed.SerializeToString())],
                MALFORMED,
                completed.error_type,
                completed.error_message,
            )

    def complete(self, rollout_ids: list[str]) -> list[str]:
        """Build and commit the given rollouts (those still open); returns the ids completed now."""
        rows = self.store.rollouts(rollout_ids)
        spans = self.store.rollout_spans([row.rollout_id for row in rows])
        completions = [self._build_isolated(row, spans[row.rollout_id]) for row in rows]
        if self.retry_decider is not None:
            retried = self.retry_decider(completions)
            completions = [_marked_retried(c) if c.rollout_id in retried else c for c in completions]
        done = self.store.complete_rollouts(completions)
        self.inputs.committed(done, [row.rollout_id for row in rows])
        self.completed += len(done)
        if done:
            self.notifier.notify()
        return done
