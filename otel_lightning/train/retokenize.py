"""Token ids for a step whose spans carried none (`Transition.token_ids_absent`), rebuilt from its messages
with the policy's own tokenizer.

Only on request (`TrainerConfig.retokenize`, `train.py --retokenize`): text re-encoded is not always what the
model server saw (another chat template, whitespace the client normalised, a tool-call format the server
rendered its own way), so by default such steps are counted and left out, never trained on silently.
"""

from __future__ import annotations

import json
from typing import Any

from otel_lightning.train.tokenizer import ChatTokenizer


class RetokenizeError(ValueError):
    """The step's messages cannot be encoded (no readable state or action)."""


def assistant_ids(tokenizer: ChatTokenizer, action: dict[str, Any], default_tool: str | None) -> list[int]:
    """The ids of the model's turn, as they follow `encode_prompt`'s generation marker, ending at end-of-turn."""
    encode_message = getattr(tokenizer, "encode_message", None)
    if encode_message is not None:  # the byte tokenizer: its assistant message starts with the marker
        return encode_message({**action, "role": "assistant"}, default_tool)[1:]
    render = getattr(tokenizer, "_chat_messages", None)
    if render is not None:
        # A chat-template tokenizer (HFChatTokenizer): the turn's text as its prompts render it (tool calls
        # as <tool_call>{"name", "arguments": {...}}</tool_call>), so this response and the next prompt agree.
        (message,) = render([{**action, "role": "assistant"}], None)
        return [*tokenizer.encode_text(message["content"]), tokenizer.eos_id]
    content = action.get("content") or ""
    if isinstance(content, list):
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    ids = tokenizer.encode_text(str(content))
    for call in action.get("tool_calls") or []:
        function = call.get("function") or {}
        ids += tokenizer.encode_tool_call(str(function.get("name", "")), str(function.get("arguments", "")))
    return [*ids, tokenizer.eos_id]


def retokenize(
    tokenizer: ChatTokenizer, state_json: str, action_json: str, default_tool: str | None = None
) -> tuple[list[int], list[int]]:
    """(prompt ids, response ids) of one step from its state (`{"messages", "tools"}`) and action (the
    assistant message)."""
    try:
        state = json.loads(state_json or "{}")
        action = json.loads(action_json or "{}")
    except json.JSONDecodeError as error:
        raise RetokenizeError(f"unreadable step messages: {error}") from error
    messages = state.get("messages") if isinstance(state, dict) else None
    if not isinstance(messages, list) or not messages:
        raise RetokenizeError("the step has no input messages to encode")
    if not isinstance(action, dict) or not (action.get("content") or action.get("tool_calls")):
        raise RetokenizeError("the step has no assistant output to encode")
    tools = state.get("tools") if isinstance(state.get("tools"), list) else None
    prompt = tokenizer.encode_prompt(messages, default_tool, tools)
    return prompt, assistant_ids(tokenizer, action, default_tool)
