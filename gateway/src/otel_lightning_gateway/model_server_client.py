"""The connection to the model server for model calls: keep-alive HTTP/1.1 over asyncio protocols, the
answers parsed by httptools (llhttp, the parser uvicorn and aiohttp use).

Why not aiohttp's client, which the gateway uses for everything else: on a model call it was most of
what the gateway cost. On the 2-core test machine a bare proxy made of aiohttp's server and client
took ~0.9 ms of CPU a call; the same server with this client ~0.4 ms (benchmarks/gateway_overhead.py).
What it does not need to do, it does not: a model call is one POST with its whole body in hand, to a
server the gateway was told about, so there are no cookies, redirects, proxies, retries of answered
requests or streamed uploads here.

    pool = ModelServerPool(connect_timeout_s=3, read_timeout_s=600)
    answer = await pool.post(URL("http://127.0.0.1:8000/v1/chat/completions"), headers, body)
    async for data in answer.iter_any(): ...     # or: await answer.read()
    answer.release()                              # read to the end: the connection is kept for the next call
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httptools
from multidict import CIMultiDict
from yarl import URL

# A kept connection unused this long is closed rather than reused: under the 5 s keep-alive of uvicorn
# (vLLM's server), so the gateway does not send a call on a connection the server is closing.
IDLE_TIMEOUT_S = 4.0
# Streamed answers buffered past this (a caller slower than the model) stop reading from the model
# server until the caller catches up.
PAUSE_AT_BYTES = 1 << 20


class ModelServerError(Exception):
    """The model server could not be reached, or its answer broke off or made no sense as HTTP."""


class ModelServerDisconnectedError(ModelServerError):
    """The model server closed the connection before its answer was complete."""


class ModelServerTimeoutError(ModelServerError):
    """No byte from the model server within the read timeout (or no connection within the connect timeout)."""


class ModelServerResponse:
    """One answer: status and headers at once, the body as it arrives (`iter_any`) or whole (`read`).
    Exactly one of `release` (after reading it to the end) or `close` lets go of the connection."""

    def __init__(self, connection: _Connection, status: int, reason: str, headers: CIMultiDict[str]) -> None:
        self._connection = connection
        self.status = status
        self.reason = reason
        self.headers = headers

    async def iter_any(self) -> AsyncIterator[bytes]:
        """The body's pieces as they arrive (chunked transfer encoding already undone)."""
        while (data := await self._connection.next_body_piece()) is not None:
            yield data

    async def read(self) -> bytes:
        connection = self._connection
        if not connection.complete:  # usually the head came first and the body is still on its way
            await connection.until_complete()
        pieces = connection.pieces
        body = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        connection.buffered = 0
        return body

    def release(self) -> None:
        self._connection.release()

    def close(self) -> None:
        self._connection.close()


class _Connection(asyncio.Protocol):
    """One kept-alive connection, answering one request at a time."""

    def __init__(self, pool: ModelServerPool, key: tuple[str, str, int]) -> None:
        self.pool = pool
        self.key = key
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.idle_since = time.monotonic()
        self._reset()

    def _reset(self) -> None:
        self.response: ModelServerResponse | None = None
        self.reason = b""
        self.headers: list[tuple[str, str]] = []
        self.pieces: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.paused = False
        self.complete = False
        self.error: Exception | None = None
        self.received_any = False
        self.keep_alive = False  # known once the head is in (llhttp forgets it when the message completes)
        self.until_close = False  # no length, not chunked: the body ends when the server closes the connection
        self.waiter: asyncio.Future[Any] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ModelServerError(f"the model server's answer is not valid HTTP/1.1: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if not self.complete and self.until_close and exc is None:
            self.complete = True  # httptools has no "end of input" call: the close ends the body here
            self._wake(None)
        if not self.complete:
            detail = f": {exc}" if exc is not None else ""
            self._fail(ModelServerDisconnectedError(f"the model server closed the connection mid-answer{detail}"))

    # --- httptools callbacks ------------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        headers = CIMultiDict(self.headers)
        status = self.parser.get_status_code()
        if 100 <= status < 200:  # an interim answer (100 Continue): the real one follows
            self.reason, self.headers = b"", []
            return
        self.keep_alive = self.parser.should_keep_alive()
        self.until_close = (
            "Content-Length" not in headers
            and "chunked" not in headers.get("Transfer-Encoding", "").lower()
            and status not in (204, 304)
        )
        self.response = ModelServerResponse(self, status, self.reason.decode("latin-1"), headers)
        self._wake(self.response)

    def on_body(self, body: bytes) -> None:
        self.pieces.append(body)
        self.buffered += len(body)
        if self.buffered > PAUSE_AT_BYTES and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake(None)

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake(None)

    # --- the pool's side ----------------------------------------------------------------------

    async def send(self, head: bytes, body: bytes) -> ModelServerResponse:
        assert self.transport is not None
        self.transport.write(head + body)
        response = await self._wait()
        assert isinstance(response, ModelServerResponse)
        return response

    async def until_complete(self) -> None:
        """Until the whole body is in (read-ahead is not paused for it: the caller wants it all)."""
        while not self.complete:
            if self.error is not None:
                raise self.error
            if self.paused and self.transport is not None:
                self.paused = False
                self.transport.resume_reading()
            await self._wait()

    async def next_body_piece(self) -> bytes | None:
        """The next piece of the body, None once it is all read."""
        while True:
            if self.pieces:
                data = self.pieces.popleft()
                self.buffered -= len(data)
                if self.paused and self.buffered < PAUSE_AT_BYTES // 2 and self.transport is not None:
                    self.paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            await self._wait()

    def release(self) -> None:
        """Back to the pool if the answer was read to its end and the server keeps the connection."""
        if self.complete and self.keep_alive and not self.lost and not self.pieces:
            self._reset()
            self.pool.keep(self)
        else:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.lost = True

    # --- waiting --------------------------------------------------------------------------------

    async def _wait(self) -> Any:
        """Until the parser has something for us: the head, or a piece of the body. The read timeout
        counts from each wait, as aiohttp's `sock_read` does (a stream that pauses is not cut off)."""
        if self.error is not None:
            raise self.error
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        timeout = self.pool.read_timeout_s
        timer = loop.call_later(timeout, self._expire, waiter) if timeout is not None else None
        try:
            return await waiter
        finally:
            if timer is not None:
                timer.cancel()
            self.waiter = None

    def _wake(self, value: Any) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(value)

    def _fail(self, error: Exception) -> None:
        self.error = error
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(error)

    def _expire(self, waiter: asyncio.Future[Any]) -> None:
        if not waiter.done():
            seconds = self.pool.read_timeout_s
            self._fail(ModelServerTimeoutError(f"the model server sent nothing for {seconds:g} s"))
            self.close()


def _encode_head(method: str, url: URL, headers: Iterable[tuple[str, str]], length: int) -> bytes:
    host = url.raw_host or ""
    if ":" in host:
        host = f"[{host}]"
    if not url.is_default_port():
        host = f"{host}:{url.port}"
    lines = [f"{method} {url.raw_path_qs} HTTP/1.1", f"Host: {host}"]
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} has a line break in it")
        lines.append(f"{name}: {value}")
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


class ModelServerPool:
    """Kept-alive connections to model servers, newest first; made and used on one event loop."""

    def __init__(self, connect_timeout_s: float, read_timeout_s: float | None) -> None:
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._ssl: ssl.SSLContext | None = None

    async def post(
        self,
        url: URL,
        headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> ModelServerResponse:
        """Send a POST; returns once the answer's status and headers are in. A kept connection that the
        server closed before answering (it timed out its keep-alive as the call went out) is replaced by
        a new one and the call sent once more: the server never saw it."""
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise ValueError(f"not an http(s) URL: {url}")
        head = _encode_head("POST", url, headers, len(body))
        key = (url.scheme, url.raw_host, url.port or (443 if url.scheme == "https" else 80))
        connection = self._take(key)
        if connection is not None:
            try:
                return await self._send(connection, head, body)
            except ModelServerDisconnectedError:
                if connection.received_any:
                    raise
        return await self._send(await self._connect(key), head, body)

    @staticmethod
    async def _send(connection: _Connection, head: bytes, body: bytes) -> ModelServerResponse:
        try:
            return await connection.send(head, body)
        except BaseException:  # failed, timed out, or the caller went away: the server must see it close
            connection.close()
            raise

    def _take(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            # Bytes on an idle connection (a server's "408" before it hangs up) make it unusable.
            if not connection.lost and not connection.received_any and now - connection.idle_since < IDLE_TIMEOUT_S:
                return connection
            connection.close()
        return None

    async def _connect(self, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        loop = asyncio.get_running_loop()
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self, key), host, port, ssl=context),
                self.connect_timeout_s,
            )
        except asyncio.TimeoutError:
            seconds = self.connect_timeout_s
            raise ModelServerTimeoutError(f"no connection to {host}:{port} within {seconds:g} s") from None
        return connection

    def keep(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        self._idle.setdefault(connection.key, []).append(connection)

    async def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
