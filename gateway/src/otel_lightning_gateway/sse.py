"""Server-sent events: split an upstream byte stream into events, and write events back out."""

from __future__ import annotations

from dataclasses import dataclass

DONE = b"[DONE]"


@dataclass
class Event:
    raw: bytes  # the event as the upstream framed it, without the blank line that ends it
    name: str | None  # `event:` field (the Responses API names its events), None if absent
    data: bytes  # the `data:` lines joined


class EventSplitter:
    """Feed it the bytes as they come; it returns each event once its blank line has arrived."""

    def __init__(self) -> None:
        self._pending = b""

    def feed(self, chunk: bytes) -> list[Event]:
        buffer = self._pending + chunk
        if b"\r" in buffer:
            # A CR at the very end may be the first half of a CRLF still on its way.
            held = b"\r" if buffer.endswith(b"\r") else b""
            buffer = buffer[: len(buffer) - len(held)].replace(b"\r\n", b"\n") + held
        *complete, self._pending = buffer.split(b"\n\n")
        return [parse_event(raw) for raw in complete if raw.strip()]

    def rest(self) -> Event | None:
        """An event the stream ended in the middle of (no closing blank line), if any."""
        raw, self._pending = self._pending, b""
        return parse_event(raw) if raw.strip() else None


def parse_event(raw: bytes) -> Event:
    name = None
    data: list[bytes] = []
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode()
    return Event(raw, name, b"\n".join(data))


def encode(data: bytes, name: str | None = None) -> bytes:
    return (b"event: " + name.encode() + b"\ndata: " if name else b"data: ") + data + b"\n\n"
