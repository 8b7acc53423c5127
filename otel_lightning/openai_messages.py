"""The assistant message of an OpenAI answer, in the chat form transitions use: one reading for the client
instrumentor and the model gateway, which see the same answers from either side of the wire."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def chat_output_message(choice: Mapping[str, Any]) -> dict[str, Any]:
    """One chat completion choice as an assistant message with its finish reason."""
    message = choice.get("message") or {}
    output: dict[str, Any] = {"role": message.get("role") or "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        output["tool_calls"] = message["tool_calls"]
    output["finish_reason"] = choice.get("finish_reason")
    return output


def responses_output_message(response: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses object's output items (text and function calls) as one assistant message."""
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for item in response.get("output") or []:
        if item.get("type") == "message":
            texts.extend(c.get("text", "") for c in item.get("content") or [] if c.get("type") == "output_text")
        elif item.get("type") == "function_call":
            function = {"name": item.get("name"), "arguments": item.get("arguments")}
            tool_calls.append({"id": item.get("call_id") or item.get("id"), "type": "function", "function": function})
    output: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if tool_calls:
        output["tool_calls"] = tool_calls
    output["finish_reason"] = "tool_calls" if tool_calls else response.get("status")
    return output
