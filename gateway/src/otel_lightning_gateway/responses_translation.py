"""The Responses API served through chat completions: request in, Responses object out.

Why: vLLM's /v1/responses has no token-id fields, and an RL step needs the exact ids; its chat
completions have them (`return_token_ids`). Text, function tools and their outputs, instructions,
multi-turn `input` and the usual sampling options translate one to one; what cannot (built-in tools
such as web search, `previous_response_id`: the gateway keeps no responses) is refused with a 400
that says so, never dropped quietly. Reasoning items from an earlier turn carry nothing a chat
template can take, so they are left out of the prompt (the span's input shows what the model saw).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# Sampling options with the same name and meaning in both APIs.
_SAME = ("model", "temperature", "top_p", "parallel_tool_calls", "user", "stream", "seed", "stop")


class TranslationError(ValueError):
    """The request cannot be served through chat completions; the message tells the caller why (HTTP 400)."""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text") or "" for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _chat_content(content: Any) -> Any:
    """Responses content parts as chat content parts (plain text stays a string)."""
    if not isinstance(content, list):
        return content
    parts = []
    for part in content:
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text") or ""})
        elif kind == "input_image":
            url = part.get("image_url") or part.get("file_id")
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": part.get("detail") or "auto"}})
        elif kind == "refusal":
            parts.append({"type": "text", "text": part.get("refusal") or ""})
        else:
            raise TranslationError(f"content part type {kind!r} cannot be sent through chat completions")
    if all(part["type"] == "text" for part in parts):
        return "".join(part["text"] for part in parts)
    return parts


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": _text(body["instructions"])})
    given = body.get("input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
        return messages
    for item in given or []:
        kind = item.get("type") or ("message" if "role" in item else None)
        if kind == "message":
            role = _ROLES.get(item.get("role", "user"))
            if role is None:
                raise TranslationError(f"message role {item.get('role')!r} is not one chat completions knows")
            content = _text(item.get("content")) if role == "assistant" else _chat_content(item.get("content"))
            messages.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {
                "id": item.get("call_id") or item.get("id"),
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""},
            }
            last = messages[-1] if messages else None
            # One assistant turn in chat form: its text and its calls in one message.
            if last is not None and last["role"] == "assistant":
                last.setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": _text(item.get("output"))})
        elif kind == "reasoning":
            continue
        else:
            raise TranslationError(f"input item type {kind!r} cannot be sent through chat completions")
    return messages


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    translated = []
    for tool in tools:
        if tool.get("type") != "function":
            raise TranslationError(
                f"tool type {tool.get('type')!r} is a hosted tool; only function tools go through chat completions"
            )
        function = {key: tool[key] for key in ("name", "description", "parameters", "strict") if key in tool}
        translated.append({"type": "function", "function": function})
    return translated


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict):
        if choice.get("type") != "function":
            raise TranslationError(f"tool_choice {choice!r} cannot be sent through chat completions")
        return {"type": "function", "function": {"name": choice.get("name")}}
    return choice


def _response_format(text: dict[str, Any] | None) -> dict[str, Any] | None:
    form = (text or {}).get("format") or {}
    if form.get("type") == "json_schema":
        schema = {key: form[key] for key in ("name", "schema", "strict", "description") if key in form}
        return {"type": "json_schema", "json_schema": schema}
    if form.get("type") == "json_object":
        return {"type": "json_object"}
    return None


def chat_request(body: dict[str, Any]) -> dict[str, Any]:
    """The chat completions request that asks the same of the model as the Responses request `body`."""
    if body.get("previous_response_id"):
        raise TranslationError(
            "previous_response_id needs responses stored by the server; the gateway keeps none: send the whole"
            " conversation in `input`"
        )
    chat: dict[str, Any] = {key: body[key] for key in _SAME if body.get(key) is not None}
    chat["messages"] = _messages(body)
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
    if body.get("tool_choice") is not None and body.get("tools"):
        chat["tool_choice"] = _tool_choice(body["tool_choice"])
    if body.get("top_logprobs"):
        chat["logprobs"] = True
        chat["top_logprobs"] = body["top_logprobs"]
    response_format = _response_format(body.get("text"))
    if response_format is not None:
        chat["response_format"] = response_format
    if body.get("return_token_ids"):
        chat["return_token_ids"] = True
    return chat


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def base_response(body: dict[str, Any], response_id: str, model: str, created: float) -> dict[str, Any]:
    """The Responses object's fields that echo the request (what OpenAI's own server fills in)."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": "in_progress",
        "model": model,
        "output": [],
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_output_tokens": body.get("max_output_tokens"),
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "text": body.get("text") or {"format": {"type": "text"}},
        "truncation": "disabled",
        "usage": None,
    }


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not chat_usage:
        return None
    details = chat_usage.get("prompt_tokens_details") or {}
    return {
        "input_tokens": chat_usage.get("prompt_tokens") or 0,
        "input_tokens_details": {"cached_tokens": details.get("cached_tokens") or 0},
        "output_tokens": chat_usage.get("completion_tokens") or 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": chat_usage.get("total_tokens") or 0,
    }


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "message", "id": item_id, "role": "assistant", "status": status, "content": [part]}


def function_call_item(item_id: str, call: dict[str, Any], status: str = "completed") -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "type": "function_call",
        "id": item_id,
        "call_id": call.get("id") or new_id("call"),
        "name": function.get("name") or "",
        "arguments": function.get("arguments") or "",
        "status": status,
    }


def finish_status(response: dict[str, Any], finish_reason: str | None) -> None:
    """Completed, or incomplete with the reason, as the Responses API says it."""
    if finish_reason == "length":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        response["status"] = "incomplete"
        response["incomplete_details"] = {"reason": "content_filter"}
    else:
        response["status"] = "completed"


def with_token_ids(response: dict[str, Any], chat: dict[str, Any], asked: bool) -> dict[str, Any]:
    """The chat answer's token ids on the Responses object, for a caller that asked (`return_token_ids`)."""
    if asked:
        choice = (chat.get("choices") or [{}])[0]
        response["prompt_token_ids"] = chat.get("prompt_token_ids")
        response["output_token_ids"] = choice.get("token_ids")
    if chat.get("policy_version") is not None:
        response["policy_version"] = chat["policy_version"]
    return response


def response_from_chat(body: dict[str, Any], chat: dict[str, Any], asked_token_ids: bool) -> dict[str, Any]:
    """The Responses object for a (non-streamed, or accumulated) chat completion."""
    response = base_response(body, new_id("resp"), chat.get("model") or body.get("model") or "", time.time())
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    if message.get("content"):
        response["output"].append(message_item(new_id("msg"), message["content"]))
    for call in message.get("tool_calls") or []:
        response["output"].append(function_call_item(new_id("fc"), call))
    finish_status(response, choice.get("finish_reason"))
    response["usage"] = usage(chat.get("usage"))
    return with_token_ids(response, chat, asked_token_ids)
