"""OpenLLMetry (Traceloop) before it moved to the GenAI names: `traceloop.*`, `llm.request.type`,
flattened `gen_ai.prompt.N.{role,content,tool_call_id,tool_calls.M.*}` /
`gen_ai.completion.N.{role,content,finish_reason,tool_calls.M.*}` and `llm.request.functions.N.*`.
(OpenLLMetry 0.62's OpenAI instrumentor writes the current GenAI form: see genai.py.)
"""

from __future__ import annotations

from typing import Any

from otel_lightning import semconv
from otel_lightning_collector.dialects import messages as canonical
from otel_lightning_collector.dialects.flattened import has_prefix, unflatten
from otel_lightning_collector.dialects.step import AGENT, LLM, TOOL, CanonicalStep, SpanView, first_string

NAME = "openllmetry"

PROMPTS = "gen_ai.prompt."
COMPLETIONS = "gen_ai.completion."
FUNCTIONS = "llm.request.functions."
REQUEST_TYPE = "llm.request.type"
TRACELOOP_KIND = "traceloop.span.kind"
TRACELOOP_ENTITY = "traceloop.entity.name"
_TRACELOOP_KINDS = {"agent": AGENT, "tool": TOOL}


def kind_of(view: SpanView) -> str | None:
    found = view.attributes
    if (
        found.get(REQUEST_TYPE) in ("chat", "completion")
        or has_prefix(found, PROMPTS)
        or has_prefix(found, COMPLETIONS)
    ):
        return LLM
    return _TRACELOOP_KINDS.get(str(found.get(TRACELOOP_KIND, "")))


def recognises(view: SpanView) -> bool:
    return kind_of(view) is not None


def _message(entry: Any, output: bool) -> dict[str, Any]:
    if not isinstance(entry, dict):
        raise canonical.MessageFormError("an OpenLLMetry message must have `role`/`content` keys")
    message: dict[str, Any] = {"role": str(entry.get("role") or ("assistant" if output else "user"))}
    message["content"] = entry.get("content")
    calls = entry.get("tool_calls")
    if isinstance(calls, list) and calls:
        message["tool_calls"] = [canonical.tool_call(call) for call in calls]
    if entry.get("tool_call_id"):
        message["tool_call_id"] = str(entry["tool_call_id"])
    if output and entry.get("finish_reason"):
        message["finish_reason"] = entry["finish_reason"]
    return canonical.message(message)


def read(view: SpanView) -> CanonicalStep | None:
    kind = kind_of(view)
    if kind is None:
        return None
    found = view.attributes
    step = CanonicalStep(kind=kind, dialect=NAME)
    prompts, completions = unflatten(found, PROMPTS), unflatten(found, COMPLETIONS)
    step.input_messages = [_message(m, output=False) for m in prompts] if prompts else None
    step.output_messages = [_message(m, output=True) for m in completions] if completions else None
    functions = unflatten(found, FUNCTIONS)
    step.tools = [canonical.tool_definition(f) for f in functions] if functions else None
    step.agent = (
        first_string(found, semconv.GEN_AI_AGENT_NAME)
        or (first_string(found, TRACELOOP_ENTITY) if kind == AGENT else "")
        or None
    )
    step.response_id = first_string(found, semconv.GEN_AI_RESPONSE_ID)
    step.model = first_string(found, semconv.GEN_AI_RESPONSE_MODEL, semconv.GEN_AI_REQUEST_MODEL, "llm.response.model")
    step.finish_reason = (step.output_messages or [{}])[0].get("finish_reason", "") if step.output_messages else ""
    return step
