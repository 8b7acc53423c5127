"""Streamed chunks (chat completions, completions) folded into the answer a non-streamed call gives,
so one function (attributes.response_attributes) reads both."""

from __future__ import annotations

from typing import Any


class _Choice:
    def __init__(self) -> None:
        self.role = "assistant"
        self.text: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.token_ids: list[int] = []
        self.logprobs: list[Any] = []  # chat: logprobs.content items; completions: token_logprobs
        self.prompt_token_ids: list[int] | None = None
        self.finish_reason: str | None = None


class StreamAccumulator:
    """Feed it each parsed chunk; `result()` is the chat completion (or completion) it adds up to."""

    def __init__(self, chat: bool) -> None:
        self.chat = chat
        self.head: dict[str, Any] = {}
        self.prompt_token_ids: list[int] | None = None
        self.usage: dict[str, Any] | None = None
        self.choices: dict[int, _Choice] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        for key in ("id", "model", "created", "policy_version"):
            if key in chunk and key not in self.head and chunk[key] is not None:
                self.head[key] = chunk[key]
        if chunk.get("prompt_token_ids") and self.prompt_token_ids is None:
            self.prompt_token_ids = chunk["prompt_token_ids"]  # vLLM: on the first chunk only
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for given in chunk.get("choices") or ():
            choice = self.choices.get(given.get("index", 0))
            if choice is None:
                choice = self.choices[given.get("index", 0)] = _Choice()
            self._add_choice(choice, given)

    def _add_choice(self, choice: _Choice, given: dict[str, Any]) -> None:
        if given.get("token_ids"):
            choice.token_ids.extend(given["token_ids"])
        if given.get("prompt_token_ids") and choice.prompt_token_ids is None:
            choice.prompt_token_ids = given["prompt_token_ids"]
        if given.get("finish_reason"):
            choice.finish_reason = given["finish_reason"]
        logprobs = given.get("logprobs") or {}
        if self.chat:
            delta = given.get("delta") or {}
            if delta.get("role"):
                choice.role = delta["role"]
            if delta.get("content"):
                choice.text.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                self._add_tool_call(choice, call)
            choice.logprobs.extend(logprobs.get("content") or ())
        else:
            if given.get("text"):
                choice.text.append(given["text"])
            choice.logprobs.extend(logprobs.get("token_logprobs") or ())

    @staticmethod
    def _add_tool_call(choice: _Choice, call: dict[str, Any]) -> None:
        index = call.get("index", len(choice.tool_calls))
        known = choice.tool_calls.get(index)
        function = call.get("function") or {}
        if known is None:
            choice.tool_calls[index] = {
                "id": call.get("id") or "",
                "type": call.get("type") or "function",
                "function": {"name": function.get("name") or "", "arguments": function.get("arguments") or ""},
            }
            return
        if call.get("id"):
            known["id"] = call["id"]
        if function.get("name"):
            known["function"]["name"] += function["name"]
        if function.get("arguments"):
            known["function"]["arguments"] += function["arguments"]

    @property
    def finished(self) -> bool:
        """Every choice said why it stopped."""
        return bool(self.choices) and all(c.finish_reason for c in self.choices.values())

    def result(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self.choices):
            choice = self.choices[index]
            text = "".join(choice.text)
            out: dict[str, Any] = {"index": index, "finish_reason": choice.finish_reason}
            if self.chat:
                message: dict[str, Any] = {"role": choice.role, "content": text or None}
                if choice.tool_calls:
                    message["tool_calls"] = [choice.tool_calls[i] for i in sorted(choice.tool_calls)]
                out["message"] = message
                out["logprobs"] = {"content": choice.logprobs} if choice.logprobs else None
            else:
                out["text"] = text
                out["logprobs"] = {"token_logprobs": choice.logprobs} if choice.logprobs else None
                out["prompt_token_ids"] = choice.prompt_token_ids
            out["token_ids"] = choice.token_ids or None
            choices.append(out)
        return {**self.head, "prompt_token_ids": self.prompt_token_ids, "choices": choices, "usage": self.usage}
