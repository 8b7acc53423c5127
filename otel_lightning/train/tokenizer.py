"""A byte-level chat tokenizer built in code: nothing to download, every string encodable.

Ids 0-255 are bytes; a few special tokens mark roles and tool calls. The chat template:

    <user>What is 17+25?<assistant><call>17+25</call><eos><tool>42<assistant>42<eos>

A tool call is `<call>ARGUMENT</call>` for the first tool the request offers, `<call>NAME:ARGUMENT</call>`
for any other; ARGUMENT is the value of the tool's first parameter. Compact enough for a tiny model
to learn; tool definitions are not rendered: the default policy is trained for its tools.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

SPECIAL_TOKENS = ("<pad>", "<eos>", "<system>", "<user>", "<assistant>", "<tool>", "<call>", "</call>")


@dataclass(frozen=True)
class ToolCall:
    name: str
    argument: str  # the value of the tool's first parameter (the byte tokenizer's compact form)
    arguments: dict[str, Any] | None = None  # all of them, where the model wrote them out


class ChatTokenizer(Protocol):
    """What the policy, its server and the trainer need of a tokenizer."""

    eos_id: int
    pad_id: int
    vocab_size: int

    def encode_text(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...
    def token_bytes(self, token: int) -> list[int]: ...
    def encode_prompt(
        self, messages: list[dict[str, Any]], default_tool: str | None = None, tools: list[dict] | None = None
    ) -> list[int]: ...
    def parse_completion(self, ids: list[int], default_tool: str = "") -> tuple[str, list[ToolCall]]: ...


class ByteChatTokenizer:
    def __init__(self) -> None:
        self.special = {name: 256 + index for index, name in enumerate(SPECIAL_TOKENS)}
        self.vocab_size = 256 + len(SPECIAL_TOKENS)
        self.pad_id = self.special["<pad>"]
        self.eos_id = self.special["<eos>"]

    def encode_text(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def token_bytes(self, token: int) -> list[int]:
        return [token] if token < 256 else []

    def decode(self, ids: list[int]) -> str:
        """Text of the ids; special tokens are written by name."""
        names = {v: k for k, v in self.special.items()}
        out, pending = [], bytearray()
        for token in ids:
            if token < 256:
                pending.append(token)
                continue
            out.append(pending.decode("utf-8", errors="replace"))
            pending = bytearray()
            out.append(names.get(token, ""))
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def encode_message(self, message: dict[str, Any], default_tool: str | None = None) -> list[int]:
        role = message.get("role", "user")
        content = message.get("content") or ""
        if isinstance(content, list):
            content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
        if role == "assistant":
            ids = [self.special["<assistant>"], *self.encode_text(content)]
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                ids += self.encode_tool_call(
                    function.get("name", ""), _first_argument(function.get("arguments")), default_tool
                )
            return [*ids, self.eos_id]
        marker = {"system": "<system>", "developer": "<system>", "tool": "<tool>"}.get(role, "<user>")
        return [self.special[marker], *self.encode_text(str(content))]

    def encode_tool_call(self, name: str, argument: str, default_tool: str | None = None) -> list[int]:
        text = argument if name == default_tool else f"{name}:{argument}"
        return [self.special["<call>"], *self.encode_text(text), self.special["</call>"]]

    def encode_prompt(
        self, messages: list[dict[str, Any]], default_tool: str | None = None, tools: list[dict] | None = None
    ) -> list[int]:
        """The conversation so far, ending with the marker that asks the model for its turn.

        Tool definitions are not rendered: the default policy is trained for its tools.
        """
        ids: list[int] = []
        for message in messages:
            ids += self.encode_message(message, default_tool)
        return [*ids, self.special["<assistant>"]]

    def parse_completion(self, ids: list[int], default_tool: str = "") -> tuple[str, list[ToolCall]]:
        """(text, tool calls) of generated ids (up to and without <eos>); a call without a name is to
        `default_tool`."""
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        text, calls, current = bytearray(), [], None
        for token in ids:
            if token == self.special["<call>"]:
                current = bytearray()
            elif token == self.special["</call>"] and current is not None:
                name, separator, argument = current.decode("utf-8", errors="replace").partition(":")
                calls.append(ToolCall(name, argument) if separator else ToolCall(default_tool, name))
                current = None
            elif token < 256:
                (current if current is not None else text).append(token)
        return text.decode("utf-8", errors="replace"), calls


def _first_argument(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    if isinstance(arguments, dict) and arguments:
        return str(next(iter(arguments.values())))
    return ""
