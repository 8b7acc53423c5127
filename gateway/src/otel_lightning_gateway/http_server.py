"""The gateway's HTTP/1.1 server: asyncio protocols, the callers' requests parsed by httptools (llhttp,
the parser uvicorn and aiohttp use).

Why not aiohttp's server or uvicorn: the gateway is one more hop on every model call, and the goal is
under 1 ms added. On the 2-core test machine a bare proxy with this server and the model-server client
took ~0.3 ms of CPU a call; with uvicorn's server ~0.45 ms, with aiohttp's ~0.55 ms
(benchmarks/gateway_overhead.py). What a proxy in front of a model server needs is here and nothing
else: keep-alive, pipelined requests answered in order, `Expect: 100-continue`, whole or streamed
(chunked) answers with flow control, the handler cancelled when its caller goes away, idle connections
closed after `keepalive_timeout_s` (a request must arrive whole within it too), malformed requests
answered 400 (a head over 256 KiB: 431) and closed.

    async def handler(request: Request, reply: Reply) -> None:
        reply.send(200, b'{"ok": true}', [("Content-Type", "application/json")])

    server = HttpServer(handler)
    await server.start(sock)     # a bound socket
    ...
    await server.stop(grace_s=5)
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import functools
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus

import httptools
from multidict import CIMultiDict

logger = logging.getLogger(__name__)

# Request heads larger than this are refused (431): a runaway client must not fill the memory. Bodies
# have no limit: a conversation with images is large.
MAX_HEAD_BYTES = 256 * 1024
# Headers the server writes itself on every answer.
_OWN_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "date", "keep-alive"})


@dataclass
class Request:
    method: str
    raw_path: str  # path and query as the caller sent them (still %-encoded)
    version: str  # "1.1" or "1.0"
    headers: CIMultiDict[str]
    body: bytes
    keep_alive: bool

    @property
    def path(self) -> str:
        return self.raw_path.partition("?")[0]


Handler = Callable[[Request, "Reply"], Awaitable[None]]


class _HeadTooLargeError(Exception):
    """Raised from the parser's callbacks: the request's head passed MAX_HEAD_BYTES."""


class CallerGoneError(Exception):
    """The caller's connection closed before its answer was written."""


@functools.lru_cache(maxsize=128)
def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


_date_cache: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    """`Date:` (RFC 9110 6.6.1), formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, b"Date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n")
    return _date_cache[1]


class Reply:
    """The answer to one request: whole (`send`) or streamed (`start`, `write`..., `end`)."""

    def __init__(self, connection: HttpConnection, request: Request) -> None:
        self._connection = connection
        self._request = request
        self.status = 0
        self.started = False
        self.ended = False
        self._chunked = False
        self._no_body = request.method == "HEAD"

    def _head(self, status: int, headers: Iterable[tuple[str, str]], reason: str | None, framing: bytes) -> bytes:
        if self.started:
            raise RuntimeError("the answer has already started")
        self.started = True
        self.status = status
        lines = [f"HTTP/1.1 {status} {reason if reason is not None else _reason(status)}\r\n".encode("latin-1")]
        for name, value in headers:
            if name.lower() in _OWN_HEADERS:
                continue
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise ValueError(f"header {name!r} has a line break in it")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(_date_header())
        lines.append(framing)
        if not self._request.keep_alive:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    def send(
        self, status: int, body: bytes = b"", headers: Iterable[tuple[str, str]] = (), reason: str | None = None
    ) -> None:
        """The whole answer at once (the transport buffers what the socket does not take yet)."""
        bodiless = status in (204, 304) or status < 200
        framing = b"" if bodiless else b"Content-Length: %d\r\n" % len(body)
        head = self._head(status, headers, reason, framing)
        self.ended = True
        self._connection.write(head if bodiless or self._no_body else head + body)

    async def start(
        self,
        status: int,
        headers: Iterable[tuple[str, str]] = (),
        reason: str | None = None,
        content_length: int | None = None,
    ) -> None:
        """An answer written in pieces: chunked, or as it is when its length is known."""
        if content_length is not None:
            framing = b"Content-Length: %d\r\n" % content_length
        elif self._request.version == "1.0":  # no chunked encoding: the body ends with the connection
            self._request.keep_alive = False
            framing = b""
        else:
            self._chunked = True
            framing = b"Transfer-Encoding: chunked\r\n"
        self._connection.write(self._head(status, headers, reason, framing))
        await self._connection.drain()

    async def write(self, data: bytes) -> None:
        if not data or self._no_body:
            return
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        self._connection.write(data)
        await self._connection.drain()

    async def end(self, data: bytes = b"") -> None:
        if self.ended:
            return
        if data and not self._no_body:
            if self._chunked:
                data = b"%x\r\n%b\r\n" % (len(data), data)
            self._connection.write(data)
        if self._chunked and not self._no_body:
            self._connection.write(b"0\r\n\r\n")
        self.ended = True
        await self._connection.drain()


class HttpConnection(asyncio.Protocol):
    """One caller's connection: requests parsed as they arrive, handled one at a time, in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.lost = False
        self.waiting: collections.deque[Request] = collections.deque()  # pipelined, behind the current one
        # One task per connection answers its requests in turn (a task per request costs more).
        self.task: asyncio.Task[None] | None = None
        self.busy = False  # answering a request
        self._arrived: asyncio.Future[None] | None = None  # set while the task waits for a request
        self._writable: asyncio.Future[None] | None = None  # set while the socket's buffer is full
        self._idle_timer: asyncio.TimerHandle | None = None
        self._begin()

    def _begin(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.head_bytes = 0
        self.request_headers: CIMultiDict[str] = CIMultiDict()
        self.body: list[bytes] = []

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)
        self.task = asyncio.get_running_loop().create_task(self._serve())
        self._idle()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(501, "protocol upgrades are not supported")
        except httptools.HttpParserError as error:
            if isinstance(error.__context__, _HeadTooLargeError):  # raised in a callback, wrapped by httptools
                self._refuse(431, str(error.__context__))
            else:
                self._refuse(400, f"malformed HTTP request: {error}")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.server.connections.discard(self)
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        if self.task is not None:
            self.task.cancel()  # the caller went away: its call stops (the model server's too)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)  # a writer waiting for room finds the connection lost

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    # --- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._begin()  # the idle timer runs on: a request must arrive whole within it (no slow trickles)

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_bytes += len(url)
        if self.head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLargeError(f"the request's head is over {MAX_HEAD_BYTES} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))
        self.head_bytes += len(name) + len(value)
        if self.head_bytes > MAX_HEAD_BYTES:
            raise _HeadTooLargeError(f"the request's head is over {MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        headers = CIMultiDict(self.headers)
        self.request_headers = headers
        version = self.parser.get_http_version()
        expect = headers.get("Expect")
        # Not in the middle of another answer (pipelined): the caller then sends its body after its own wait.
        idle = not self.busy and not self.waiting
        if expect is not None and expect.lower() == "100-continue" and version == "1.1" and idle and self.transport:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # or curl waits a second before the body

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        request = Request(
            method=self.parser.get_method().decode("latin-1"),
            raw_path=self.url.decode("latin-1"),
            version=self.parser.get_http_version(),
            headers=self.request_headers,
            body=b"".join(self.body),
            keep_alive=self.parser.should_keep_alive(),
        )
        self._begin()
        self.waiting.append(request)
        if self._arrived is not None and not self._arrived.done():
            self._arrived.set_result(None)

    # --- handling -------------------------------------------------------------------------------

    async def _serve(self) -> None:
        """Answer the connection's requests in the order they came, until it closes."""
        loop = asyncio.get_running_loop()
        try:
            while not self.lost:
                if not self.waiting:
                    self._arrived = loop.create_future()
                    await self._arrived
                    continue
                self.busy = True
                kept = await self._handle(self.waiting.popleft())
                self.busy = False
                if not kept:
                    self.close()
                    return
                if not self.waiting:
                    self._idle()
        except asyncio.CancelledError:  # the connection is gone, or the server is stopping
            pass

    async def _handle(self, request: Request) -> bool:
        """Whether the connection goes on after this answer."""
        reply = Reply(self, request)
        try:
            await self.server.handler(request, reply)
            if not reply.started:
                raise RuntimeError("the handler gave no answer")
            await reply.end()
        except (asyncio.CancelledError, CallerGoneError):
            return False  # the caller is gone (or the server is stopping)
        except Exception:
            logger.exception("error handling %s %s", request.method, request.path)
            if reply.started:
                return False  # a half-written answer: the caller sees the connection close
            Reply(self, request).send(500, b"Internal Server Error", [("Content-Type", "text/plain")])
        return request.keep_alive and not self.lost

    def _idle(self) -> None:
        timeout = self.server.keepalive_timeout_s
        if timeout is not None and not self.lost:
            self._idle_timer = asyncio.get_running_loop().call_later(timeout, self.close)

    def _refuse(self, status: int, message: str) -> None:
        """A request the parser cannot read: answered (if nothing is being answered) and the connection closed."""
        logger.warning("refused a request from %s: %s", self.peer(), message)
        if not self.busy and self.transport is not None and not self.transport.is_closing():
            body = message.encode()
            self.transport.write(
                b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
                b"Connection: close\r\n\r\n%b" % (status, _reason(status).encode(), len(body), body)
            )
        self.close()

    def peer(self) -> str:
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "?"

    # --- writing --------------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.lost or self.transport is None or self.transport.is_closing():
            raise CallerGoneError("the caller closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        if self.lost:
            raise CallerGoneError("the caller closed the connection")
        if self._writable is not None and not self._writable.done():
            await self._writable
            if self.lost:
                raise CallerGoneError("the caller closed the connection")

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class HttpServer:
    def __init__(self, handler: Handler, keepalive_timeout_s: float | None = 30.0) -> None:
        self.handler = handler
        self.keepalive_timeout_s = keepalive_timeout_s
        self.connections: set[HttpConnection] = set()
        self._server: asyncio.AbstractServer | None = None

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: HttpConnection(self), sock=sock)

    async def stop(self, grace_s: float = 5.0) -> None:
        """Stop accepting; answers in flight get up to `grace_s`, then every connection is closed."""
        if self._server is not None:
            self._server.close()
        deadline = time.monotonic() + grace_s
        while any(connection.busy for connection in self.connections):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        for connection in list(self.connections):
            if connection.task is not None:
                connection.task.cancel()
            connection.close()
        if self._server is not None:
            await self._server.wait_closed()
