"""OpenTelemetry instrumentation of the OpenAI Python client for otel-lightning.

Each `chat.completions.create`/`parse` and `responses.create`/`parse` call (sync, async, streaming or
not, plain, `with_raw_response` or `with_streaming_response`) gets
one span with the request, the response, usage and, when the server returns them (vLLM with
`return_token_ids`, the otel-lightning policy server), the exact token ids and logprobs::

    from otel_lightning_instrumentation_openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument()

Under `opentelemetry-instrument python my_agent.py` it is picked up through the
`opentelemetry_instrumentor` entry point; nothing needs to change in the agent.

Set `LIGHTNING_CAPTURE_CONTENT=false` to keep prompts and completions out of the spans, and
`LIGHTNING_REQUEST_TOKEN_IDS=true` (the worker does, for agents it points at a policy server) to ask
a vLLM-style server for token ids and logprobs on every chat completion.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection
from typing import Any

import wrapt
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.instrumentation.utils import is_instrumentation_enabled, unwrap
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from wrapt import wrap_function_wrapper

from otel_lightning import ensure_rollout_processor, semconv
from otel_lightning_instrumentation_openai.extract import CHAT_COMPLETIONS, RESPONSES, with_token_id_options
from otel_lightning_instrumentation_openai.llm_span import (
    SUPPRESS_LANGUAGE_MODEL_INSTRUMENTATION_KEY,
    LLMCall,
    is_raw_response,
)
from otel_lightning_instrumentation_openai.package import _instruments
from otel_lightning_instrumentation_openai.raw_response import record_raw_response
from otel_lightning_instrumentation_openai.streaming import RecordedAsyncStream, RecordedStream
from otel_lightning_instrumentation_openai.version import __version__

logger = logging.getLogger(__name__)

SCOPE_NAME = __name__

# (module, class, method, api) of every method wrapped. `parse` (structured outputs) posts by itself;
# `stream` and `with_streaming_response` go through `create`.
_WRAPPED_METHODS = tuple(
    (module, cls, method, api)
    for module, classes, api in (
        ("openai.resources.chat.completions", ("Completions", "AsyncCompletions"), CHAT_COMPLETIONS),
        ("openai.resources.responses", ("Responses", "AsyncResponses"), RESPONSES),
    )
    for cls in classes
    for method in ("create", "parse")
)


# Other instrumentors of the same OpenAI methods. Where one wraps inside ours, we call past it so each
# call gets one span (ours, with the GenAI attributes it would have set). Where one wraps outside
# ours, LLMCall joins its span instead.
# OpenLLMetry's and the contrib `openai-v2` (opentelemetry.instrumentation.openai*), and the official
# `opentelemetry-instrumentation-genai-openai`.
_OTHER_GENAI_WRAPPER_MODULES = ("opentelemetry.instrumentation.openai", "opentelemetry.instrumentation.genai.openai")


def _past_other_genai_wrappers(wrapped: Any) -> Any:
    while isinstance(wrapped, wrapt.BoundFunctionWrapper) and getattr(
        wrapped._self_wrapper, "__module__", ""
    ).startswith(_OTHER_GENAI_WRAPPER_MODULES):
        wrapped = wrapped.__wrapped__
    return wrapped


def _skip() -> bool:
    # Skip when instrumentation is suppressed, or an outer LLM instrumentor already owns this call.
    return not is_instrumentation_enabled() or bool(otel_context.get_value(SUPPRESS_LANGUAGE_MODEL_INSTRUMENTATION_KEY))


def _request_token_ids() -> bool:
    return os.environ.get(semconv.ENV_REQUEST_TOKEN_IDS, "").strip().lower() in ("1", "true", "yes", "on")


def _start_call(tracer: trace.Tracer, api: str, kwargs: dict[str, Any]) -> LLMCall | None:
    try:
        return LLMCall(tracer, SCOPE_NAME, api, kwargs)
    except Exception:
        logger.warning("otel-lightning could not start an OpenAI span; the call proceeds untraced", exc_info=True)
        return None


# W3C trace context and baggage on the request: a model gateway on the way (otel-lightning's) records its span of
# the call under ours, with the rollout from the baggage, whatever propagator the process configured.
_W3C = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])


def with_trace_headers(kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` with `traceparent`/`baggage` of the current context (the call's span) in `extra_headers`;
    headers the caller set win."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    if not carrier:
        return kwargs
    given = kwargs.get("extra_headers")
    given = dict(given) if isinstance(given, dict) else {}
    return {**kwargs, "extra_headers": {**carrier, **given}}


def _recorded(result: Any, call: LLMCall, kwargs: dict[str, Any], stream_proxy: type) -> Any:
    """What the caller gets: the result, its span finished now or when its body or stream is read."""
    if is_raw_response(result):  # with_raw_response / with_streaming_response: the caller reads the body
        record_raw_response(result, call)
        return result
    if kwargs.get("stream") is True:
        return stream_proxy(result, call)
    call.finish(result)
    return result


def _sync_wrapper(tracer: trace.Tracer, api: str) -> Any:
    def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        if _request_token_ids():
            kwargs = with_token_id_options(api, kwargs)
        call = None if _skip() else _start_call(tracer, api, kwargs)
        if call is None:
            return wrapped(*args, **kwargs)
        wrapped = _past_other_genai_wrappers(wrapped)
        try:
            with call.activated():
                result = wrapped(*args, **with_trace_headers(kwargs))
        except BaseException as error:
            call.fail(error)
            raise
        return _recorded(result, call, kwargs, RecordedStream)

    return wrapper


def _async_wrapper(tracer: trace.Tracer, api: str) -> Any:
    async def wrapper(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
        if _request_token_ids():
            kwargs = with_token_id_options(api, kwargs)
        call = None if _skip() else _start_call(tracer, api, kwargs)
        if call is None:
            return await wrapped(*args, **kwargs)
        wrapped = _past_other_genai_wrappers(wrapped)
        try:
            with call.activated():
                result = await wrapped(*args, **with_trace_headers(kwargs))
        except BaseException as error:
            call.fail(error)
            raise
        return _recorded(result, call, kwargs, RecordedAsyncStream)

    return wrapper


class OpenAIInstrumentor(BaseInstrumentor):
    """Instruments `openai` chat completions and responses for otel-lightning."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        tracer_provider = kwargs.get("tracer_provider")
        tracer = trace.get_tracer(SCOPE_NAME, __version__, tracer_provider=tracer_provider)
        # Spans of this process must carry their rollout, also under `opentelemetry-instrument`.
        ensure_rollout_processor(tracer_provider)
        for module, cls, method, api in _WRAPPED_METHODS:
            factory = _async_wrapper if cls.startswith("Async") else _sync_wrapper
            wrap_function_wrapper(module, f"{cls}.{method}", factory(tracer, api))

    def _uninstrument(self, **kwargs: Any) -> None:
        import importlib

        for module, cls, method, _ in _WRAPPED_METHODS:
            unwrap(getattr(importlib.import_module(module), cls), method)


__all__ = ["OpenAIInstrumentor", "__version__"]
