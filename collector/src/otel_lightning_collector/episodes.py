"""Traces with spans and no rollout ("loose" traces): production episodes, or not kept, with the reason.

With `collector --episodes`, a loose trace that has an LLM step becomes an episode once it has been
quiet for `--episode-idle-s`: a rollout with id `episode-<trace id>`, task id from
`gen_ai.conversation.id` (OpenInference: `session.id`), else the trace id, completed and streamed
like any rollout, with `source: episode`. Without `--episodes` (or with no LLM step) it is dropped
once quiet for `keep_s` (a rollout's spans may still claim it until then), counted and logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_lightning_collector import store_traces
from otel_lightning_collector.dialects import LLM, read_span
from otel_lightning_collector.not_kept import NotKept
from otel_lightning_collector.spans import span_view
from otel_lightning_collector.store import Store

logger = logging.getLogger(__name__)

EPISODE_PREFIX = "episode-"
CONVERSATION_KEYS = ("gen_ai.conversation.id", "session.id")
NO_ROLLOUT = "their trace has no rollout span (start the collector with --episodes to keep production traffic)"
NO_LLM_CALL = "their trace has no rollout and no LLM call, so it is not an episode"


def is_episode(rollout_id: str) -> bool:
    return rollout_id.startswith(EPISODE_PREFIX)


@dataclass
class EpisodeCounters:
    episodes: int = 0
    loose_traces_dropped: int = 0
    # Log records and feedback whose trace no rollout claimed within keep_s.
    log_records_dropped: int = 0
    feedback_dropped: int = 0


# How often log records and feedback that no rollout claimed are looked for.
_UNCLAIMED_EVERY_S = 60.0


def _episode_task(bodies: list[bytes], trace_id: str) -> str | None:
    """The episode's task id if the trace has an LLM step; None if it has none."""
    has_llm, task_id = False, ""
    for body in bodies:
        view = span_view(Span.FromString(body))
        if not task_id:
            task_id = next((str(view.attributes[k]) for k in CONVERSATION_KEYS if view.attributes.get(k)), "")
        if not has_llm:
            try:
                step = read_span(view)
            except Exception:  # unreadable messages: still an LLM call; its episode ends malformed, saying why
                step = None
                has_llm = True
            has_llm = has_llm or (step is not None and step.kind == LLM)
    return (task_id or trace_id) if has_llm else None


class LooseTraces:
    def __init__(
        self,
        store: Store,
        complete: Callable[[list[str]], object],
        *,
        episodes: bool = False,
        idle_s: float = 30.0,
        keep_s: float = 600.0,
        not_kept: NotKept | None = None,
    ) -> None:
        self.store = store
        self.complete = complete
        self.episodes = episodes
        self.idle_s = idle_s
        self.keep_s = keep_s
        self.not_kept = not_kept or NotKept()
        self.counters = EpisodeCounters()
        self._unclaimed_at = time.monotonic()

    def _drop_unclaimed(self, now_ns: int) -> None:
        if time.monotonic() - self._unclaimed_at < _UNCLAIMED_EVERY_S:
            return
        self._unclaimed_at = time.monotonic()
        with self.store.transaction() as db:
            logs, feedback = store_traces.drop_unclaimed(db, now_ns - int(self.keep_s * 1e9))
        self.counters.log_records_dropped += logs
        self.counters.feedback_dropped += feedback
        if logs or feedback:
            logger.warning(
                "%d log record(s) and %d feedback reward(s) not kept: no rollout has their trace or response"
                " after %.0fs (--rollout-timeout)",
                logs,
                feedback,
                self.keep_s,
            )

    def sweep(self, now_ns: int | None = None) -> list[str]:
        """Turn quiet loose traces into episodes (completed now) or drop them; returns the episode ids."""
        now_ns = now_ns or time.time_ns()
        wait_s = self.idle_s if self.episodes else self.keep_s
        reader = self.store.reader()
        episodes: list[str] = []
        for trace_id in store_traces.quiet_loose_traces(reader, now_ns - int(wait_s * 1e9)):
            bodies = store_traces.loose_spans(reader, trace_id)
            reason = NO_ROLLOUT
            if self.episodes:
                task_id = _episode_task(bodies, trace_id)
                if task_id is not None:
                    rollout_id = f"{EPISODE_PREFIX}{trace_id}"
                    self.store.ensure_rollouts([(rollout_id, task_id, 0)])
                    with self.store.transaction() as db:
                        store_traces.adopt_as(db, trace_id, rollout_id)
                    episodes.append(rollout_id)
                    continue
                reason = NO_LLM_CALL
            with self.store.transaction() as db:
                dropped = store_traces.drop_loose(db, trace_id)
            self.counters.loose_traces_dropped += 1
            self.not_kept.note(reason, dropped)
        self._drop_unclaimed(now_ns)
        if episodes:
            self.counters.episodes += len(episodes)
            logger.info("%d episode(s) from production traces: %s", len(episodes), ", ".join(episodes[:5]))
            self.complete(episodes)
        return episodes
