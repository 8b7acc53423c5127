"""HFChatTokenizer: a Hugging Face tokenizer with its chat template, behind the interface the policy
server and trainer use (the same as ByteChatTokenizer's).

Tool calls are written and read in the widespread `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
form. Templates that render tools themselves get them; for others (SmolLM2's) the tools are
described in a system message.
"""

from __future__ import annotations

import json
import re
from typing import Any

from otel_lightning.train.tokenizer import ToolCall

_TOOL_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|end|>")


def _arguments(call: dict[str, Any]) -> dict[str, Any]:
    arguments = (call.get("function") or {}).get("arguments") or {}
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return {"input": arguments}
    return arguments if isinstance(arguments, dict) else {"input": arguments}


class HFChatTokenizer:
    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        vocab = tokenizer.get_vocab()
        # GGUF metadata can name a wrong eos (SmolLM2's says <|im_start|>): a chat turn ends at its end marker.
        end = next((marker for marker in _END_OF_TURN if marker in vocab), None)
        self.eos_id = vocab[end] if end else tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.vocab_size = len(tokenizer)
        self._renders_tools = "tools" in (tokenizer.chat_template or "")

    def encode_text(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, clean_up_tokenization_spaces=False)

    def token_bytes(self, token: int) -> list[int]:
        return list(self.tokenizer.decode([token], clean_up_tokenization_spaces=False).encode("utf-8"))

    def encode_tool_call(self, name: str, argument: str, default_tool: str | None = None) -> list[int]:
        return self.encode_text(
            f"<tool_call>{json.dumps({'name': name, 'arguments': {'input': argument}})}</tool_call>"
        )

    def _chat_messages(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> list[dict]:
        rendered = []
        for message in messages:
            content = message.get("content") or ""
            if isinstance(content, list):
                content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
            calls = [
                json.dumps({"name": (c.get("function") or {}).get("name", ""), "arguments": _arguments(c)})
                for c in message.get("tool_calls") or []
            ]
            content += "".join(f"<tool_call>{call}</tool_call>" for call in calls)
            rendered.append({"role": message.get("role", "user"), "content": content})
        if tools and not self._renders_tools:
            described = "\n".join(json.dumps(tool.get("function", tool)) for tool in tools)
            system = (
                "You may call these tools. To call one, answer with"
                ' <tool_call>{"name": NAME, "arguments": {...}}</tool_call>\n' + described
            )
            rendered.insert(0, {"role": "system", "content": system})
        return rendered

    def encode_prompt(
        self, messages: list[dict[str, Any]], default_tool: str | None = None, tools: list[dict] | None = None
    ) -> list[int]:
        chat = self._chat_messages(messages, tools)
        extra = {"tools": tools} if tools and self._renders_tools else {}
        encoded = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True, **extra)
        return list(encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded)

    def parse_completion(self, ids: list[int], default_tool: str = "") -> tuple[str, list[ToolCall]]:
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        calls = []
        for found in _TOOL_CALL.findall(text):
            try:
                call = json.loads(found)
            except json.JSONDecodeError:
                continue  # not a call the server can execute: it stays in the text
            for one in call if isinstance(call, list) else [call]:
                if isinstance(one, dict) and one.get("name"):
                    arguments = one.get("arguments") if isinstance(one.get("arguments"), dict) else {}
                    calls.append(ToolCall(str(one["name"]), "", arguments))
        if calls:
            text = _TOOL_CALL.sub("", text)
        return text.strip(), calls
