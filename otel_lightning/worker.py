"""Agent workers: claim tasks from the collector's pool and run each as a rollout.

Two ways, neither touching the agent's code:

- in-process: `Worker(collector, run)` where `run(task_input)` is a plain sync or async function;
  `concurrency` rollouts at once (sync functions run in threads).
- subprocess: `SubprocessAgent(["python", "my_agent.py"])` runs a command per task, with the task
  input on stdin and in `LIGHTNING_TASK` (JSON; a string task as the plain string), the rollout
  context in `TRACEPARENT`/`BAGGAGE`, and auto-instrumentation on (`opentelemetry-instrument`).
  `python` is this worker's interpreter. Exit code, stderr tail and timeout decide how the rollout ends.

With a `WorkerGateway` (the CLI's default) each rollout's model calls go through the worker's model
gateway at a URL of the rollout's own, which records them with their exact token ids: nothing in the
agent needs OpenTelemetry. With a reward function (`--reward`), each rollout is scored after the agent
returns, inside the rollout.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from otel_lightning import semconv
from otel_lightning.auto import environment_for_current_context
from otel_lightning.context import policy_version_scope, rollout
from otel_lightning.reward_function import RewardFunctionError, RolloutRewardFunction
from otel_lightning.task_client import TaskPoolClient
from otel_lightning.worker_gateway import WorkerGateway

logger = logging.getLogger(__name__)

ENV_TASK = "LIGHTNING_TASK"


class AgentProcessError(RuntimeError):
    """The agent subprocess exited non-zero; the message ends with its stderr tail."""


def _opentelemetry_instrument() -> str:
    # Beside this interpreter first: a virtual environment's bin/ need not be on PATH.
    beside = Path(sys.executable).parent / "opentelemetry-instrument"
    found = str(beside) if beside.exists() else shutil.which("opentelemetry-instrument")
    if not found:
        raise FileNotFoundError("opentelemetry-instrument not found: pip install 'otel-lightning[agent]'")
    return found


def _this_interpreter(command: Sequence[str]) -> list[str]:
    """`python` (or python3, python3.X) is the worker's own interpreter: its environment has the
    instrumentors, whether or not the virtual environment is activated in the shell."""
    command = list(command)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    if command and command[0] in ("python", "python3", version):
        command[0] = sys.executable
    return command


# Runtimes for which `opentelemetry-instrument` (Python only) would only cost a Python start per rollout. Any
# other command keeps it: a script or launcher may start Python, which inherits its setup through PYTHONPATH.
_NOT_PYTHON = frozenset({"node", "nodejs", "deno", "bun", "java", "ruby", "dotnet", "php"})


def may_run_python(command: Sequence[str]) -> bool:
    return bool(command) and Path(command[0]).name not in _NOT_PYTHON


def task_text(task_input: Any) -> str:
    """What the agent reads from stdin and LIGHTNING_TASK: a string task as it is, anything else as JSON."""
    return task_input if isinstance(task_input, str) else json.dumps(task_input)


@dataclass
class SubprocessAgent:
    command: Sequence[str]
    timeout_s: float = 300.0
    openai_base_url: str | None = None
    collector: str | None = None
    auto_instrument: bool = True
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None  # where the command runs (default: the worker's directory)

    def __call__(self, task_input: Any, openai_base_url: str | None = None, *, through_gateway: bool = False) -> str:
        """Run the command for one task; `openai_base_url` (the task's own, or its gateway URL) overrides the
        default. Through the gateway the agent's client need not ask for token ids: the gateway does."""
        payload = task_text(task_input)
        env = {**os.environ, **self.env, ENV_TASK: payload, **environment_for_current_context()}
        # The Agents SDK's upload of its traces to OpenAI: seconds per rollout offline, of no use here.
        env.setdefault(semconv.ENV_VENDOR_TRACE_UPLOAD, "false")
        base_url = openai_base_url or self.openai_base_url
        if base_url:
            env["OPENAI_BASE_URL"] = base_url
            env.setdefault("OPENAI_API_KEY", "otel-lightning")
            if not through_gateway:
                env.setdefault(semconv.ENV_REQUEST_TOKEN_IDS, "true")
        if self.collector:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://{self.collector}"
            env.setdefault("OTEL_EXPORTER_OTLP_INSECURE", "true")
        command = _this_interpreter(self.command)
        if self.auto_instrument and may_run_python(command):  # a Node agent's calls are seen by the gateway
            command = [_opentelemetry_instrument(), *command]
        try:
            done = subprocess.run(
                command,
                input=payload,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                cwd=self.cwd,
            )
        except subprocess.TimeoutExpired as error:
            raise TimeoutError(f"agent command ran past {self.timeout_s:g}s: {' '.join(self.command)}") from error
        if done.returncode != 0:
            tail = done.stderr.strip()[-2000:]
            raise AgentProcessError(f"agent exited with code {done.returncode}: {tail}")
        return done.stdout


@dataclass
class WorkerStats:
    succeeded: int = 0
    failed: int = 0
    lost_leases: int = 0


class Worker:
    def __init__(
        self,
        collector: str,
        agent: Callable[[Any], Any],
        *,
        concurrency: int = 4,
        lease_s: float = 60.0,
        task_timeout_s: float = 600.0,
        name: str | None = None,
        gateway: WorkerGateway | None = None,
        reward: RolloutRewardFunction | None = None,
    ) -> None:
        self.pool = TaskPoolClient(collector)
        self.agent = agent
        self.gateway = gateway
        self.reward = reward
        self.concurrency = concurrency
        self.lease_s = lease_s
        self.task_timeout_s = task_timeout_s
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.stats = WorkerStats()
        self._stop = threading.Event()
        self._warned_base_url = False

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> WorkerStats:
        """Serve until stop() (blocking)."""
        asyncio.run(self.serve())
        return self.stats

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"worker-{self.name}", daemon=True)
        thread.start()
        return thread

    async def serve(self) -> None:
        await asyncio.gather(*(self._slot(index) for index in range(self.concurrency)))

    async def _slot(self, index: int) -> None:
        while not self._stop.is_set():
            try:
                lease = await asyncio.to_thread(self.pool.claim, f"{self.name}/{index}", self.lease_s, 0.5)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                logger.warning("collector %s unavailable; retrying the claim", self.pool.target)
                await asyncio.sleep(1.0)
                continue
            if lease is not None:
                await self._run_lease(lease)

    async def _run_lease(self, lease: Any) -> None:
        heartbeat = asyncio.create_task(self._heartbeat(lease.lease_id))
        status, error_type, error_message = "succeeded", "", ""
        try:
            task_input = json.loads(lease.input_json)
            with contextlib.ExitStack() as scopes:
                if lease.policy_version:  # before the rollout, so its root span carries it too
                    scopes.enter_context(policy_version_scope(lease.policy_version))
                scopes.enter_context(rollout(lease.task_id, attempt=lease.attempt, rollout_id=lease.rollout_id))
                base_url, through_gateway = lease.openai_base_url or None, False
                if self.gateway is not None:
                    routed = scopes.enter_context(self.gateway.rollout_route(lease, base_url))
                    base_url, through_gateway = (routed, True) if routed else (base_url, False)
                output = await asyncio.wait_for(
                    self._call_agent(task_input, base_url, through_gateway, lease.openai_base_url), self.task_timeout_s
                )
                if self.reward is not None:
                    await self.reward.record(task_input, output)
        except RewardFunctionError as error:  # the agent ran; its rollout cannot be scored
            status, error_type, error_message = "failed", type(error).__qualname__, str(error)
            logger.warning("task %s rollout %s: %s", lease.task_id, lease.rollout_id, error, exc_info=error.__cause__)
        except Exception as error:  # the agent's failure is the rollout's outcome, not the worker's
            # TimeoutError: from wait_for (task_timeout_s) or from the agent itself (a subprocess's limit).
            status = "timeout" if isinstance(error, TimeoutError) else "failed"
            error_type = type(error).__qualname__
            error_message = str(error) or f"ran past the worker's {self.task_timeout_s:g}s task timeout"
        finally:
            heartbeat.cancel()
        if status == "succeeded":
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1
            logger.info("task %s rollout %s ended %s: %s", lease.task_id, lease.rollout_id, status, error_message)
        accepted = await asyncio.to_thread(self.pool.complete, lease.lease_id, status, error_type, error_message)
        if not accepted:
            self.stats.lost_leases += 1
            logger.warning("lease of task %s expired before it completed; the pool requeued it", lease.task_id)

    async def _call_agent(
        self, task_input: Any, openai_base_url: str | None, through_gateway: bool, task_upstream: str = ""
    ) -> Any:
        if isinstance(self.agent, SubprocessAgent):
            return await asyncio.to_thread(
                self.agent, task_input, openai_base_url or None, through_gateway=through_gateway
            )
        if task_upstream and not self._warned_base_url:
            # An in-process agent's OpenAI client was made from this process's environment.
            self._warned_base_url = True
            logger.warning(
                "a task names its model server (%s), but only subprocess agents (`-- command`) can be pointed at"
                " a task's server; in-process agents keep OPENAI_BASE_URL=%s",
                task_upstream,
                os.environ.get("OPENAI_BASE_URL"),
            )
        if inspect.iscoroutinefunction(self.agent):
            return await self.agent(task_input)
        return await asyncio.to_thread(self.agent, task_input)

    async def _heartbeat(self, lease_id: str) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(self.lease_s / 3)
                if not await asyncio.to_thread(self.pool.heartbeat, lease_id):
                    logger.warning("lost lease %s", lease_id)
                    return
