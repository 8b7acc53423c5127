"""What a training run starts and stops: the collector (or a running one), the policy server, tracing to
the collector, and the agent workers with their model gateway.

A command agent (any language) runs per task behind the worker's gateway, which records every call's
exact token ids; an in-process `module:function` agent calls the policy server with this process's
OpenAI instrumentor asking for them. Everything started here is stopped by `close`, whatever happened.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otel_lightning.context import current_rollout
from otel_lightning.reward_function import RolloutRewardFunction
from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning.task_client import TaskPoolClient
from otel_lightning.train.config import TrainConfig
from otel_lightning.train.policy import TorchPolicy
from otel_lightning.train.task_source import TaskRecord
from otel_lightning.train.trainer import RolloutGroups
from otel_lightning.worker import SubprocessAgent, Worker
from otel_lightning.worker_gateway import WorkerGateway

logger = logging.getLogger(__name__)


@dataclass
class FailureWatch:
    """Counts rollouts that failed in a row; past `limit` the run stops with the agent's last error."""

    limit: int
    in_a_row: int = 0
    last_error: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wrap(self, agent: Callable[..., Any]) -> Callable[..., Any]:
        """`agent`, sync or async, with its outcomes counted."""
        if inspect.iscoroutinefunction(agent):

            async def watched_coroutine(*args: Any, **kwargs: Any) -> Any:
                try:
                    value = await agent(*args, **kwargs)
                except Exception as error:
                    self.failed(error)
                    raise
                return self.succeeded(value)

            return watched_coroutine

        def watched(*args: Any, **kwargs: Any) -> Any:
            try:
                value = agent(*args, **kwargs)
            except Exception as error:
                self.failed(error)
                raise
            return self.succeeded(value)

        return watched

    def succeeded(self, value: Any) -> Any:
        with self._lock:
            self.in_a_row = 0
        return value

    def failed(self, error: BaseException) -> None:
        with self._lock:
            self.in_a_row += 1
            self.last_error = f"{type(error).__name__}: {error}"

    def reason(self) -> str | None:
        """Why the run must stop, or None."""
        if self.limit and self.in_a_row >= self.limit:
            return f"the agent failed {self.in_a_row} rollouts in a row; the last: {self.last_error[-2000:]}"
        return None


class _CommandAgent(SubprocessAgent):
    """A SubprocessAgent whose failures a FailureWatch sees (it runs in a thread, not as a plain callable)."""

    watch: FailureWatch | None = None

    def __call__(self, task_input: Any, openai_base_url: str | None = None, *, through_gateway: bool = False) -> str:
        try:
            output = super().__call__(task_input, openai_base_url, through_gateway=through_gateway)
        except Exception as error:
            if self.watch is not None:
                self.watch.failed(error)
            raise
        if self.watch is not None:
            self.watch.succeeded(output)
        return output


class TaskRewards(RolloutRewardFunction):
    """The config's reward function, called `FUNCTION(task_input, output)`; one that also takes `task` gets the
    task's whole record (the keys beside `input`, such as an expected answer)."""

    def __init__(self, function: Callable[..., Any], name: str, records: dict[str, TaskRecord]) -> None:
        self.records = records
        wants_task = "task" in inspect.signature(function).parameters

        def scored(task_input: Any, output: Any) -> Any:
            if not wants_task:
                return function(task_input, output)
            rollout = current_rollout()
            record = self.records.get(rollout.task_id if rollout else "")
            return function(task_input, output, task=record.as_dict() if record else {"input": task_input})

        super().__init__(scored, name=name)


class TrainingServices:
    """Start with `start()`; `close()` stops what was started, in reverse order."""

    def __init__(
        self,
        config: TrainConfig,
        policy: TorchPolicy,
        *,
        agent: Callable[..., Any] | None,
        reward: Callable[..., Any] | None,
        store_path: Path,
    ) -> None:
        self.config = config
        self.policy = policy
        self.agent_function = agent
        self.reward_function = reward
        self.store_path = store_path
        self.records: dict[str, TaskRecord] = {}  # pool task id -> the task's record, for the reward
        self.watch = FailureWatch(config.agent.max_consecutive_failures)
        self._stack = contextlib.ExitStack()
        self.collector_address = ""
        self.collector: Any = None
        self.policy_url = ""
        self.pool: TaskPoolClient | None = None
        self.groups: RolloutGroups | None = None
        self.span_processor: Any = None
        self.gateway_tracer_provider: Any = None

    def start(self) -> TrainingServices:
        try:
            self._start_collector()
            self._start_policy_server()
            self._start_tracing()
            self._start_workers()
            self.pool = TaskPoolClient(self.collector_address)
            stream = TransitionStreamClient(self.collector_address, consumer="trainer", max_in_flight=4096)
            self.groups = RolloutGroups(stream)
            self._stack.callback(self.groups.close)
        except BaseException:
            self.close()
            raise
        return self

    def _start_collector(self) -> None:
        if self.config.collector:
            self.collector_address = self.config.collector
            return
        from otel_lightning_collector import CollectorConfig, CollectorServer

        for suffix in ("", "-wal", "-shm"):  # each run starts from an empty store
            Path(f"{self.store_path}{suffix}").unlink(missing_ok=True)
        grpo = self.config.grpo
        collector_config = CollectorConfig(
            listen="127.0.0.1:0",
            store_path=self.store_path,
            credit=grpo.credit if grpo else "final_to_all",
            train_agents=tuple(grpo.train_agents) if grpo else (),
        )
        self.collector = CollectorServer(collector_config).start()
        self._stack.callback(self.collector.stop)
        self.collector_address = self.collector.address

    def _start_policy_server(self) -> None:
        from otel_lightning.train.policy_server import PolicyServer

        server = PolicyServer(self.policy).start()
        self._stack.callback(server.stop)
        self.policy_url = server.base_url

    def _start_tracing(self) -> None:
        """This process's spans (the worker's rollout spans, rewards, an in-process agent's calls) to the collector.

        The global provider is set here unless the host program has one of its own: then it gets one more
        span processor, shut down with the run."""
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporter = OTLPSpanExporter(endpoint=f"http://{self.collector_address}", insecure=True)
        processor = BatchSpanProcessor(exporter, schedule_delay_millis=50, max_queue_size=1 << 15)
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            provider = TracerProvider(resource=Resource.create({"service.name": "otel-lightning-train"}))
            trace.set_tracer_provider(provider)
        provider.add_span_processor(processor)
        self.span_processor = processor  # force_flush: what this run exported
        self._stack.callback(processor.shutdown)
        if self.agent_function is not None:
            # An in-process agent's model calls are recorded by the OpenAI instrumentor, asking for token ids.
            from otel_lightning_instrumentation_openai import OpenAIInstrumentor

            instrumentor = OpenAIInstrumentor()
            if not instrumentor.is_instrumented_by_opentelemetry:
                instrumentor.instrument(tracer_provider=provider)
                self._stack.callback(instrumentor.uninstrument)
        self.gateway_tracer_provider = provider

    def _start_workers(self) -> None:
        agent_config = self.config.agent
        reward = None
        if self.reward_function is not None:
            reward = TaskRewards(self.reward_function, self.config.reward.function or "", self.records)
        gateway = None
        if self.agent_function is not None:
            previous = os.environ.get("OPENAI_BASE_URL")
            os.environ["OPENAI_BASE_URL"] = self.policy_url
            self._stack.callback(_restore_env, "OPENAI_BASE_URL", previous)
            agent: Callable[..., Any] = self.watch.wrap(self.agent_function)
        else:
            gateway = WorkerGateway(self.policy_url, tracer_provider=self.gateway_tracer_provider).start()
            self._stack.callback(gateway.stop)
            command = _CommandAgent(
                list(agent_config.command or []),
                timeout_s=agent_config.timeout_s,
                collector=self.collector_address,
                auto_instrument=agent_config.instrument,
                env=dict(agent_config.env),
                cwd=self.config.base_dir,
            )
            command.watch = self.watch
            agent = command
        worker = Worker(
            self.collector_address,
            agent,
            concurrency=agent_config.concurrency,
            lease_s=max(180.0, agent_config.timeout_s),
            task_timeout_s=agent_config.timeout_s,
            gateway=gateway,
            reward=reward,
        )
        thread = worker.start_in_thread()
        self._stack.callback(thread.join, 30)
        self._stack.callback(worker.stop)
        self.worker = worker

    def close(self) -> None:
        self._stack.close()


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
