"""The rollout context: which (task, attempt) the code running now belongs to."""

from __future__ import annotations

import contextlib
import functools
import inspect
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode

from otel_lightning import semconv
from otel_lightning.processor import ensure_rollout_processor
from otel_lightning.version import __version__

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class RolloutInfo:
    rollout_id: str
    task_id: str
    attempt: int


def current_rollout(context: otel_context.Context | None = None) -> RolloutInfo | None:
    """The rollout active in `context` (default: the current one), or None outside any rollout."""
    rollout_id = baggage.get_baggage(semconv.BAGGAGE_ROLLOUT_ID, context)
    if not rollout_id:
        return None
    task_id = baggage.get_baggage(semconv.BAGGAGE_TASK_ID, context) or ""
    try:
        attempt = int(baggage.get_baggage(semconv.BAGGAGE_ATTEMPT, context) or 0)
    except ValueError:
        attempt = 0
    return RolloutInfo(str(rollout_id), str(task_id), attempt)


class rollout(contextlib.ContextDecorator):  # noqa: N801 - used like a function, as contextlib's are
    """Run code as one rollout of a task: a root span, and the rollout id in baggage.

    As a context manager::

        with otel_lightning.rollout(task_id="q-17", attempt=0) as info:
            answer = agent(question)

    or as a decorator (sync and async functions)::

        @otel_lightning.rollout(task_id="q-17")
        async def run(): ...

    Every span started inside, in this thread, in asyncio tasks it spawns and in threads it starts,
    carries `lightning.rollout.id`, `lightning.task.id` and `lightning.attempt`. An exception marks
    the root span as an error (the collector records the rollout as failed) and propagates.
    """

    def __init__(self, task_id: str, attempt: int = 0, rollout_id: str | None = None) -> None:
        if not isinstance(task_id, str) or not task_id:
            raise ValueError("rollout(task_id=...) needs a non-empty string task id")
        if not isinstance(attempt, int) or attempt < 0:
            raise ValueError(f"rollout(attempt=...) must be an int >= 0, got {attempt!r}")
        self.task_id = task_id
        self.attempt = attempt
        self._fixed_rollout_id = rollout_id
        self._stack: list[contextlib.ExitStack] = []

    def __call__(self, func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with self._fresh():
                    return await func(*args, **kwargs)

            return async_wrapper  # type: ignore[return-value]
        return super().__call__(func)

    def _recreate_cm(self) -> rollout:
        # Each decorated call is its own rollout with its own id.
        return self._fresh()

    def _fresh(self) -> rollout:
        return rollout(self.task_id, self.attempt, self._fixed_rollout_id)

    def __enter__(self) -> RolloutInfo:
        info = RolloutInfo(self._fixed_rollout_id or uuid.uuid4().hex, self.task_id, self.attempt)
        stack = contextlib.ExitStack()
        stack.enter_context(_rollout_scope(info))
        self._stack.append(stack)
        return info

    def __exit__(self, *exc_info: Any) -> bool:
        return self._stack.pop().__exit__(*exc_info)


@contextlib.contextmanager
def _rollout_scope(info: RolloutInfo) -> Iterator[None]:
    ensure_rollout_processor()
    ctx = baggage.set_baggage(semconv.BAGGAGE_ROLLOUT_ID, info.rollout_id)
    ctx = baggage.set_baggage(semconv.BAGGAGE_TASK_ID, info.task_id, ctx)
    ctx = baggage.set_baggage(semconv.BAGGAGE_ATTEMPT, str(info.attempt), ctx)
    token = otel_context.attach(ctx)
    try:
        tracer = trace.get_tracer("otel_lightning", __version__)
        # The processor stamps the rollout attributes; the root marker is set here.
        with tracer.start_as_current_span(
            semconv.ROLLOUT_SPAN_NAME,
            attributes={semconv.SPAN_KIND: semconv.SPAN_KIND_ROLLOUT},
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            try:
                yield
            except BaseException as error:
                span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                raise
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def attached(context: otel_context.Context) -> Iterator[None]:
    """Make `context` the current one inside the block (instrumentors run framework code under it)."""
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def policy_version_scope(version: str) -> Iterator[None]:
    """Name the policy version the LLM calls inside are served by, for model servers that do not
    report it in their responses (vLLM); a response that names a version wins."""
    token = otel_context.attach(baggage.set_baggage(semconv.BAGGAGE_POLICY_VERSION, version))
    try:
        yield
    finally:
        otel_context.detach(token)


@contextlib.contextmanager
def agent_scope(name: str) -> Iterator[None]:
    """Name the agent whose LLM calls run inside (multi-agent runs split transitions by it)."""
    token = otel_context.attach(baggage.set_baggage(semconv.BAGGAGE_AGENT_NAME, name))
    try:
        yield
    finally:
        otel_context.detach(token)
