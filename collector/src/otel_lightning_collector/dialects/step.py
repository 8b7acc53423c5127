"""What every dialect reads a span into: a canonical step (or nothing we know)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

LLM = "llm"
AGENT = "agent"
TOOL = "tool"


@dataclass
class SpanView:
    """A span as the dialects see it: decoded attributes, its events, and the log records that
    refer to it (event name, attributes, body), e.g. the GenAI message events."""

    name: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    logs: list[tuple[str, dict[str, Any], Any]] = field(default_factory=list)


@dataclass
class CanonicalStep:
    """One span's meaning for training, whatever instrumentation wrote it.

    Messages and tools are in OpenAI chat form (None: the span says nothing about them); token ids
    are None when the span has none (most instrumentors record none; the gateway and ours do).
    """

    kind: str  # LLM, AGENT or TOOL
    dialect: str
    agent: str | None = None
    input_messages: list[dict[str, Any]] | None = None
    output_messages: list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] | None = None
    prompt_token_ids: list[Any] | None = None
    response_token_ids: list[Any] | None = None
    response_logprobs: list[Any] | None = None
    response_id: str = ""
    model: str = ""
    finish_reason: str = ""
    policy_version: str = ""
    conversation_id: str = ""
    # "gateway" for the model gateway's span of a call; "" for a client-side span.
    source: str = ""

    @property
    def has_token_ids(self) -> bool:
        return bool(self.prompt_token_ids) and bool(self.response_token_ids)


def first_string(attributes: dict[str, Any], *keys: str) -> str:
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        if value not in (None, ""):
            return str(value)
    return ""
