"""One canonical message form for transitions: OpenAI chat messages.

Instrumentors write messages as JSON strings, structured OTLP values (already decoded to lists and
dicts), OpenAI chat messages (`content`, `tool_calls`, `tool_call_id`) or GenAI "parts"
(`{"role", "parts": [{"type": "text", "content"}, {"type": "tool_call", ...}]}`), sometimes mixed on
one span. Everything becomes OpenAI chat form here: what a trainer's chat template takes.
A message in a form we do not know (e.g. a Responses API item) is kept as it is.
"""

from __future__ import annotations

import json
from typing import Any


class MessageFormError(ValueError):
    """Messages that cannot be read; the rollout ends malformed with this reason."""


def parse_json(value: Any) -> Any:
    """A JSON string's value; any other value unchanged (structured attributes are decoded already)."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as error:
            raise MessageFormError(f"not JSON: {error}") from None
    return value


def _arguments(value: Any) -> str:
    # OpenAI sends tool arguments as a JSON string; GenAI parts may hold the object itself.
    if value is None:
        return "{}"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def tool_call(call: Any) -> dict[str, Any]:
    """OpenAI form of a tool call given as OpenAI (`function: {name, arguments}`) or flat (`name`, `arguments`)."""
    if not isinstance(call, dict):
        raise MessageFormError(f"a tool call must be an object, not {type(call).__name__}")
    function = call.get("function")
    if not isinstance(function, dict):
        function = {"name": call.get("name", ""), "arguments": call.get("arguments")}
    return {
        "id": str(call.get("id") or ""),
        "type": "function",
        "function": {"name": str(function.get("name") or ""), "arguments": _arguments(function.get("arguments"))},
    }


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _from_parts(message: dict[str, Any]) -> dict[str, Any]:
    """A GenAI "parts" message in OpenAI form; a tool-call response becomes a `tool` message."""
    parts = message.get("parts")
    if not isinstance(parts, list):
        raise MessageFormError("`parts` must be a list")
    role = str(message.get("role") or "user")
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    responses: list[dict[str, Any]] = []
    for part in parts:
        if not isinstance(part, dict):
            raise MessageFormError(f"a message part must be an object, not {type(part).__name__}")
        kind = part.get("type")
        if kind == "text":
            texts.append(_text(part.get("content", "")))
        elif kind == "tool_call":
            calls.append(tool_call(part))
        elif kind == "tool_call_response":
            # The conventions name the result `response`; PydanticAI writes `result`.
            result = part.get("response", part.get("result", ""))
            responses.append({"role": "tool", "tool_call_id": str(part.get("id") or ""), "content": _text(result)})
        # Other part kinds (reasoning, blobs, uris) are not text the policy produced or read as such.
    if responses and not texts and not calls:
        return responses[0] if len(responses) == 1 else {"role": "tool", "_responses": responses}
    result: dict[str, Any] = {"role": "tool" if role == "tool" else role, "content": "".join(texts) if texts else None}
    if calls:
        result["tool_calls"] = calls
    if responses:
        result["tool_call_id"] = responses[0]["tool_call_id"]
        result["content"] = responses[0]["content"]
    if "finish_reason" in message:
        result["finish_reason"] = message["finish_reason"]
    if message.get("name"):
        result["name"] = message["name"]
    return result


def message(value: Any) -> dict[str, Any]:
    """One message in OpenAI chat form."""
    if not isinstance(value, dict):
        raise MessageFormError(f"a message must be an object, not {type(value).__name__}")
    if "parts" in value:
        return _from_parts(value)
    if "role" not in value:
        return value  # not a chat message (a Responses API item, say): kept as it is
    result = dict(value)
    if result.get("tool_calls") is not None:
        calls = result["tool_calls"]
        if not isinstance(calls, list):
            raise MessageFormError("`tool_calls` must be a list")
        result["tool_calls"] = [tool_call(call) for call in calls]
    return result


def messages(value: Any) -> list[dict[str, Any]]:
    """A list of messages in OpenAI chat form, from a JSON string, a structured value or a single message."""
    value = parse_json(value)
    if value is None:
        return []
    if isinstance(value, dict):
        value = value.get("messages", [value]) if "role" not in value and "parts" not in value else [value]
    if not isinstance(value, list):
        raise MessageFormError(f"messages must be a list, not {type(value).__name__}")
    result: list[dict[str, Any]] = []
    for item in value:
        converted = message(item)
        # One GenAI message may answer several tool calls: one OpenAI `tool` message each.
        result.extend(converted.pop("_responses") if "_responses" in converted else [converted])
    return result


def tool_definition(value: Any) -> dict[str, Any]:
    """OpenAI chat form of a tool definition given as OpenAI (`function: {...}`) or flat (`name`, `parameters`)."""
    value = parse_json(value)
    if not isinstance(value, dict):
        raise MessageFormError(f"a tool definition must be an object, not {type(value).__name__}")
    if isinstance(value.get("function"), dict):
        return value
    function = {key: value[key] for key in ("name", "description", "parameters", "strict") if key in value}
    return {"type": "function", "function": function}


def tool_definitions(value: Any) -> list[dict[str, Any]]:
    value = parse_json(value)
    if value is None:
        return []
    if not isinstance(value, list):
        raise MessageFormError(f"tool definitions must be a list, not {type(value).__name__}")
    return [tool_definition(tool) for tool in value]
