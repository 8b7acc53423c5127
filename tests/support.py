"""Helpers for tests: read a collector's stream, craft OTLP requests by hand."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel_lightning import semconv
from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning_collector.spans import key_value


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (for a server that starts later, or never)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll `condition` until it holds (True) or `timeout_s` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def run_until_done(worker: Any, pool: Any, count: int, timeout_s: float = 90) -> None:
    """Run a `Worker` until `count` samples of its pool are done or failed, then stop it."""
    thread = worker.start_in_thread()
    try:
        deadline = time.monotonic() + timeout_s
        while sum(v for k, v in pool.stats().items() if k in ("done", "failed")) < count:
            assert time.monotonic() < deadline, pool.stats()
            time.sleep(0.05)
    finally:
        worker.stop()
        thread.join(10)


class ChildProcess:
    """A command in a process of its own that can be killed -9 and started again (fault tests, the soak)."""

    def __init__(self, command: list[str], *, cwd: str | Path | None = None, env: dict[str, str] | None = None) -> None:
        self.command, self.cwd, self.env = command, cwd, env
        self.process: subprocess.Popen | None = None

    def start(self) -> ChildProcess:
        # Output goes nowhere: a pipe nobody reads would block the child once full.
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return self

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self, timeout_s: float = 30.0) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()


def read_all(address: str, **kwargs: Any) -> list[pb.StreamEvent]:
    """Every stored event (transitions and rollout completions), without following."""
    with TransitionStreamClient(address, follow=False, auto_ack=True, **kwargs) as client:
        return list(client)


def wait_for_rollouts(address: str, count: int, timeout_s: float = 10.0) -> list[pb.StreamEvent]:
    """Events once `count` rollouts are completed (the assembler runs off the ingest path)."""
    deadline = time.monotonic() + timeout_s
    while True:
        events = read_all(address)
        if sum(e.HasField("rollout") for e in events) >= count or time.monotonic() > deadline:
            return events
        time.sleep(0.02)


def transitions(events: list[pb.StreamEvent]) -> list[pb.Transition]:
    return [e.transition for e in events if e.HasField("transition")]


def rollouts(events: list[pb.StreamEvent]) -> list[pb.RolloutCompleted]:
    return [e.rollout for e in events if e.HasField("rollout")]


def remove_openllmetry_openai_wrappers() -> None:
    """Take off what OpenLLMetry's OpenAI instrumentor (0.62.4) leaves after `uninstrument()`: its
    dotted unwrap paths do not resolve, so its wrappers of OpenAI's resource methods stay."""
    import openai.resources.chat.completions as chat
    import openai.resources.responses as responses
    import wrapt
    from opentelemetry.instrumentation.utils import unwrap

    for cls in (chat.Completions, chat.AsyncCompletions, responses.Responses, responses.AsyncResponses):
        for name, attribute in list(vars(cls).items()):
            # A BoundFunctionWrapper too: unwrapping a stack through the class leaves bound ones behind.
            while isinstance(attribute, (wrapt.FunctionWrapper, wrapt.BoundFunctionWrapper)) and getattr(
                attribute._self_wrapper, "__module__", ""
            ).startswith("opentelemetry.instrumentation.openai."):
                unwrap(cls, name)
                attribute = vars(cls)[name]


class SpanFactory:
    """Spans of one rollout as an exporter would send them, built by hand."""

    def __init__(self, rollout_id: str = "r1", task_id: str = "t1", attempt: int = 0) -> None:
        self.rollout_id, self.task_id, self.attempt = rollout_id, task_id, attempt
        self.trace_id = os.urandom(16)
        self.root_id = os.urandom(8)
        self.clock = 1_000_000_000

    def _span(
        self,
        name: str,
        attributes: dict[str, Any],
        *,
        parent: bytes | None,
        span_id: bytes | None = None,
        error: bool = False,
    ) -> Span:
        start = self.clock
        self.clock += 1_000_000
        span = Span(
            trace_id=self.trace_id,
            span_id=span_id or os.urandom(8),
            parent_span_id=parent or b"",
            name=name,
            start_time_unix_nano=start,
            end_time_unix_nano=self.clock,
        )
        base = {semconv.ROLLOUT_ID: self.rollout_id, semconv.TASK_ID: self.task_id, semconv.ATTEMPT: self.attempt}
        span.attributes.extend(key_value(k, v) for k, v in {**base, **attributes}.items())
        if error:
            span.status.code = Status.STATUS_CODE_ERROR
            span.status.message = "boom"
        return span

    def llm(
        self, prompt: str, answer: str, agent: str | None = None, parent: bytes | None = None, **extra: Any
    ) -> Span:
        attributes = {
            semconv.SPAN_KIND: semconv.SPAN_KIND_LLM,
            semconv.GEN_AI_INPUT_MESSAGES: f'[{{"role":"user","content":"{prompt}"}}]',
            semconv.GEN_AI_OUTPUT_MESSAGES: f'[{{"role":"assistant","content":"{answer}"}}]',
            **extra,
        }
        if agent:
            attributes[semconv.AGENT_NAME] = agent
        return self._span("chat stub", attributes, parent=parent or self.root_id)

    def reward(self, value: float) -> Span:
        return self._span(
            semconv.REWARD_SPAN_NAME,
            {semconv.SPAN_KIND: semconv.SPAN_KIND_REWARD, semconv.REWARD_VALUE: value},
            parent=self.root_id,
        )

    def root(self, error: bool = False) -> Span:
        span = self._span(
            semconv.ROLLOUT_SPAN_NAME,
            {semconv.SPAN_KIND: semconv.SPAN_KIND_ROLLOUT},
            parent=None,
            span_id=self.root_id,
            error=error,
        )
        span.start_time_unix_nano = 1
        return span


def export_request(*spans: Span) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.extend(spans)
    return request
