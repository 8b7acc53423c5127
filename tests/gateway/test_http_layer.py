"""The gateway's own HTTP/1.1 server and model-server client, on real sockets, against peers that do
what real ones do: pipeline, speak HTTP/1.0, send garbage, hang up, close idle keep-alive connections,
end bodies by closing, stall."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest
from yarl import URL

from otel_lightning_gateway.http_server import HttpServer, Reply, Request
from otel_lightning_gateway.model_server_client import (
    ModelServerDisconnectedError,
    ModelServerPool,
    ModelServerTimeoutError,
)
from otel_lightning_gateway.routes import RolloutRoute, RouteTable
from otel_lightning_gateway.upstream import UPSTREAM_ERRORS


def _listening() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    return sock


async def _echo(request: Request, reply: Reply) -> None:
    if request.path == "/stream":
        await reply.start(200, [("Content-Type", "text/plain")])
        for piece in (b"one ", b"two ", b"three"):
            await reply.write(piece)
        return
    reply.send(200, f"{request.method} {request.raw_path} {request.body.decode()}".encode())


async def _exchange(handler, raw: bytes, wait_s: float = 0.5) -> bytes:
    """Serve `handler`, send `raw` on one connection, return all it answers until it closes or goes quiet."""
    sock = _listening()
    server = HttpServer(handler)
    await server.start(sock)
    reader, writer = await asyncio.open_connection(*sock.getsockname())
    writer.write(raw)
    received = b""
    try:
        while data := await asyncio.wait_for(reader.read(65536), wait_s):
            received += data
    except asyncio.TimeoutError:
        pass
    writer.close()
    await server.stop(grace_s=1)
    return received


def test_pipelined_requests_are_answered_in_order():
    raw = (
        b"POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\na"
        b"GET /second?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
        b"POST /third HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    received = asyncio.run(_exchange(_echo, raw))
    bodies = [part.split(b"\r\n\r\n", 1)[1] for part in received.split(b"HTTP/1.1 200 OK")[1:]]
    assert bodies == [b"POST /first a", b"GET /second?q=1 ", b"POST /third abc"]


def test_a_malformed_request_gets_400_and_the_connection_closes():
    received = asyncio.run(_exchange(_echo, b"NOT HTTP AT ALL\r\n\r\n"))
    assert received.startswith(b"HTTP/1.1 400 Bad Request") and b"Connection: close" in received


def test_a_request_head_over_the_limit_is_refused():
    huge = b"X-Filler: " + b"x" * 300_000 + b"\r\n"
    received = asyncio.run(_exchange(_echo, b"GET / HTTP/1.1\r\nHost: x\r\n" + huge + b"\r\n"))
    assert received.startswith(b"HTTP/1.1 431 Request Header Fields Too Large") and b"over 262144 bytes" in received


def test_http_1_0_gets_a_closed_connection_and_a_stream_that_ends_with_it():
    received = asyncio.run(_exchange(_echo, b"GET /stream HTTP/1.0\r\n\r\n"))
    head, body = received.split(b"\r\n\r\n", 1)
    assert b"Connection: close" in head and b"Transfer-Encoding" not in head
    assert body == b"one two three"


def test_a_streamed_answer_is_chunked_on_http_1_1():
    received = asyncio.run(_exchange(_echo, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"))
    head, body = received.split(b"\r\n\r\n", 1)
    assert b"Transfer-Encoding: chunked" in head
    assert body == b"4\r\none \r\n4\r\ntwo \r\n5\r\nthree\r\n0\r\n\r\n"


def test_a_head_request_gets_the_head_of_a_streamed_answer_and_no_body():
    received = asyncio.run(_exchange(_echo, b"HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n"))
    head, body = received.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and body == b""


def test_a_request_that_never_arrives_whole_is_closed_at_the_keepalive_timeout():
    async def run() -> bytes:
        sock = _listening()
        server = HttpServer(_echo, keepalive_timeout_s=0.2)
        await server.start(sock)
        reader, writer = await asyncio.open_connection(*sock.getsockname())
        writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")  # 7 bytes short
        closed = await asyncio.wait_for(reader.read(), 5)  # b"" once the server closes
        writer.close()
        await server.stop(grace_s=1)
        return closed

    assert asyncio.run(run()) == b""


def test_a_caller_that_hangs_up_cancels_its_handler():
    cancelled = asyncio.Event()

    async def slow(request: Request, reply: Reply) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def run() -> None:
        sock = _listening()
        server = HttpServer(slow)
        await server.start(sock)
        _, writer = await asyncio.open_connection(*sock.getsockname())
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(0.1)
        writer.close()
        await asyncio.wait_for(cancelled.wait(), 5)
        await server.stop(grace_s=1)

    asyncio.run(run())


# --- the model-server client ---------------------------------------------------------------------


async def _peer(answer, connections: list[int] | None = None) -> tuple[asyncio.AbstractServer, URL]:
    """A model server written byte by byte: `answer(request_head)` -> (bytes to send, close after)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if connections is not None:
            connections.append(1)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                data, close = answer(head)
                writer.write(data)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    host, port = server.sockets[0].getsockname()[:2]
    return server, URL(f"http://{host}:{port}/v1/chat/completions")


def _post(pool: ModelServerPool, url: URL, body: bytes = b"{}"):
    return pool.post(url, [("Content-Type", "application/json")], body)


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: 11\r\n\r\nhello world",
        b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"Connection: close\r\n\r\nhello world",  # the body ends when the server closes
    ],
    ids=["length", "chunked", "until-close"],
)
def test_every_body_framing_reads_whole(framing):
    async def run() -> bytes:
        server, url = await _peer(lambda head: (b"HTTP/1.1 200 OK\r\n" + framing, True))
        pool = ModelServerPool(connect_timeout_s=3, read_timeout_s=5)
        answer = await _post(pool, url)
        body = await answer.read()
        answer.release()
        server.close()
        return body

    assert asyncio.run(run()) == b"hello world"


def test_a_kept_connection_the_server_closed_is_replaced_without_losing_the_call():
    """The server closes every connection after one answer without saying so (as a keep-alive timeout
    does); the next call finds its kept connection dead before any answer and goes again on a new one."""
    answered = []

    def answer(head: bytes) -> tuple[bytes, bool]:
        answered.append(head)
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", True

    async def run() -> list[bytes]:
        connections: list[int] = []
        server, url = await _peer(answer, connections)
        pool = ModelServerPool(connect_timeout_s=3, read_timeout_s=5)
        bodies = []
        for _ in range(3):
            response = await _post(pool, url)
            bodies.append(await response.read())
            response.release()
            await asyncio.sleep(0.05)  # the server's close reaches the kept connection, or races it
        server.close()
        assert len(connections) == 3
        return bodies

    assert asyncio.run(run()) == [b"ok"] * 3
    assert len(answered) == 3  # each call reached the server exactly once


def test_a_kept_connection_that_hears_from_the_server_while_idle_is_not_reused():
    """Some servers say "408" on an idle connection before they hang up: that connection is done."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                await reader.readexactly(int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0]))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await asyncio.sleep(0.05)
                writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def run() -> list[int]:
        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        url = URL(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1/chat/completions")
        pool = ModelServerPool(connect_timeout_s=3, read_timeout_s=5)
        statuses = []
        for _ in range(2):
            response = await _post(pool, url)
            statuses.append(response.status)
            assert await response.read() == b"ok"
            response.release()
            await asyncio.sleep(0.2)  # the 408 arrives while the connection is idle
        server.close()
        return statuses

    assert asyncio.run(run()) == [200, 200]
    assert len(connections) == 2


def test_a_connection_is_kept_and_reused_between_calls():
    async def run() -> int:
        connections: list[int] = []
        server, url = await _peer(lambda head: (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", False), connections)
        pool = ModelServerPool(connect_timeout_s=3, read_timeout_s=5)
        for _ in range(5):
            response = await _post(pool, url)
            assert await response.read() == b"ok"
            response.release()
        server.close()
        return len(connections)

    assert asyncio.run(run()) == 1


def test_a_server_that_hangs_up_mid_answer_is_an_error_not_a_short_body():
    async def run() -> None:
        server, url = await _peer(lambda head: (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this", True))
        pool = ModelServerPool(connect_timeout_s=3, read_timeout_s=5)
        response = await _post(pool, url)
        with pytest.raises(ModelServerDisconnectedError):
            await response.read()
        response.close()
        server.close()

    asyncio.run(run())


def test_a_silent_server_times_out_and_a_closed_port_is_an_upstream_error():
    async def run() -> None:
        server, url = await _peer(lambda head: (b"", False))  # reads the call, never answers
        pool = ModelServerPool(connect_timeout_s=3, read_timeout_s=0.2)
        began = time.monotonic()
        with pytest.raises(ModelServerTimeoutError):
            await _post(pool, url)
        assert time.monotonic() - began < 2
        server.close()
        await server.wait_closed()
        with pytest.raises(UPSTREAM_ERRORS):
            await _post(pool, url)

    asyncio.run(run())


def test_unregistering_a_rollout_waits_for_the_spans_of_calls_it_was_answered():
    routes = RouteTable()
    routes.register(RolloutRoute(rollout_id="r1"))
    routes.answering("r1")
    recorded_at: list[float] = []

    def record_later() -> None:
        time.sleep(0.2)
        recorded_at.append(time.monotonic())
        routes.recorded("r1")

    threading.Thread(target=record_later).start()
    route = routes.unregister("r1")
    assert route is not None and route.rollout_id == "r1"
    assert recorded_at and time.monotonic() >= recorded_at[0]  # it returned only after the span was recorded
    routes.answering(None)  # calls that belong to no registered rollout are not tracked
    assert routes.unregister("r2", wait_s=0.01) is None
