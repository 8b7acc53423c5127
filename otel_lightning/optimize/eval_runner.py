"""Run every task N times under every candidate through the real pool, worker and gateway.

How a rollout gets its candidate: each (candidate, task) is its own task in the collector's pool, with
the id `<run>/<candidate>/<task>`. One `Worker` claims them; its agent is a `CandidateAgent`, which reads
the rollout's task id, registers a route for that rollout on one model gateway (the candidate's
upstream, its request rewrite, `lightning.candidate` on the span) and runs the unchanged agent command
with `OPENAI_BASE_URL=<gateway>/rollout/<rollout id>/v1`. The rollout span, the gateway's LLM spans and
every span in the candidate's baggage scope carry `lightning.candidate`. Outcomes come back on the
collector's transition stream; call latency and tokens from the gateway's spans.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.sdk.trace import SpanProcessor

from otel_lightning import semconv
from otel_lightning.context import current_rollout
from otel_lightning.optimize.candidates import Candidate
from otel_lightning.optimize.results import CallStatsProcessor, RolloutCollector, RolloutResult
from otel_lightning.optimize.upstreams import CandidateUpstreams
from otel_lightning.rewards import emit_reward

logger = logging.getLogger(__name__)

RewardFunction = Callable[[Any, str], Any]


class RewardError(RuntimeError):
    """The reward function raised, or returned something that is not a reward."""


@dataclass
class EvalSettings:
    repeats: int = 1
    concurrency: int = 4
    collector: str | None = None  # None: an embedded collector on a temporary store
    rollout_timeout_s: float = 300.0
    progress: bool = True
    # Run the agent under `opentelemetry-instrument` (its own spans: agent names, tools). Off by default:
    # the gateway records every model call of the rollout without it, and it costs seconds per start.
    instrument: bool = False
    # How long to wait for all results beyond the rollouts' own limit (a straggling export, retries).
    grace_s: float = 60.0


@dataclass
class EvalRun:
    candidates: list[Candidate]
    tasks: list[tuple[str, Any]]
    settings: EvalSettings
    results: list[RolloutResult]
    calls: dict[str, list] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # candidate -> why it could not run as asked
    missing: dict[str, int] = field(default_factory=dict)  # candidate -> rollouts that never reported
    retried: int = 0
    wall_s: float = 0.0


class TaskIds:
    """`<run>/<candidate>/<task>` task ids, so each candidate's samples are tasks of their own in the pool."""

    def __init__(self, run_id: str, candidates: Sequence[str]) -> None:
        self.run_id = run_id
        self.candidates = set(candidates)

    def make(self, candidate: str, task_id: str) -> str:
        return f"{self.run_id}/{candidate}/{task_id}"

    def parse(self, pool_task_id: str) -> tuple[str, str] | None:
        run_id, _, rest = pool_task_id.partition("/")
        candidate, _, task_id = rest.partition("/")
        if run_id != self.run_id or candidate not in self.candidates:
            return None
        return candidate, task_id


class CandidateAgent:
    """The worker's agent: runs the agent command for a rollout under the candidate its task id names."""

    def __init__(
        self,
        command: Sequence[str],
        gateway: Any,
        candidates: dict[str, Candidate],
        upstreams: dict[str, str],
        task_ids: TaskIds,
        *,
        reward: RewardFunction | None,
        collector: str,
        timeout_s: float,
        instrument: bool = False,
    ) -> None:
        from otel_lightning.worker import SubprocessAgent

        self.gateway = gateway
        self.candidates = candidates
        self.upstreams = upstreams
        self.task_ids = task_ids
        self.reward = reward
        self.agent = SubprocessAgent(
            list(command), timeout_s=timeout_s, collector=collector, auto_instrument=instrument
        )

    def __call__(self, task_input: Any) -> str:
        from otel_lightning_gateway import RolloutRoute

        info = current_rollout()
        parsed = self.task_ids.parse(info.task_id) if info else None
        if info is None or parsed is None:
            raise RuntimeError(f"not an evaluation rollout: {info}")
        name, task_id = parsed
        candidate = self.candidates[name]
        rollout_span = trace.get_current_span()
        rollout_span.set_attribute(semconv.CANDIDATE, name)
        token = otel_context.attach(baggage.set_baggage(semconv.BAGGAGE_CANDIDATE, name))
        try:
            self.gateway.register_rollout(
                RolloutRoute(
                    rollout_id=info.rollout_id,
                    task_id=info.task_id,
                    attempt=info.attempt,
                    parent=rollout_span.get_span_context(),
                    attributes={semconv.CANDIDATE: name},
                    upstream=self.upstreams[name],
                    rewrite=candidate.rewrite,
                )
            )
            try:
                # Through the gateway: it asks the upstream for token ids, the agent's client need not.
                output = self.agent(task_input, self.gateway.rollout_base_url(info.rollout_id), through_gateway=True)
            finally:
                self.gateway.unregister_rollout(info.rollout_id)
            if self.reward is not None:
                score(self.reward, task_input, output, f"task {task_id!r} under candidate {name!r}")
            return output
        finally:
            otel_context.detach(token)


def score(reward: RewardFunction, task_input: Any, output: str, where: str) -> float:
    """Call the reward function and record what it returns as the rollout's reward (RewardError names `where`)."""
    name = getattr(reward, "__qualname__", repr(reward))
    try:
        value = reward(task_input, output)
    except Exception as error:
        raise RewardError(f"reward function {name} raised for {where}: {type(error).__name__}: {error}") from error
    try:
        return emit_reward(value)
    except (TypeError, ValueError) as error:
        raise RewardError(f"reward function {name} returned an unusable reward for {where}: {error}") from error


@contextlib.contextmanager
def embedded_collector() -> Iterator[str]:
    """A collector on a temporary store for the block; yields its address."""
    from otel_lightning_collector import CollectorConfig, CollectorServer

    with tempfile.TemporaryDirectory(prefix="otel-lightning-eval-") as directory:
        server = CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=Path(directory) / "collector.db"))
        with server:
            yield server.address


class _ExportSwitch(SpanProcessor):
    """The span processor of the provider an evaluation installs: exports to the collector of the current run
    (a process may evaluate several times, against different collectors)."""

    def __init__(self) -> None:
        self.current: Any = None
        self.collector: str | None = None

    def point_at(self, collector: str) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if collector == self.collector:
            return
        previous = self.current
        self.current = BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://{collector}", insecure=True), schedule_delay_millis=200
        )
        self.collector = collector
        if previous is not None:
            previous.shutdown()

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        if self.current is not None:
            self.current.on_start(span, parent_context)

    def on_end(self, span: Any) -> None:
        if self.current is not None:
            self.current.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.current.force_flush(timeout_millis) if self.current is not None else True

    def shutdown(self) -> None:
        if self.current is not None:
            self.current.shutdown()


_EXPORT_SWITCH: _ExportSwitch | None = None


def _ensure_tracing(collector: str) -> None:
    """The worker's rollout spans go through the global provider: unless this process configured tracing
    itself (tests, `opentelemetry-instrument`), install one that exports to this run's collector."""
    global _EXPORT_SWITCH
    from opentelemetry.sdk.trace import TracerProvider

    if _EXPORT_SWITCH is None:
        if isinstance(trace.get_tracer_provider(), TracerProvider):
            return
        _EXPORT_SWITCH = _ExportSwitch()
        provider = TracerProvider()
        provider.add_span_processor(_EXPORT_SWITCH)
        trace.set_tracer_provider(provider)
    _EXPORT_SWITCH.point_at(collector)


def _gateway_tracing(collector: str) -> tuple[Any, CallStatsProcessor]:
    """The gateway's own provider: its spans go to the collector, and past the call-statistics processor."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    stats = CallStatsProcessor()
    provider = TracerProvider()
    provider.add_span_processor(stats)
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"http://{collector}", insecure=True),
            schedule_delay_millis=200,
            max_queue_size=1 << 15,
        )
    )
    return provider, stats


def run_eval(
    candidates: list[Candidate],
    tasks: list[tuple[str, Any]],
    command: Sequence[str],
    reward: RewardFunction | None,
    settings: EvalSettings | None = None,
    *,
    on_result: Callable[[RolloutResult], None] | None = None,
    on_start: Callable[[int], None] | None = None,
) -> EvalRun:
    """Evaluate `candidates` on `tasks` (task id, input) with the agent `command`; blocks until done.

    The global tracer provider must export to the collector the rollouts are judged by (the worker's
    rollout spans go through it): `setup_worker_tracing(address)` in a process of its own.
    """
    from otel_lightning.task_client import TaskPoolClient
    from otel_lightning.worker import Worker
    from otel_lightning_gateway import Gateway

    settings = settings or EvalSettings()
    if not tasks:
        raise ValueError("no tasks to evaluate")
    if settings.repeats < 1 or settings.concurrency < 1:
        raise ValueError("repeats and concurrency must be at least 1")
    ids = TaskIds(uuid.uuid4().hex[:8], [c.name for c in candidates])
    by_name = {c.name: c for c in candidates}
    expected = len(candidates) * len(tasks) * settings.repeats
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        upstreams = stack.enter_context(CandidateUpstreams(candidates))
        address = settings.collector or stack.enter_context(embedded_collector())
        _ensure_tracing(address)
        provider, stats = _gateway_tracing(address)
        stack.callback(provider.shutdown)
        gateway = Gateway(upstream=next(iter(upstreams.url.values())), tracer_provider=provider)
        gateway.start()
        stack.callback(gateway.stop)
        results = RolloutCollector(address, ids.parse, on_result)
        stack.callback(results.close)
        agent = CandidateAgent(
            command,
            gateway,
            by_name,
            upstreams.url,
            ids,
            reward=reward,
            collector=address,
            timeout_s=settings.rollout_timeout_s,
            instrument=settings.instrument,
        )
        worker = Worker(
            address,
            agent,
            concurrency=settings.concurrency,
            lease_s=max(60.0, settings.rollout_timeout_s / 2),
            task_timeout_s=settings.rollout_timeout_s + 30,
        )
        thread = worker.start_in_thread()

        def stop_worker() -> None:
            worker.stop()
            thread.join(timeout=settings.rollout_timeout_s + 60)

        stack.callback(stop_worker)
        # Task-major order: every candidate meets the same tasks at about the same time (fair under drift).
        pool = TaskPoolClient(address)
        stack.callback(pool.close)
        pool.submit(
            [(ids.make(c.name, task_id), task_input) for task_id, task_input in tasks for c in candidates],
            group_size=settings.repeats,
        )
        if on_start is not None:
            on_start(expected)
        # Upper bound: every rollout one after another per slot, each retried up to three times.
        timeout_s = settings.grace_s + 3 * settings.rollout_timeout_s * expected / settings.concurrency
        if not results.wait(expected, timeout_s):
            logger.error(
                "%d of %d rollouts did not report within %.0f s", expected - len(results.results), expected, timeout_s
            )
        stop_worker()
        provider.force_flush()
        flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if flush:
            flush()
        collected = list(results.results)
        retried = results.retried
    missing: dict[str, int] = {}
    for candidate in candidates:
        seen = sum(r.candidate == candidate.name for r in collected)
        if seen < len(tasks) * settings.repeats:
            missing[candidate.name] = len(tasks) * settings.repeats - seen
    return EvalRun(
        candidates,
        tasks,
        settings,
        collected,
        calls=stats.by_candidate(),
        problems=dict(upstreams.problems),
        missing=missing,
        retried=retried,
        wall_s=time.perf_counter() - started,
    )
