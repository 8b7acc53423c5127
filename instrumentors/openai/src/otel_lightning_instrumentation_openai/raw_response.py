"""Raw responses (`with_raw_response`, `with_streaming_response`): recorded from the bytes the caller reads.

A raw response is the caller's to read: as `parse()` (sync or a coroutine), `iter_lines()`, `iter_bytes()`,
or a parsed `Stream`. Rather than read it first (which took the first chunk of a streamed body, or
left a coroutine unawaited), the HTTP response's byte stream is replaced by a tee that hands every
byte on unchanged and keeps a copy; when the body ends (or is closed) the copy is decoded — JSON, or
server-sent events folded like a parsed stream — and the span is finished. A body that was read
already (`with_raw_response` without streaming) is decoded at once.
"""

from __future__ import annotations

import json
import logging
import sys
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

from otel_lightning_instrumentation_openai.llm_span import LLMCall
from otel_lightning_instrumentation_openai.streaming import StreamRecorder

logger = logging.getLogger(__name__)

_ZLIB_WINDOW = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class _BodyCopy:
    """The bytes of one response body as they pass, decoded into the call's span once it ends."""

    def __init__(self, call: LLMCall, http_response: Any) -> None:
        self.call = call
        self.chunks: list[bytes] = []
        self.done = False
        self.is_event_stream = http_response.headers.get("content-type", "").startswith("text/event-stream")
        self.encoding = http_response.headers.get("content-encoding", "").strip().lower()

    def add(self, chunk: bytes) -> None:
        self.chunks.append(chunk)

    def finish(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        if error is not None:
            self.call.fail(error)
            return
        try:
            body = self._decoded(b"".join(self.chunks))
        except Exception:  # a body we cannot read must not break the agent
            logger.warning("could not decode an OpenAI response body for its span", exc_info=True)
            body = b""
        record_body(self.call, body, self.is_event_stream)

    def _decoded(self, raw: bytes) -> bytes:
        if self.encoding in ("", "identity"):
            return raw
        if self.encoding in _ZLIB_WINDOW:
            return zlib.decompressobj(_ZLIB_WINDOW[self.encoding]).decompress(raw)
        raise ValueError(f"content-encoding {self.encoding!r} is not decoded for spans")


def server_sent_events(body: str) -> Iterator[dict[str, Any]]:
    """The JSON payloads of an SSE body (`data:` lines, an event per blank-line-separated block)."""
    for block in body.replace("\r\n", "\n").split("\n\n"):
        data = "\n".join(line[5:].lstrip() for line in block.split("\n") if line.startswith("data:"))
        if data and data != "[DONE]":
            yield json.loads(data)


def record_body(call: LLMCall, body: bytes, is_event_stream: bool) -> None:
    if not body:
        call.finish({})
        return
    try:
        text = body.decode("utf-8")
        if is_event_stream:
            recorder = StreamRecorder(call)
            for event in server_sent_events(text):
                recorder.observe(event)
            recorder.finish()
            return
        response = json.loads(text)
    except Exception:
        logger.warning("could not read an OpenAI response body for its span", exc_info=True)
        response = {}
    call.finish(response if isinstance(response, dict) else {})


def _tee_sync(stream: Any, copy: _BodyCopy, base: type) -> Any:
    class TeeSyncStream(base):  # type: ignore[misc, valid-type]
        def __iter__(self) -> Iterator[bytes]:
            try:
                for chunk in stream:
                    copy.add(chunk)
                    yield chunk
            except GeneratorExit:  # the caller stopped reading: what came is what was said
                copy.finish()
                raise
            except BaseException as error:
                copy.finish(error)
                raise
            copy.finish()

        def close(self) -> None:
            try:
                stream.close()
            finally:
                copy.finish()

    return TeeSyncStream()


def _tee_async(stream: Any, copy: _BodyCopy, base: type) -> Any:
    class TeeAsyncStream(base):  # type: ignore[misc, valid-type]
        async def __aiter__(self) -> AsyncIterator[bytes]:
            try:
                async for chunk in stream:
                    copy.add(chunk)
                    yield chunk
            except GeneratorExit:
                copy.finish()
                raise
            except BaseException as error:
                copy.finish(error)
                raise
            copy.finish()

        async def aclose(self) -> None:
            try:
                await stream.aclose()
            finally:
                copy.finish()

    return TeeAsyncStream()


def record_raw_response(raw: Any, call: LLMCall) -> None:
    """Finish `call` from the body of `raw` when the caller has read it (now, if it has)."""
    http_response = raw.http_response
    copy = _BodyCopy(call, http_response)
    try:
        body = http_response.content  # read already: with_raw_response, not streamed
    except Exception:  # not read yet (httpx's ResponseNotRead): tee the byte stream
        body = None
    if body is not None:
        copy.encoding = ""  # `content` is decoded already
        copy.add(body)
        copy.finish()
        return
    # openai uses httpx or its fork httpx2; the stream must be of that library's base classes.
    library = sys.modules[type(http_response).__module__.split(".")[0]]
    stream = http_response.stream
    if isinstance(stream, library.AsyncByteStream):
        http_response.stream = _tee_async(stream, copy, library.AsyncByteStream)
    else:
        http_response.stream = _tee_sync(stream, copy, library.SyncByteStream)
