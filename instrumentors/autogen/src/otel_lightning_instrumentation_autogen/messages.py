"""AutoGen's model messages, tools and results in the OpenAI chat format the collector reads."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from autogen_core import FunctionCall
from autogen_core.models import (
    AssistantMessage,
    CreateResult,
    FunctionExecutionResultMessage,
    LLMMessage,
    SystemMessage,
    UserMessage,
)

from otel_lightning.content import redacted


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    # Multimodal user content: images are not text the collector can keep; mark where they were.
    return "".join(part if isinstance(part, str) else "[image]" for part in content)


def _tool_calls(calls: Sequence[FunctionCall]) -> list[dict[str, Any]]:
    return [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        for call in calls
    ]


def _assistant(content: str | Sequence[FunctionCall]) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    return {"role": "assistant", "content": None, "tool_calls": _tool_calls(content)}


def to_openai(messages: Iterable[LLMMessage]) -> list[dict[str, Any]]:
    converted: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            converted.append({"role": "system", "content": message.content})
        elif isinstance(message, UserMessage):
            converted.append({"role": "user", "content": _text(message.content), "name": message.source})
        elif isinstance(message, AssistantMessage):
            converted.append({**_assistant(message.content), "name": message.source})
        elif isinstance(message, FunctionExecutionResultMessage):
            for result in message.content:
                converted.append({"role": "tool", "tool_call_id": result.call_id, "content": result.content})
        else:
            raise ValueError(f"unknown AutoGen message type {type(message).__name__}")
    return converted


def result_to_openai(result: CreateResult) -> dict[str, Any]:
    return _assistant(result.content)


def tool_definitions(schemas: Iterable[Any]) -> list[dict[str, Any]]:
    """OpenAI tool definitions from AutoGen `ToolSchema`s (or tools, which have a `.schema`)."""
    definitions = []
    for schema in schemas:
        schema = getattr(schema, "schema", schema)
        function = {"name": schema["name"], "parameters": schema.get("parameters") or {"type": "object"}}
        if schema.get("description"):
            function["description"] = schema["description"]
        definitions.append({"type": "function", "function": function})
    return definitions


def dumps(value: Any) -> str:
    return json.dumps(redacted(value), ensure_ascii=False, default=str)
