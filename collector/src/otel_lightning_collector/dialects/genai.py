"""The GenAI semantic conventions, current and deprecated.

Current: `gen_ai.operation.name` (or the span name `chat …` / `invoke_agent …` / `execute_tool …`),
`gen_ai.input.messages` / `gen_ai.output.messages` / `gen_ai.system_instructions` (JSON strings or
structured values, in "parts" form; OpenAI form is read too), `gen_ai.tool.definitions`.
Deprecated: messages as events — `gen_ai.system.message`, `gen_ai.user.message`,
`gen_ai.assistant.message`, `gen_ai.tool.message`, `gen_ai.choice` — as log records (the contrib
OpenAI instrumentor 2.x) or span events, and the older `gen_ai.prompt` / `gen_ai.completion` JSON
(as attributes or on `gen_ai.content.prompt` / `gen_ai.content.completion` events).
OpenLLMetry 0.62 writes the current form, so its spans read here.
"""

from __future__ import annotations

from typing import Any

from otel_lightning import semconv
from otel_lightning_collector.dialects import messages as canonical
from otel_lightning_collector.dialects.step import AGENT, LLM, TOOL, CanonicalStep, SpanView, first_string

NAME = "genai"

SYSTEM_INSTRUCTIONS = "gen_ai.system_instructions"
CONVERSATION_ID = "gen_ai.conversation.id"
DEPRECATED_PROMPT = "gen_ai.prompt"
DEPRECATED_COMPLETION = "gen_ai.completion"

_KIND_OF_OPERATION = {
    "chat": LLM,
    "text_completion": LLM,
    "generate_content": LLM,
    "responses": LLM,
    "invoke_agent": AGENT,
    "create_agent": AGENT,
    "execute_tool": TOOL,
}
_ROLE_OF_EVENT = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}
_CHOICE_EVENT = "gen_ai.choice"


def kind_of(view: SpanView) -> str | None:
    operation = view.attributes.get(semconv.GEN_AI_OPERATION_NAME)
    if not isinstance(operation, str) or not operation:
        # The span name (`chat gpt-4o`) only on a span that speaks GenAI at all: "chat room" is no LLM call.
        if not any(key.startswith("gen_ai.") for key in view.attributes) and not view.events and not view.logs:
            return None
        operation = view.name.partition(" ")[0]
    return _KIND_OF_OPERATION.get(operation)


def recognises(view: SpanView) -> bool:
    return kind_of(view) is not None


def _event_message(event_name: str, body: Any) -> dict[str, Any]:
    body = body if isinstance(body, dict) else {"content": body}
    role = _ROLE_OF_EVENT[event_name]
    message: dict[str, Any] = {"role": role, "content": body.get("content")}
    if body.get("tool_calls"):
        message["tool_calls"] = body["tool_calls"]
    if role == "tool":
        message["tool_call_id"] = str(body.get("id") or body.get("tool_call_id") or "")
    return canonical.message(message)


def _choice_message(body: Any) -> dict[str, Any]:
    body = body if isinstance(body, dict) else {}
    message = dict(body.get("message") or {})
    message.setdefault("role", "assistant")
    message.setdefault("content", None)
    if body.get("finish_reason"):
        message["finish_reason"] = body["finish_reason"]
    return canonical.message(message)


def _event_records(view: SpanView) -> list[tuple[str, Any]]:
    """(event name, body) of the span's message events, from log records and span events alike."""
    records: list[tuple[str, Any]] = []
    for name, attributes, body in view.logs:
        records.append((name or str(attributes.get("event.name", "")), body))
    for name, attributes in view.events:
        body = {key: value for key, value in attributes.items() if not key.startswith("gen_ai.system")}
        records.append((name, body))
    return records


def _messages_from_events(view: SpanView) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None]:
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for name, body in _event_records(view):
        if name in _ROLE_OF_EVENT:
            inputs.append(_event_message(name, body))
        elif name == _CHOICE_EVENT:
            outputs.append(_choice_message(body))
        elif name == "gen_ai.content.prompt" and isinstance(body, dict):
            inputs.extend(canonical.messages(body.get(DEPRECATED_PROMPT)))
        elif name == "gen_ai.content.completion" and isinstance(body, dict):
            outputs.extend(canonical.messages(body.get(DEPRECATED_COMPLETION)))
    return inputs or None, outputs or None


def _input_messages(attributes: dict[str, Any]) -> list[dict[str, Any]] | None:
    value = attributes.get(semconv.GEN_AI_INPUT_MESSAGES)
    if value is None:
        value = attributes.get(DEPRECATED_PROMPT)
    if value is None:
        return None
    found = canonical.messages(value)
    instructions = attributes.get(SYSTEM_INSTRUCTIONS)
    if instructions is not None and not any(m.get("role") == "system" for m in found):
        parts = canonical.parse_json(instructions)
        parts = parts if isinstance(parts, list) else [{"type": "text", "content": str(parts)}]
        found.insert(0, canonical.message({"role": "system", "parts": parts}))
    return found


def _output_messages(attributes: dict[str, Any]) -> list[dict[str, Any]] | None:
    value = attributes.get(semconv.GEN_AI_OUTPUT_MESSAGES)
    if value is None:
        value = attributes.get(DEPRECATED_COMPLETION)
    return None if value is None else canonical.messages(value)


def read(view: SpanView, dialect: str = NAME) -> CanonicalStep | None:
    kind = kind_of(view)
    if kind is None:
        return None
    found = view.attributes
    step = CanonicalStep(kind=kind, dialect=dialect)
    step.agent = first_string(found, semconv.GEN_AI_AGENT_NAME) or None
    step.input_messages = _input_messages(found)
    step.output_messages = _output_messages(found)
    if step.input_messages is None or step.output_messages is None:
        from_inputs, from_outputs = _messages_from_events(view)
        step.input_messages = step.input_messages if step.input_messages is not None else from_inputs
        step.output_messages = step.output_messages if step.output_messages is not None else from_outputs
    tools = found.get(semconv.GEN_AI_TOOL_DEFINITIONS)
    step.tools = canonical.tool_definitions(tools) if tools is not None else None
    step.response_id = first_string(found, semconv.GEN_AI_RESPONSE_ID)
    step.model = first_string(found, semconv.GEN_AI_RESPONSE_MODEL, semconv.GEN_AI_REQUEST_MODEL)
    step.finish_reason = first_string(found, semconv.GEN_AI_RESPONSE_FINISH_REASONS)
    step.conversation_id = first_string(found, CONVERSATION_ID)
    return step
