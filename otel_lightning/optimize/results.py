"""What an evaluation collects: each rollout's outcome from the collector's stream, each model call's
latency and tokens from the gateway's spans."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from otel_lightning import semconv
from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning.v1 import transitions_pb2 as pb

logger = logging.getLogger(__name__)

SCORED = "succeeded"


@dataclass
class RolloutResult:
    candidate: str
    task_id: str  # the task's own id (without the candidate prefix)
    rollout_id: str
    status: str
    reward: float | None  # None: not scored (the rollout failed, or recorded no reward)
    error: str = ""
    transitions: list[pb.Transition] = field(default_factory=list)

    @property
    def scored(self) -> bool:
        return self.reward is not None


@dataclass
class CallRecord:
    candidate: str
    latency_s: float
    input_tokens: int
    output_tokens: int
    error: bool


class CallStatsProcessor(SpanProcessor):
    """Keeps the latency and token counts of every LLM span that names a candidate (the gateway's)."""

    def __init__(self) -> None:
        self.calls: list[CallRecord] = []
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        return None

    def on_end(self, span: ReadableSpan) -> None:
        attributes = span.attributes or {}
        candidate = attributes.get(semconv.CANDIDATE)
        if candidate is None or attributes.get(semconv.SPAN_KIND) != semconv.SPAN_KIND_LLM:
            return
        record = CallRecord(
            str(candidate),
            ((span.end_time or 0) - (span.start_time or 0)) / 1e9,
            int(attributes.get(semconv.GEN_AI_USAGE_INPUT_TOKENS, 0) or 0),
            int(attributes.get(semconv.GEN_AI_USAGE_OUTPUT_TOKENS, 0) or 0),
            not span.status.is_ok,
        )
        with self._lock:
            self.calls.append(record)

    def by_candidate(self) -> dict[str, list[CallRecord]]:
        grouped: dict[str, list[CallRecord]] = defaultdict(list)
        with self._lock:
            for record in self.calls:
                grouped[record.candidate].append(record)
        return grouped

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


class RolloutCollector:
    """Follows the collector's stream from now on and keeps the final rollout of each sample whose task id
    `parse(task_id)` recognises ((candidate, task) or None); a rollout the pool runs again is not final."""

    def __init__(
        self,
        address: str,
        parse: Callable[[str], tuple[str, str] | None],
        on_result: Callable[[RolloutResult], None] | None = None,
    ) -> None:
        self.parse = parse
        self.on_result = on_result
        self.results: list[RolloutResult] = []
        self.retried = 0
        self._pending: dict[str, list[pb.Transition]] = {}
        self._lock = threading.Condition()
        self._error: BaseException | None = None
        self._client = TransitionStreamClient(address, follow=True, from_latest=True, max_in_flight=4096)
        self._thread = threading.Thread(target=self._read, name="eval-results", daemon=True)
        self._thread.start()
        if not self._client.wait_positioned(30):
            raise RuntimeError(f"the collector at {address} did not answer the transition stream within 30 s")

    def _read(self) -> None:
        try:
            for event in self._client:
                self._absorb(event)
        except BaseException as error:  # surfaced by wait()
            with self._lock:
                self._error = error
                self._lock.notify_all()

    def _absorb(self, event: pb.StreamEvent) -> None:
        if event.HasField("transition"):
            if self.parse(event.transition.task_id) is not None:
                self._pending.setdefault(event.transition.rollout_id, []).append(event.transition)
            return
        if not event.HasField("rollout"):
            return
        done = event.rollout
        parsed = self.parse(done.task_id)
        transitions = self._pending.pop(done.rollout_id, [])
        if parsed is None:
            return
        if done.retried:
            with self._lock:
                self.retried += 1
            logger.info("task %s: rollout %s ended %s and runs again", done.task_id, done.rollout_id, done.status)
            return
        candidate, task_id = parsed
        error = f"{done.error_type}: {done.error_message}" if done.error_message else done.error_type
        scored = done.status == SCORED and done.has_reward
        status = done.status if done.status != SCORED or done.has_reward else "no_reward"
        result = RolloutResult(
            candidate, task_id, done.rollout_id, status, done.total_reward if scored else None, error, transitions
        )
        with self._lock:
            self.results.append(result)
            self._lock.notify_all()
        if self.on_result is not None:
            self.on_result(result)

    def wait(self, count: int, timeout_s: float) -> bool:
        """True once `count` final rollouts arrived; False when `timeout_s` passed first."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while len(self.results) < count:
                if self._error is not None:
                    raise RuntimeError(f"the transition stream failed: {self._error}") from self._error
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._lock.wait(min(remaining, 1.0))
        return True

    def close(self) -> None:
        self._client.close()


def transition_view(transition: pb.Transition) -> dict[str, Any]:
    """One step as the prompt optimiser shows it: agent, the messages it saw, what it did, its reward."""

    def loads(text: str) -> Any:
        try:
            return json.loads(text) if text else None
        except json.JSONDecodeError:
            return text

    return {
        "step": transition.step,
        "agent": transition.agent,
        "state": loads(transition.state_json),
        "action": loads(transition.action_json),
        "reward": transition.reward,
    }
