"""Streamed model answers: relayed event by event to the caller while the call's span is filled in.

Each handler turns one upstream SSE event into the bytes the caller gets (the event unchanged, the
event without what only the gateway asked for, or the Responses API events it stands for); `end`
ends the span and gives the last bytes. The span ends before the caller has its whole answer: an
agent that exits on its last answer (and the worker that then ends the rollout) finds every span of
its calls already recorded. `relay` pumps the upstream into the caller; when the caller goes away
(the server cancels the call, or a write finds the socket closed) the span is marked cancelled and
the upstream stream is closed, so the model server stops generating for nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from otel_lightning_gateway import sse
from otel_lightning_gateway.accumulate import StreamAccumulator
from otel_lightning_gateway.http_server import CallerGoneError, Reply
from otel_lightning_gateway.model_server_client import ModelServerResponse
from otel_lightning_gateway.recording import CallSpan
from otel_lightning_gateway.responses_stream import ResponsesEventWriter
from otel_lightning_gateway.token_options import Asked, strip
from otel_lightning_gateway.upstream import UPSTREAM_ERRORS

logger = logging.getLogger(__name__)


class ChunkRelay:
    """Chat completions or completions chunks, passed on (minus the fields only the gateway asked for)."""

    def __init__(self, call: CallSpan, asked: Asked | None, chat: bool) -> None:
        self.call = call
        self.asked = asked
        self.accumulator = StreamAccumulator(chat)
        self.done = False
        self.error: str | None = None

    def begin(self) -> bytes:
        return b""

    def on_event(self, event: sse.Event) -> bytes:
        if event.data == sse.DONE:
            self.done = True
            return event.raw + b"\n\n"
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return event.raw + b"\n\n"  # not ours to judge: the caller gets it as sent
        if not isinstance(chunk, dict):
            return event.raw + b"\n\n"
        if chunk.get("error"):  # vLLM reports a failure inside the stream this way
            error = chunk["error"]
            self.error = str(error.get("message") if isinstance(error, dict) else error)
            return event.raw + b"\n\n"
        self.accumulator.add(chunk)
        if self.asked is None or self.asked.everything:
            return event.raw + b"\n\n"
        kept, changed = strip(chunk, self.asked)
        if not changed:
            return event.raw + b"\n\n"
        return b"" if kept is None else sse.encode(orjson.dumps(kept))

    def end(self) -> bytes:
        if self.error is not None:
            self.call.fail("upstream_stream_error", self.error, self.accumulator.result())
        elif not (self.done or self.accumulator.finished):
            self.call.fail(
                "stream_incomplete", "the model server's stream ended before [DONE]", self.accumulator.result()
            )
        else:
            self.call.finish(self.accumulator.result())
        return b""

    def cancel(self) -> None:
        self.call.cancel(self.accumulator.result())


class ResponsesFromChatRelay:
    """A chat completions stream told to the caller as the Responses API's events."""

    def __init__(self, call: CallSpan, body: dict[str, Any], asked: Asked | None) -> None:
        self.chunks = ChunkRelay(call, asked, chat=True)
        self.writer = ResponsesEventWriter(body, asked_token_ids=asked is not None and asked.token_ids)

    @property
    def call(self) -> CallSpan:
        return self.chunks.call

    @staticmethod
    def _encode(events: list[dict[str, Any]]) -> bytes:
        return b"".join(sse.encode(orjson.dumps(event), event["type"]) for event in events)

    def begin(self) -> bytes:
        return self._encode(self.writer.start())

    def on_event(self, event: sse.Event) -> bytes:
        if event.data == sse.DONE:
            self.chunks.done = True
            return b""
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            self.chunks.error = f"the model server sent an event that is not JSON: {event.data[:200]!r}"
            return b""
        if not isinstance(chunk, dict):
            return b""
        if chunk.get("error"):
            error = chunk["error"]
            self.chunks.error = str(error.get("message") if isinstance(error, dict) else error)
            return b""
        self.chunks.accumulator.add(chunk)
        return self._encode(self.writer.add(chunk))

    def end(self) -> bytes:
        chunks = self.chunks
        result = chunks.accumulator.result()
        if chunks.error is None and (chunks.done or chunks.accumulator.finished):
            chunks.call.finish(result)
            return self._encode(self.writer.finish(result))
        message = chunks.error or "the model server's stream ended before [DONE]"
        chunks.call.fail("upstream_stream_error" if chunks.error else "stream_incomplete", message, result)
        return self._encode(self.writer.fail(message))

    def cancel(self) -> None:
        self.chunks.cancel()


class ResponsesRelay:
    """The upstream's own Responses API events, passed on unchanged; the span reads `response.completed`."""

    def __init__(self, call: CallSpan) -> None:
        self.call = call
        self.final: dict[str, Any] | None = None
        self.failure: str | None = None

    def begin(self) -> bytes:
        return b""

    def on_event(self, event: sse.Event) -> bytes:
        if event.name in ("response.completed", "response.incomplete", "response.failed", "error") or (
            event.name is None and b'"response.' in event.data[:64]
        ):
            try:
                data = orjson.loads(event.data)
            except orjson.JSONDecodeError:
                data = {}
            kind = data.get("type") if isinstance(data, dict) else None
            if kind in ("response.completed", "response.incomplete"):
                self.final = data.get("response") or {}
            elif kind in ("response.failed", "error"):
                self.failure = str((data.get("response") or {}).get("error") or data.get("message") or kind)
        return event.raw + b"\n\n"

    def end(self) -> bytes:
        if self.failure is not None:
            self.call.fail("upstream_stream_error", self.failure)
        elif self.final is None:
            self.call.fail("stream_incomplete", "the model server's stream ended before response.completed")
        else:
            self.call.finish(self.final)
        return b""

    def cancel(self) -> None:
        self.call.cancel(self.final)


SSE_HEADERS = [("Content-Type", "text/event-stream; charset=utf-8"), ("Cache-Control", "no-cache")]


async def relay(handler: Any, upstream: ModelServerResponse, reply: Reply) -> None:
    """Stream `upstream` through `handler` to the caller; ends the span one way or another and always
    lets go of the upstream response."""
    splitter = sse.EventSplitter()
    finished = False
    try:
        await reply.start(200, SSE_HEADERS)
        first = handler.begin()
        if first:
            await reply.write(first)
        described = False
        async for data in upstream.iter_any():
            out = b"".join([handler.on_event(event) for event in splitter.feed(data)])
            if out:
                await reply.write(out)
                if not described:  # the span's start, once the caller has its first tokens (not at the end)
                    handler.call.describe()
                    described = True
        last = splitter.rest()
        tail = (handler.on_event(last) if last is not None else b"") + handler.end()
        finished = True
        with contextlib.suppress(CallerGoneError):  # the span is ended: a caller gone now changes nothing
            await reply.end(tail)
    except CallerGoneError:  # a write found the caller's connection closed
        handler.cancel()
    except asyncio.CancelledError:  # the caller went away while the gateway waited: the server cancels its call
        handler.cancel()
        raise
    except UPSTREAM_ERRORS as error:
        _fail_broken_stream(handler, error)
        # End the caller's stream too (it stops short; a client sees an incomplete answer).
        with contextlib.suppress(CallerGoneError):
            await reply.end()
    finally:
        if finished:
            upstream.release()  # read to the end: the connection goes back to the pool
        else:
            upstream.close()  # mid-stream: the model server sees the connection close and stops


def _fail_broken_stream(handler: Any, error: Exception) -> None:
    """The model server's connection broke mid-stream: the span says so (the caller's stream just ends)."""
    handler.call.fail("upstream_stream_broken", f"the model server's stream broke off: {type(error).__name__}: {error}")
