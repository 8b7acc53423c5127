"""Wrappers that make a chat model run's span current while the model works.

Then an LLM call the model makes through an instrumented client (the OpenAI client, with token
ids) joins the run's span instead of floating beside it, and carries the agent's name (baggage).
`invoke`, `batch`, agents and graphs (streaming or not) go through `_generate_with_cache`;
`stream()` starts its run inside the generator, so each step runs under a stand-in span.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.runnables.config import ensure_config
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context

from otel_lightning import semconv
from otel_lightning.context import attached
from otel_lightning_instrumentation_langchain import runs
from otel_lightning_instrumentation_langchain.run_spans import RunSpan, RunSpans


def _context_for(span: trace.Span, agent: str | None) -> otel_context.Context:
    context = trace.set_span_in_context(span)
    if agent:
        context = baggage.set_baggage(semconv.BAGGAGE_AGENT_NAME, agent, context)
    return context


def _run_manager(args: tuple, kwargs: dict[str, Any]) -> Any:
    # _generate_with_cache(messages, stop=None, run_manager=None, **kwargs)
    return kwargs.get("run_manager", args[2] if len(args) > 2 else None)


def generate(open_runs: RunSpans) -> Any:
    def wrapper(wrapped: Any, model: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        found = open_runs.get(getattr(_run_manager(args, kwargs), "run_id", None))
        if found is None:
            return wrapped(*args, **kwargs)
        with attached(_context_for(found.span, found.agent)):
            return wrapped(*args, **kwargs)

    return wrapper


def agenerate(open_runs: RunSpans) -> Any:
    async def wrapper(wrapped: Any, model: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        found = open_runs.get(getattr(_run_manager(args, kwargs), "run_id", None))
        if found is None:
            return await wrapped(*args, **kwargs)
        with attached(_context_for(found.span, found.agent)):
            return await wrapped(*args, **kwargs)

    return wrapper


def _with_run_id(args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any], uuid.UUID, str | None]:
    """stream(input, config=None, **kwargs) with a run id chosen here, so its span can be found."""
    config = dict(ensure_config(kwargs.pop("config", args[1] if len(args) > 1 else None)))
    config["run_id"] = run_id = config.get("run_id") or uuid.uuid4()
    return args[:1], {**kwargs, "config": config}, run_id, runs.agent_of(config.get("metadata") or {})


def stream(open_runs: RunSpans) -> Any:
    def wrapper(wrapped: Any, model: Any, args: tuple, kwargs: dict[str, Any]) -> Iterator[Any]:
        args, kwargs, run_id, agent = _with_run_id(args, kwargs)
        context = _context_for(RunSpan(open_runs, run_id, trace.get_current_span()), agent)
        chunks = wrapped(*args, **kwargs)
        try:
            while True:
                with attached(context):
                    try:
                        chunk = next(chunks)
                    except StopIteration:
                        return
                yield chunk
        finally:
            with attached(context):
                chunks.close()

    return wrapper


def astream(open_runs: RunSpans) -> Any:
    def wrapper(wrapped: Any, model: Any, args: tuple, kwargs: dict[str, Any]) -> AsyncIterator[Any]:
        args, kwargs, run_id, agent = _with_run_id(args, kwargs)
        context = _context_for(RunSpan(open_runs, run_id, trace.get_current_span()), agent)

        async def steps() -> AsyncIterator[Any]:
            chunks = wrapped(*args, **kwargs)
            try:
                while True:
                    with attached(context):
                        try:
                            chunk = await chunks.__anext__()
                        except StopAsyncIteration:
                            return
                    yield chunk
            finally:
                with attached(context):
                    await chunks.aclose()

        return steps()

    return wrapper
