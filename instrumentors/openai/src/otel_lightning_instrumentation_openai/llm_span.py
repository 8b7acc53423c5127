"""One LLM call's span: started (or joined, when another GenAI instrumentor made one), filled, ended.

Every method swallows and logs its own errors: instrumentation must never break the agent.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_lightning import semconv
from otel_lightning.content import capture_content_enabled
from otel_lightning_instrumentation_openai import extract

logger = logging.getLogger(__name__)

# OpenLLMetry's instrumentors skip a call while this context key (a plain string) is set.
SUPPRESS_LANGUAGE_MODEL_INSTRUMENTATION_KEY = "suppress_language_model_instrumentation"
_MODEL_OPERATIONS = (None, "chat", "text_completion", "generate_content")
_FOREIGN_GENAI_MARKERS = (semconv.GEN_AI_OPERATION_NAME, semconv.GEN_AI_SYSTEM, "llm.request.type")


def _live_foreign_genai_span(scope_name: str) -> trace.Span | None:
    """The current span if another instrumentor opened it for this same LLM call, else None."""
    span = trace.get_current_span()
    scope = getattr(span, "instrumentation_scope", None)
    attributes = getattr(span, "attributes", None)
    if not span.is_recording() or scope is None or attributes is None or scope.name == scope_name:
        return None
    if getattr(span, "end_time", None) is not None:
        return None
    # A framework instrumentor's LLM span (LangChain's chat model run) is this call seen from above.
    if attributes.get(semconv.SPAN_KIND) == semconv.SPAN_KIND_LLM:
        return span
    # Agent and tool spans (ours from another framework instrumentor, or anyone's) are not model calls.
    if semconv.SPAN_KIND in attributes or attributes.get(semconv.GEN_AI_OPERATION_NAME) not in _MODEL_OPERATIONS:
        return None
    return span if any(marker in attributes for marker in _FOREIGN_GENAI_MARKERS) else None


def is_raw_response(response: Any) -> bool:
    """A `with_raw_response` result: the caller parses it (a raw stream's chunks are not seen here)."""
    return hasattr(response, "http_response") and hasattr(response, "parse")


class LLMCall:
    def __init__(self, tracer: trace.Tracer, scope_name: str, api: str, kwargs: Mapping[str, Any]) -> None:
        self.api = api
        self.capture_content = capture_content_enabled()
        attributes = extract.request_attributes(api, kwargs, self.capture_content)
        foreign = _live_foreign_genai_span(scope_name)
        # Joining another instrumentor's span keeps one span per call; its owner ends it.
        self.owns_span = foreign is None
        if foreign is not None:
            self.span = foreign
            self.span.set_attributes(attributes)
        else:
            model = attributes.get(semconv.GEN_AI_REQUEST_MODEL, "")
            self.span = tracer.start_span(f"chat {model}".strip(), kind=SpanKind.CLIENT, attributes=attributes)
        self._ended = False

    @contextlib.contextmanager
    def activated(self) -> Iterator[None]:
        """Make the span current (HTTP spans and trace headers nest under it) and hush OpenLLMetry."""
        ctx = trace.set_span_in_context(self.span)
        ctx = otel_context.set_value(SUPPRESS_LANGUAGE_MODEL_INSTRUMENTATION_KEY, True, ctx)
        token = otel_context.attach(ctx)
        try:
            yield
        finally:
            otel_context.detach(token)

    def finish(self, response: Any) -> None:
        if self._ended:
            return
        try:
            data = response.model_dump() if hasattr(response, "model_dump") else dict(response or {})
            self.span.set_attributes(extract.response_attributes(self.api, data, self.capture_content))
        except Exception:
            logger.warning("could not record the OpenAI response on its span", exc_info=True)
        self._end()

    def fail(self, error: BaseException) -> None:
        if self._ended:
            return
        try:
            self.span.record_exception(error)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
            self.span.set_attribute("error.type", type(error).__qualname__)
        except Exception:
            logger.warning("could not record the OpenAI error on its span", exc_info=True)
        self._end()

    def _end(self) -> None:
        self._ended = True
        if self.owns_span:
            self.span.end()
