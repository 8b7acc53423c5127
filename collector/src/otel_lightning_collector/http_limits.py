"""Reading an HTTP request body within bounds: before any of it is held, decoded or inflated.

Every way a client can make the server read more than it meant to is closed here:
- `Content-Length` must be a non-negative decimal; a body over the wire limit is never read in.
- `Transfer-Encoding: chunked` bodies are decoded chunk by chunk and counted as they come.
- gzip is inflated in steps, each asked for at most what is left of the limit, so a small bomb
  stops at the limit instead of growing to its full size first.
- every read has a timeout, and a whole request a deadline (a slow client cannot hold a thread).
"""

from __future__ import annotations

import io
import socket
import time
import zlib
from collections.abc import Iterator
from email.message import Message

_PIECE = 64 * 1024
_MAX_CHUNK_LINE = 1024  # "size;extensions\r\n" of a chunk
_MAX_TRAILER_LINES = 64


class BadRequestError(ValueError):
    """The request cannot be read; the exporter must not send it again."""


class TooLargeError(ValueError):
    """The body (as sent or once inflated) is over the limit."""


class DeadlineSocketReader(io.RawIOBase):
    """A socket's receiving side where each read waits at most `read_timeout_s` and every read of
    one request ends by its deadline (`start_request` sets it); past either, `TimeoutError`.

    A plain socket timeout bounds one `recv`: a client sending a byte every few seconds would
    still hold its thread forever. The deadline bounds the whole request."""

    def __init__(self, sock: socket.socket, read_timeout_s: float, request_timeout_s: float) -> None:
        super().__init__()
        self.sock = sock
        self.read_timeout_s = read_timeout_s
        self.request_timeout_s = request_timeout_s
        self.deadline = time.monotonic() + request_timeout_s

    def start_request(self) -> None:
        self.deadline = time.monotonic() + self.request_timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the request took longer than its deadline")
        self.sock.settimeout(min(self.read_timeout_s, remaining))
        return self.sock.recv_into(buffer)


def content_length(headers: Message) -> int | None:
    """The declared body length; None for a chunked body. A length that is not a non-negative
    decimal is refused (`int()` would take "-1", " 7", "+7" or "1_0")."""
    encoding = (headers.get("Transfer-Encoding") or "").strip().lower()
    if encoding:
        if encoding != "chunked":
            raise BadRequestError(f"unsupported Transfer-Encoding {encoding!r}; use chunked or a Content-Length")
        return None
    values = headers.get_all("Content-Length") or []
    if len(set(values)) > 1:
        raise BadRequestError("conflicting Content-Length headers")
    value = values[0].strip() if values else "0"
    if not value.isdigit() or not value.isascii() or len(value) > 18:
        raise BadRequestError(f"Content-Length {value[:40]!r} is not a non-negative number of bytes")
    return int(value)


def _chunked_pieces(rfile: io.BufferedIOBase, limit: int) -> Iterator[bytes]:
    total = 0
    while True:
        line = rfile.readline(_MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\n"):
            raise BadRequestError("malformed chunked body: chunk size line missing or too long")
        size_text = line.split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise BadRequestError(f"malformed chunked body: chunk size {size_text[:20]!r}") from None
        if size < 0 or size_text.startswith((b"-", b"+")):
            raise BadRequestError("malformed chunked body: negative chunk size")
        if size == 0:
            break
        total += size
        if total > limit:
            raise TooLargeError(f"chunked request body is over the {limit}-byte limit")
        while size:
            piece = rfile.read(min(size, _PIECE))
            if not piece:
                raise BadRequestError("chunked body ended early")
            size -= len(piece)
            yield piece
        if rfile.readline(3).strip():
            raise BadRequestError("malformed chunked body: no CRLF after a chunk")
    for _ in range(_MAX_TRAILER_LINES):  # trailers, then the empty line
        line = rfile.readline(_MAX_CHUNK_LINE + 1)
        if line in (b"\r\n", b"\n", b""):
            return
    raise BadRequestError("malformed chunked body: too many trailer lines")


def _sized_pieces(rfile: io.BufferedIOBase, length: int) -> Iterator[bytes]:
    while length:
        piece = rfile.read(min(length, _PIECE))
        if not piece:
            raise BadRequestError(f"request body ended {length} bytes early")
        length -= len(piece)
        yield piece


def read_body(rfile: io.BufferedIOBase, headers: Message, limit: int) -> bytes:
    """The request body, decoded from its transfer and content encodings, at most `limit` bytes
    at every stage; raises BadRequestError or TooLargeError (the rest of the body is then unread)."""
    length = content_length(headers)
    if length is not None and length > limit:
        raise TooLargeError(f"request body of {length} bytes is over the {limit}-byte limit")
    pieces = _chunked_pieces(rfile, limit) if length is None else _sized_pieces(rfile, length)
    encoding = (headers.get("Content-Encoding") or "").strip().lower()
    if encoding == "gzip":
        pieces = inflate(pieces, limit)
    elif encoding not in ("", "identity"):
        raise BadRequestError(f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    return b"".join(pieces)


def inflate(pieces: Iterator[bytes], limit: int) -> Iterator[bytes]:
    """gzip (one or more members) inflated in steps; TooLargeError as soon as it passes `limit`."""
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    started = False  # the current member has had input
    produced = 0
    try:
        for piece in pieces:
            pending = piece
            while pending:
                started = True
                out = inflater.decompress(pending, limit + 1 - produced)
                produced += len(out)
                if produced > limit:
                    raise TooLargeError(f"decompressed request body is over the {limit}-byte limit")
                if out:
                    yield out
                if inflater.eof:
                    pending, inflater, started = inflater.unused_data, zlib.decompressobj(16 + zlib.MAX_WBITS), False
                else:
                    pending = inflater.unconsumed_tail
    except zlib.error as error:
        raise BadRequestError(f"gzip body cannot be decompressed: {error}") from None
    if started:
        raise BadRequestError("gzip body cannot be decompressed: it ends in the middle of a member")


def discard(rfile: io.BufferedIOBase, length: int | None, limit: int) -> bool:
    """Read and drop what is left of a body (at most `limit` bytes), so the client, still sending,
    reads our answer instead of a reset connection. True when the whole body was read."""
    if length is None or length > limit:
        return False
    try:
        for _ in _sized_pieces(rfile, length):
            pass
    except (BadRequestError, OSError):
        return False
    return True


def drain_after_reply(sock: socket.socket, limit: int, timeout_s: float) -> None:
    """After an error answer on a connection that is closing: stop sending (FIN after the answer),
    then read and drop up to `limit` bytes for at most `timeout_s`. Closing with unread data would
    send a reset, and a client still writing its body would see a broken pipe, not the answer."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    deadline = time.monotonic() + timeout_s
    left = limit
    while left > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        sock.settimeout(min(remaining, 1.0))
        try:
            data = sock.recv(min(left, _PIECE))
        except TimeoutError:
            continue
        except OSError:
            return
        if not data:
            return
        left -= len(data)
