"""MergedTransitionStream: one trainer subscribed to several collectors, as if to one.

Rollouts are routed by id (or trace id) to collectors, so each rollout is whole on one of them
and its transitions come before its completion on that collector's stream. This class reads
every collector's stream on a thread of its own and hands out the events in arrival order,
renumbered with a sequence of its own; `ack(sequence)` acks, on each collector, the last event of
it at or before that sequence (acks stay cumulative per collector).

    stream = MergedTransitionStream(["10.0.0.1:4317", "10.0.0.2:4317"], consumer="trainer")
    groups = RolloutGroups(stream)
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning.v1 import transitions_pb2 as pb

_END = object()


class MergedTransitionStream:
    def __init__(self, targets: Sequence[str], consumer: str = "", **client_options: Any) -> None:
        if not targets:
            raise ValueError("at least one collector address is needed")
        self.clients = [TransitionStreamClient(target, consumer, **client_options) for target in targets]
        self._events: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        # (merged sequence, collector index, that collector's sequence), oldest first, until acked.
        self._unacked: collections.deque[tuple[int, int, int]] = collections.deque()
        self._sequence = 0
        self._readers = [
            threading.Thread(target=self._read, args=(index,), name=f"merged-stream-{index}", daemon=True)
            for index in range(len(self.clients))
        ]
        self._started = False

    def _read(self, index: int) -> None:
        try:
            for event in self.clients[index]:
                self._events.put((index, event))
        except BaseException as error:  # surfaced to the iterating caller
            self._events.put(error)
        finally:
            self._events.put(_END)

    def __iter__(self) -> Iterator[pb.StreamEvent]:
        if not self._started:
            self._started = True
            for reader in self._readers:
                reader.start()
        running = len(self._readers)
        while running:
            item = self._events.get()
            if item is _END:
                running -= 1
                continue
            if isinstance(item, BaseException):
                raise item
            index, event = item
            with self._lock:
                self._sequence += 1
                self._unacked.append((self._sequence, index, event.sequence))
                event.sequence = self._sequence
            yield event

    def ack(self, sequence: int) -> None:
        """Mark everything handed out up to `sequence` (this stream's numbering) as processed."""
        last_per_collector: dict[int, int] = {}
        with self._lock:
            while self._unacked and self._unacked[0][0] <= sequence:
                _, index, collector_sequence = self._unacked.popleft()
                last_per_collector[index] = collector_sequence
        for index, collector_sequence in last_per_collector.items():
            self.clients[index].ack(collector_sequence)

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def __enter__(self) -> MergedTransitionStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
