"""Pure functions from OpenAI request kwargs / response dicts to span attributes.

Responses are handled as plain dicts (`model_dump()` keeps vLLM's extra fields such as
`prompt_token_ids`), so a streamed response that was accumulated into the same shape goes through
the same code as a non-streamed one.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from otel_lightning import semconv
from otel_lightning.content import redacted
from otel_lightning.openai_messages import chat_output_message, responses_output_message

CHAT_COMPLETIONS = "chat.completions"
RESPONSES = "responses"

_NOT_GIVEN_TYPES = ("NotGiven", "Omit")


def to_jsonable(value: Any) -> Any:
    """Turn pydantic models, iterables and other SDK objects into JSON-ready values."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items() if not _is_not_given(v)}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "model_dump"):
        return to_jsonable(value.model_dump(exclude_none=True))
    if hasattr(value, "__iter__") and not isinstance(value, (bytes, bytearray)):
        return [to_jsonable(v) for v in value]
    return str(value)


def dumps(value: Any) -> str:
    return json.dumps(redacted(to_jsonable(value)), ensure_ascii=False, separators=(",", ":"))


def _is_not_given(value: Any) -> bool:
    return type(value).__name__ in _NOT_GIVEN_TYPES


def _given(kwargs: Mapping[str, Any], key: str) -> Any:
    value = kwargs.get(key)
    return None if value is None or _is_not_given(value) else value


def with_token_id_options(api: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request asking a vLLM-style server for token ids and logprobs (`return_token_ids`).

    Only for chat completions; values the caller set are kept.
    """
    if api != CHAT_COMPLETIONS:
        return kwargs
    extra_body = dict(_given(kwargs, "extra_body") or {})
    extra_body.setdefault("return_token_ids", True)
    options = {**kwargs, "extra_body": extra_body}
    if _given(kwargs, "logprobs") is None:
        options["logprobs"] = True
    return options


def request_messages(api: str, kwargs: Mapping[str, Any]) -> list[Any]:
    """The conversation the model is asked to continue, as chat messages."""
    if api == CHAT_COMPLETIONS:
        return to_jsonable(_given(kwargs, "messages") or [])
    messages: list[Any] = []
    instructions = _given(kwargs, "instructions")
    if instructions:
        messages.append({"role": "system", "content": instructions})
    given = _given(kwargs, "input")
    if isinstance(given, str):
        messages.append({"role": "user", "content": given})
    elif given is not None:
        messages.extend(to_jsonable(given))
    return messages


def request_attributes(api: str, kwargs: Mapping[str, Any], capture_content: bool) -> dict[str, Any]:
    model = _given(kwargs, "model")
    attributes: dict[str, Any] = {
        semconv.SPAN_KIND: semconv.SPAN_KIND_LLM,
        semconv.GEN_AI_OPERATION_NAME: "chat",
        semconv.GEN_AI_SYSTEM: "openai",
        semconv.GEN_AI_PROVIDER_NAME: "openai",
        semconv.LLM_API: api,
        semconv.LLM_STREAMING: bool(_given(kwargs, "stream")),
    }
    if model is not None:
        attributes[semconv.GEN_AI_REQUEST_MODEL] = str(model)
    for key, attribute in (
        ("temperature", semconv.GEN_AI_REQUEST_TEMPERATURE),
        ("top_p", semconv.GEN_AI_REQUEST_TOP_P),
    ):
        value = _given(kwargs, key)
        if isinstance(value, (int, float)):
            attributes[attribute] = float(value)
    max_tokens = next(
        (v for k in ("max_completion_tokens", "max_tokens", "max_output_tokens") if (v := _given(kwargs, k))),
        None,
    )
    if isinstance(max_tokens, int):
        attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] = max_tokens
    if capture_content:
        attributes[semconv.GEN_AI_INPUT_MESSAGES] = dumps(request_messages(api, kwargs))
        tools = _given(kwargs, "tools")
        if tools:
            attributes[semconv.GEN_AI_TOOL_DEFINITIONS] = dumps(tools)
    return attributes


def _int_list(value: Any) -> list[int] | None:
    # The SDK checks every element again when the attribute is set; the first one tells the shape.
    if isinstance(value, list) and value and isinstance(value[0], int):
        return value
    return None


def response_attributes(api: str, response: Mapping[str, Any], capture_content: bool) -> dict[str, Any]:
    """Attributes of a finished response (a `model_dump()` of ChatCompletion or Response)."""
    attributes: dict[str, Any] = {}
    if response.get("id"):
        attributes[semconv.GEN_AI_RESPONSE_ID] = str(response["id"])
    if response.get("model"):
        attributes[semconv.GEN_AI_RESPONSE_MODEL] = str(response["model"])
    usage = response.get("usage") or {}
    input_tokens = usage.get("prompt_tokens", usage.get("input_tokens"))
    output_tokens = usage.get("completion_tokens", usage.get("output_tokens"))
    if isinstance(input_tokens, int):
        attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] = input_tokens
    if isinstance(output_tokens, int):
        attributes[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] = output_tokens
    if response.get("policy_version") is not None:
        attributes[semconv.POLICY_VERSION] = str(response["policy_version"])
    prompt_ids = _int_list(response.get("prompt_token_ids"))
    if prompt_ids:
        attributes[semconv.PROMPT_TOKEN_IDS] = prompt_ids

    if api == CHAT_COMPLETIONS:
        choices = response.get("choices") or []
        outputs = [chat_output_message(choice) for choice in choices]
        first = choices[0] if choices else {}
        response_ids = _int_list(first.get("token_ids"))
        logprob_items = (first.get("logprobs") or {}).get("content") or []
    else:
        outputs = [responses_output_message(response)]
        response_ids = _int_list(response.get("output_token_ids") or response.get("token_ids"))
        logprob_items = [
            logprob
            for item in response.get("output") or []
            for content in item.get("content") or []
            for logprob in content.get("logprobs") or []
        ]
    attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = [str(o.get("finish_reason")) for o in outputs]
    if response_ids:
        attributes[semconv.RESPONSE_TOKEN_IDS] = response_ids
    logprobs = [float(item["logprob"]) for item in logprob_items if isinstance(item.get("logprob"), (int, float))]
    if logprobs:
        attributes[semconv.RESPONSE_LOGPROBS] = logprobs
    if capture_content:
        attributes[semconv.GEN_AI_OUTPUT_MESSAGES] = dumps(outputs)
    return attributes
