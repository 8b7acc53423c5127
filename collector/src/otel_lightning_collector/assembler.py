"""RolloutAssembler: completes rollouts (builds and commits their transitions) off the ingest path."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable

from otel_lightning_collector.credit import credit_rule
from otel_lightning_collector.notifier import Notifier
from otel_lightning_collector.store import EVENT_ROLLOUT, EVENT_TRANSITION, Store
from otel_lightning_collector.transitions import INCOMPLETE, build_rollout

logger = logging.getLogger(__name__)

_STOP = object()


class RolloutAssembler:
    """Completes a rollout when its root span is stored (after `settle_s`), or as `incomplete` when
    it has had no root and no new span for `rollout_timeout_s`. One thread, so completion is serial
    and the commit order of the event log is the completion order.
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
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.credit = credit_rule(credit)
        self.settle_s = settle_s
        self.rollout_timeout_s = rollout_timeout_s
        self.sweep_interval_s = sweep_interval_s
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="rollout-assembler", daemon=True)
        self.completed = 0

    def start(self) -> None:
        # Rollouts whose root arrived before a crash or restart are completed first.
        self.submit(self.store.ready_rollouts())
        self._thread.start()

    def stop(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=10)

    def submit(self, rollout_ids: Iterable[str]) -> None:
        due = time.monotonic() + self.settle_s
        for rollout_id in rollout_ids:
            self._queue.put((due, rollout_id))

    def _run(self) -> None:
        next_sweep = time.monotonic() + self.sweep_interval_s
        while True:
            timeout = max(next_sweep - time.monotonic(), 0.0)
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if item is not None:
                due, rollout_id = item  # type: ignore[misc]
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                self._complete_safely(rollout_id)
            if time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + self.sweep_interval_s

    def _sweep(self) -> None:
        idle_since = time.time_ns() - int(self.rollout_timeout_s * 1e9)
        for rollout_id in self.store.stale_rollouts(idle_since):
            logger.warning(
                "rollout %s: no root span for %.0fs, completing it as incomplete", rollout_id, self.rollout_timeout_s
            )
            self._complete_safely(rollout_id)

    def _complete_safely(self, rollout_id: str) -> None:
        try:
            self.complete(rollout_id)
        except Exception:
            # It stays open in the store: the next start (or sweep) tries again.
            logger.exception("could not complete rollout %s", rollout_id)

    def complete(self, rollout_id: str) -> bool:
        row = self.store.rollout(rollout_id)
        if row is None:
            return False
        built = build_rollout(
            row.rollout_id,
            row.task_id,
            row.attempt,
            self.store.rollout_spans(rollout_id),
            self.credit,
            root_missing_status=INCOMPLETE,
        )
        events = [(EVENT_TRANSITION, t.SerializeToString()) for t in built.transitions]
        events.append((EVENT_ROLLOUT, built.completed.SerializeToString()))
        completed = built.completed
        if not self.store.complete_rollout(
            rollout_id, events, completed.status, completed.error_type, completed.error_message
        ):
            return False
        self.completed += 1
        if completed.status != "succeeded":
            logger.info(
                "rollout %s (task %s) ended %s: %s %s",
                rollout_id,
                row.task_id,
                completed.status,
                completed.error_type,
                completed.error_message,
            )
        self.notifier.notify()
        return True
