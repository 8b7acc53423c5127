"""RolloutWaiter: one transition-stream subscription per process, shared by every rollout awaited.

verl runs many agent loops at once in each of its agent-loop workers; each submits one task to the
collector's pool and needs that task's rollout back. One follower of the stream (from the moment
it starts) hands each rollout's transitions and completion to whoever expects its task id.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field

from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning.task_client import TaskPoolClient
from otel_lightning.v1 import transitions_pb2 as pb

logger = logging.getLogger(__name__)

# A rollout the collector closed for lack of spans: its worker may have been lost and the pool may
# run the task again, so it is final only once the pool says the task's sample is.
_PROVISIONAL_STATUSES = ("incomplete",)


class RolloutFailedError(RuntimeError):
    """The task's rollout did not succeed (agent error, model server error, gave up after retries)."""


@dataclass
class FinishedRollout:
    task_id: str
    rollout_id: str
    status: str
    error_type: str
    error_message: str
    total_reward: float
    has_reward: bool
    transitions: list[pb.Transition]


@dataclass
class _Expected:
    loop: asyncio.AbstractEventLoop
    arrived: asyncio.Event
    transitions: dict[str, list[pb.Transition]] = field(default_factory=dict)
    finished: list[FinishedRollout] = field(default_factory=list)


class RolloutWaiter:
    _shared: dict[str, RolloutWaiter] = {}
    _shared_lock = threading.Lock()

    def __init__(self, collector: str) -> None:
        self.collector = collector
        self.pool = TaskPoolClient(collector)
        self._expected: dict[str, _Expected] = {}
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._client = TransitionStreamClient(collector, follow=True, from_latest=True, auto_ack=True)
        threading.Thread(target=self._read, name="rollout-waiter", daemon=True).start()

    @classmethod
    def shared(cls, collector: str) -> RolloutWaiter:
        with cls._shared_lock:
            if collector not in cls._shared:
                cls._shared[collector] = cls(collector)
            return cls._shared[collector]

    def _read(self) -> None:
        try:
            for event in self._client:
                self._route(event)
        except Exception as error:
            logger.exception("the transition stream from %s failed", self.collector)
            self._failure = error
        else:
            self._failure = ConnectionError(f"the transition stream from {self.collector} ended")
        with self._lock:
            waiting = list(self._expected.values())
        for expected in waiting:
            expected.loop.call_soon_threadsafe(expected.arrived.set)

    def _route(self, event: pb.StreamEvent) -> None:
        is_transition = event.HasField("transition")
        task_id = event.transition.task_id if is_transition else event.rollout.task_id
        with self._lock:
            expected = self._expected.get(task_id)
        if expected is None:
            return  # another process's task
        if is_transition:
            expected.transitions.setdefault(event.transition.rollout_id, []).append(event.transition)
            return
        done = event.rollout
        expected.finished.append(
            FinishedRollout(
                done.task_id,
                done.rollout_id,
                done.status,
                done.error_type,
                done.error_message,
                done.total_reward,
                done.has_reward,
                expected.transitions.pop(done.rollout_id, []),
            )
        )
        expected.loop.call_soon_threadsafe(expected.arrived.set)

    async def expect(self, task_id: str, connect_timeout_s: float = 30.0) -> None:
        """Call before submitting the task, so none of its events can pass unseen."""
        if not await asyncio.to_thread(self._client.wait_positioned, connect_timeout_s):
            raise ConnectionError(f"could not follow the transition stream of collector {self.collector}")
        with self._lock:
            self._expected[task_id] = _Expected(asyncio.get_running_loop(), asyncio.Event())

    async def wait(self, task_id: str, timeout_s: float, poll_s: float = 2.0) -> FinishedRollout:
        """The task's final rollout; RolloutFailedError if the pool gave up on it, TimeoutError after timeout_s."""
        with self._lock:
            expected = self._expected[task_id]
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                final = await self._final(task_id, expected)
                if final is not None:
                    return final
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no finished rollout of task {task_id} after {timeout_s:g}s")
                expected.arrived.clear()
                try:
                    await asyncio.wait_for(expected.arrived.wait(), min(poll_s, remaining))
                except asyncio.TimeoutError:
                    pass
        finally:
            with self._lock:
                self._expected.pop(task_id, None)

    async def _final(self, task_id: str, expected: _Expected) -> FinishedRollout | None:
        settled = [r for r in expected.finished if r.status not in _PROVISIONAL_STATUSES]
        if settled:
            return settled[0]
        if self._failure is not None:
            raise ConnectionError(f"lost the transition stream of {self.collector}") from self._failure
        samples = await asyncio.to_thread(self.pool.sample_states, task_id)
        failed = next((sample for sample in samples if sample.state == "failed"), None)
        if failed is not None:
            raise RolloutFailedError(f"the pool gave up on task {task_id}: {failed.error}")
        if expected.finished and samples and all(sample.state == "done" for sample in samples):
            return expected.finished[-1]  # the last attempt ended incomplete and no other will run
        return None

    def close(self) -> None:
        with self._shared_lock:
            if self._shared.get(self.collector) is self:
                del self._shared[self.collector]
        self._client.close()
        self.pool.close()
