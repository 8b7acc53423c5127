"""Streams made from answers that came in one piece (a model server that cannot stream, or did not):
the caller who asked for a stream still gets one (an SSE body), in the shape its API promises."""

from __future__ import annotations

from typing import Any

import orjson

from otel_lightning_gateway import sse
from otel_lightning_gateway.responses_stream import ResponsesEventWriter
from otel_lightning_gateway.token_options import Asked


def chunks(answer: dict[str, Any], asked: Asked | None, chat: bool) -> bytes:
    """The stream a caller asked for, made of an answer that came in one piece: one chunk with each
    choice's whole message (chat) or text (completions), then [DONE]; token ids, logprobs and usage
    only where the caller asked for them."""
    head = {key: answer[key] for key in ("id", "created", "model", "policy_version") if key in answer}
    head["object"] = "chat.completion.chunk" if chat else "text_completion"
    choices = []
    for choice in answer.get("choices") or []:
        out = {"index": choice.get("index", 0), "finish_reason": choice.get("finish_reason")}
        if chat:
            message = dict(choice.get("message") or {})
            calls = message.pop("tool_calls", None)
            if calls:
                message["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
            out["delta"] = message
        else:
            out["text"] = choice.get("text") or ""
        out["logprobs"] = choice.get("logprobs") if asked is None or asked.logprobs else None
        if asked is None or asked.token_ids:
            out["token_ids"] = choice.get("token_ids")
        choices.append(out)
    chunk: dict[str, Any] = {**head, "choices": choices}
    if asked is None or asked.token_ids:
        chunk["prompt_token_ids"] = answer.get("prompt_token_ids")
    events = [chunk]
    if (asked is None or asked.usage) and answer.get("usage"):
        events.append({**head, "choices": [], "usage": answer["usage"]})
    return b"".join(sse.encode(orjson.dumps(event)) for event in events) + sse.encode(sse.DONE)


def responses_events(responses_body: dict[str, Any], chat: dict[str, Any], asked: Asked | None) -> bytes:
    """The Responses API's events for a chat completion that came in one piece."""
    writer = ResponsesEventWriter(responses_body, asked_token_ids=asked is not None and asked.token_ids)
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    delta = {"content": message.get("content")}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
    events = writer.start() + writer.add({"choices": [{"index": 0, "delta": delta}]}) + writer.finish(chat)
    return b"".join(sse.encode(orjson.dumps(event), event["type"]) for event in events)
