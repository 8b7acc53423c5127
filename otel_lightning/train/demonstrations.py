"""Conversations re-encoded with the student's own chat template: (prompt ids, completion ids) per assistant turn.

The prompt is rendered as the policy server renders a request (the first tool offered is the default
one), the completion as the model would write the turn, so the student is trained on exactly what it
will see and say. Only assistant turns are trained on; one with `"weight": 0` is context only.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from otel_lightning.train.retokenize import assistant_ids
from otel_lightning.train.sft import Example
from otel_lightning.train.tokenizer import ChatTokenizer


def _tool_names(tools: list[dict[str, Any]] | None) -> list[str]:
    return [str((tool.get("function") or tool).get("name", "")) for tool in tools or [] if isinstance(tool, dict)]


def conversation_examples(tokenizer: ChatTokenizer, conversation: dict[str, Any]) -> list[Example]:
    messages = conversation["messages"]
    tools = conversation.get("tools") or None
    default_tool = next(iter(_tool_names(tools)), None)
    examples = []
    for index, message in enumerate(messages):
        if message.get("role") != "assistant" or message.get("weight", 1) == 0:
            continue
        history = [{k: v for k, v in m.items() if k != "weight"} for m in messages[:index]]
        prompt = tokenizer.encode_prompt(history, default_tool, tools)
        examples.append((prompt, assistant_ids(tokenizer, message, None)))
    return examples


def encode_conversations(tokenizer: ChatTokenizer, conversations: Iterable[dict[str, Any]]) -> list[Example]:
    return [example for conversation in conversations for example in conversation_examples(tokenizer, conversation)]


def conversation_of_step(state_json: str, action_json: str) -> dict[str, Any] | None:
    """The conversation a recorded step ends with (its input messages + its answer), or None if unreadable."""
    try:
        state, action = json.loads(state_json or "{}"), json.loads(action_json or "{}")
    except json.JSONDecodeError:
        return None
    messages = state.get("messages") if isinstance(state, dict) else None
    if not isinstance(messages, list) or not messages or not isinstance(action, dict):
        return None
    if not (action.get("content") or action.get("tool_calls")):
        return None
    earlier = [{**m, "weight": 0} if m.get("role") == "assistant" else m for m in messages if isinstance(m, dict)]
    answer = {"role": "assistant", "content": action.get("content") or ""}
    if action.get("tool_calls"):
        answer["tool_calls"] = action["tool_calls"]
    return {
        "messages": [*earlier, answer],
        "tools": state.get("tools") if isinstance(state.get("tools"), list) else None,
    }
