"""Pure functions from request bodies and (accumulated) responses to span attributes.

Names come from otel_lightning.semconv: GenAI conventions where they exist, `lightning.*` for what
RL needs beyond them. Messages are JSON in the OpenAI chat message form, as the collector reads them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from otel_lightning import semconv
from otel_lightning.content import capture_content_enabled, redact, redaction_pattern
from otel_lightning.openai_messages import chat_output_message, responses_output_message

CHAT = "chat.completions"
COMPLETIONS = semconv.LLM_API_COMPLETIONS
RESPONSES = "responses"

_OPERATION = {CHAT: "chat", RESPONSES: "chat", COMPLETIONS: "text_completion"}


@dataclass(frozen=True)
class ContentCapture:
    """Content (messages, tools) goes on spans, as JSON, with LIGHTNING_REDACT_PATTERN's matches blanked.
    `from_env` reads LIGHTNING_CAPTURE_CONTENT and the pattern once per gateway: not on every call."""

    redaction: re.Pattern[str] | None = None

    @classmethod
    def from_env(cls) -> ContentCapture | None:
        """None when LIGHTNING_CAPTURE_CONTENT is off."""
        return cls(redaction_pattern()) if capture_content_enabled() else None

    def dumps(self, value: Any) -> str:
        return orjson.dumps(value if self.redaction is None else redact(value, self.redaction)).decode()


def span_name(api: str, model: Any) -> str:
    return f"{_OPERATION[api]} {model}" if model else _OPERATION[api]


def input_messages(api: str, body: Mapping[str, Any]) -> list[Any]:
    """The conversation the model continues, as chat messages (a completions prompt is one user turn)."""
    if api == COMPLETIONS:
        prompt = body.get("prompt")
        return [{"role": "user", "content": prompt}] if prompt is not None else []
    if api == CHAT:
        return list(body.get("messages") or [])
    messages: list[Any] = []  # a Responses request served as it is (no translation)
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    given = body.get("input")
    messages.extend([{"role": "user", "content": given}] if isinstance(given, str) else list(given or []))
    return messages


def request_attributes(api: str, body: Mapping[str, Any], content: ContentCapture | None) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        semconv.SPAN_KIND: semconv.SPAN_KIND_LLM,
        semconv.LLM_SOURCE: semconv.LLM_SOURCE_GATEWAY,
        semconv.GEN_AI_OPERATION_NAME: _OPERATION[api],
        semconv.GEN_AI_SYSTEM: "openai",
        semconv.GEN_AI_PROVIDER_NAME: "openai",
        semconv.LLM_API: api,
        semconv.LLM_STREAMING: bool(body.get("stream")),
    }
    model = body.get("model")
    if model is not None:
        attributes[semconv.GEN_AI_REQUEST_MODEL] = str(model)
    for key, attribute in (
        ("temperature", semconv.GEN_AI_REQUEST_TEMPERATURE),
        ("top_p", semconv.GEN_AI_REQUEST_TOP_P),
    ):
        value = body.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            attributes[attribute] = float(value)
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            attributes[semconv.GEN_AI_REQUEST_MAX_TOKENS] = value
            break
    if content is not None:
        attributes[semconv.GEN_AI_INPUT_MESSAGES] = content.dumps(input_messages(api, body))
        if body.get("tools"):
            attributes[semconv.GEN_AI_TOOL_DEFINITIONS] = content.dumps(body["tools"])
    return attributes


def _int_list(value: Any) -> list[int] | None:
    # The SDK checks every element again when the attribute is set; the first one tells the shape.
    return value if isinstance(value, list) and value and isinstance(value[0], int) else None


def _floats(values: list[Any]) -> list[float]:
    """The numbers among `values`, as floats (a token's logprob can come as the int 0)."""
    if set(map(type, values)) == {float}:  # one C-level pass: the usual case
        return values
    return [float(value) for value in values if isinstance(value, (int, float)) and not isinstance(value, bool)]


def response_attributes(api: str, response: Mapping[str, Any], content: ContentCapture | None) -> dict[str, Any]:
    """Attributes of a finished answer: a chat completion, a completion or a Responses object (streamed
    answers are accumulated into the same shape first)."""
    attributes: dict[str, Any] = {}
    if response.get("id"):
        attributes[semconv.GEN_AI_RESPONSE_ID] = str(response["id"])
    if response.get("model"):
        attributes[semconv.GEN_AI_RESPONSE_MODEL] = str(response["model"])
    usage = response.get("usage") or {}
    for keys, attribute in (
        (("prompt_tokens", "input_tokens"), semconv.GEN_AI_USAGE_INPUT_TOKENS),
        (("completion_tokens", "output_tokens"), semconv.GEN_AI_USAGE_OUTPUT_TOKENS),
    ):
        value = next((usage[key] for key in keys if isinstance(usage.get(key), int)), None)
        if value is not None:
            attributes[attribute] = value
    if response.get("policy_version") is not None:
        attributes[semconv.POLICY_VERSION] = str(response["policy_version"])
    choices = response.get("choices") or []
    first = choices[0] if choices else {}
    prompt_ids = _int_list(response.get("prompt_token_ids") or first.get("prompt_token_ids"))
    logprobs: list[float] = []
    if api == CHAT:
        outputs = [chat_output_message(choice) for choice in choices]
        response_ids = _int_list(first.get("token_ids"))
        items = (first.get("logprobs") or {}).get("content") or []
        logprobs = _floats([item.get("logprob") for item in items])
    elif api == COMPLETIONS:
        outputs = [
            {"role": "assistant", "content": c.get("text"), "finish_reason": c.get("finish_reason")} for c in choices
        ]
        response_ids = _int_list(first.get("token_ids"))
        logprobs = _floats((first.get("logprobs") or {}).get("token_logprobs") or [])
    else:
        outputs = [responses_output_message(response)]
        response_ids = _int_list(response.get("output_token_ids") or response.get("token_ids"))
    if prompt_ids:
        attributes[semconv.PROMPT_TOKEN_IDS] = prompt_ids
    if response_ids:
        attributes[semconv.RESPONSE_TOKEN_IDS] = response_ids
        if logprobs and len(logprobs) == len(response_ids):  # the collector wants one per token, or none
            attributes[semconv.RESPONSE_LOGPROBS] = logprobs
    attributes[semconv.GEN_AI_RESPONSE_FINISH_REASONS] = [str(o.get("finish_reason")) for o in outputs]
    if content is not None:
        attributes[semconv.GEN_AI_OUTPUT_MESSAGES] = content.dumps(outputs)
    return attributes
