"""A streamed chat completion re-told as the Responses API's typed events, as the openai client and the
Agents SDK read them: created, in_progress, then per output item added / deltas / done, then completed.

Text comes first as one message item; each tool call becomes a function_call item (a call that starts
closes the text before it), so output indexes grow in the order the items appear.
"""

from __future__ import annotations

import time
from typing import Any

from otel_lightning_gateway import responses_translation as rt


class ResponsesEventWriter:
    def __init__(self, body: dict[str, Any], asked_token_ids: bool) -> None:
        self.body = body
        self.asked_token_ids = asked_token_ids
        self.response = rt.base_response(body, rt.new_id("resp"), body.get("model") or "", time.time())
        self._sequence = 0
        self._text: list[str] = []
        self._message_id: str | None = None  # the open message item
        self._calls: dict[int, dict[str, Any]] = {}  # chat tool-call index -> open function_call item
        self._open_call: int | None = None

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        snapshot = dict(self.response)
        return [
            self._event("response.created", response=snapshot),
            self._event("response.in_progress", response=snapshot),
        ]

    def add(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        """The events one chat chunk gives (its first choice: the Responses API has one output)."""
        if chunk.get("model"):
            self.response["model"] = chunk["model"]
        events: list[dict[str, Any]] = []
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                events.extend(self._text_delta(delta["content"]))
            for call in delta.get("tool_calls") or ():
                events.extend(self._call_delta(call))
        return events

    def _output_index(self) -> int:
        return len(self.response["output"])

    def _text_delta(self, text: str) -> list[dict[str, Any]]:
        events = self._close_call()
        if self._message_id is None:
            self._message_id = rt.new_id("msg")
            item = rt.message_item(self._message_id, "", status="in_progress")
            item["content"] = []
            index = self._output_index()
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            events.append(self._event("response.output_item.added", output_index=index, item=item))
            events.append(
                self._event(
                    "response.content_part.added",
                    item_id=self._message_id,
                    output_index=index,
                    content_index=0,
                    part=part,
                )
            )
        self._text.append(text)
        events.append(
            self._event(
                "response.output_text.delta",
                item_id=self._message_id,
                output_index=self._output_index(),
                content_index=0,
                delta=text,
                logprobs=[],
            )
        )
        return events

    def _close_text(self) -> list[dict[str, Any]]:
        if self._message_id is None:
            return []
        text, index, item_id = "".join(self._text), self._output_index(), self._message_id
        item = rt.message_item(item_id, text)
        part = item["content"][0]
        events = [
            self._event(
                "response.output_text.done",
                item_id=item_id,
                output_index=index,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            self._event("response.content_part.done", item_id=item_id, output_index=index, content_index=0, part=part),
            self._event("response.output_item.done", output_index=index, item=item),
        ]
        self.response["output"].append(item)
        self._message_id, self._text = None, []
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        index = call.get("index", 0)
        function = call.get("function") or {}
        events: list[dict[str, Any]] = []
        item = self._calls.get(index)
        if item is None:
            events.extend(self._close_text())
            events.extend(self._close_call())
            item = rt.function_call_item(rt.new_id("fc"), {"id": call.get("id"), "function": {}}, status="in_progress")
            item["name"] = function.get("name") or ""
            self._calls[index] = item
            self._open_call = index
            events.append(self._event("response.output_item.added", output_index=self._output_index(), item=dict(item)))
        elif function.get("name"):
            item["name"] += function["name"]
        if function.get("arguments"):
            item["arguments"] += function["arguments"]
            events.append(
                self._event(
                    "response.function_call_arguments.delta",
                    item_id=item["id"],
                    output_index=self._output_index(),
                    delta=function["arguments"],
                )
            )
        return events

    def _close_call(self) -> list[dict[str, Any]]:
        if self._open_call is None:
            return []
        item = self._calls[self._open_call]
        item["status"] = "completed"
        index = self._output_index()
        events = [
            self._event(
                "response.function_call_arguments.done",
                item_id=item["id"],
                output_index=index,
                name=item["name"],
                arguments=item["arguments"],
            ),
            self._event("response.output_item.done", output_index=index, item=dict(item)),
        ]
        self.response["output"].append(dict(item))
        self._open_call = None
        return events

    def finish(self, chat: dict[str, Any]) -> list[dict[str, Any]]:
        """Close what is open and say completed (`chat`: the accumulated chat completion, for usage and ids)."""
        events = self._close_text() + self._close_call()
        choice = (chat.get("choices") or [{}])[0]
        rt.finish_status(self.response, choice.get("finish_reason"))
        self.response["usage"] = rt.usage(chat.get("usage"))
        rt.with_token_ids(self.response, chat, self.asked_token_ids)
        kind = "response.completed" if self.response["status"] == "completed" else "response.incomplete"
        events.append(self._event(kind, response=self.response))
        return events

    def fail(self, message: str) -> list[dict[str, Any]]:
        """The upstream's stream broke off: the Responses API's `response.failed`."""
        self.response["status"] = "failed"
        self.response["error"] = {"code": "server_error", "message": message}
        return [self._event("response.failed", response=self.response)]
