"""The TransitionStream service: events in commit order, cumulative acks, bounded in-flight window."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import grpc
from google.protobuf.message import DecodeError

from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning_collector.notifier import Notifier
from otel_lightning_collector.store import EVENT_REWARD_UPDATE, EVENT_TRANSITION, Store, StoredEvent
from otel_lightning_collector.store_retention import deleted_through

logger = logging.getLogger(__name__)

SERVICE = "otel_lightning.v1.TransitionStream"
DEFAULT_MAX_IN_FLIGHT = 256
# Streams served at once. Each holds a gRPC thread for as long as it lasts; the server's pool has
# this many threads besides those for exports (server.py), so followers never starve exports.
DEFAULT_MAX_STREAMS = 16
# Sequences are SQLite integers (signed 64-bit); names are stored per consumer.
_MAX_SEQUENCE = (1 << 63) - 1
_MAX_CONSUMER_NAME = 256
_PAGE = 256
_POLL_S = 0.5
_PERSIST_S = 0.05


def to_stream_event(stored: StoredEvent) -> pb.StreamEvent:
    event = pb.StreamEvent(sequence=stored.sequence)
    target = event.transition if stored.kind == EVENT_TRANSITION else event.rollout
    if stored.kind == EVENT_REWARD_UPDATE:
        target = event.reward_update
    target.ParseFromString(stored.body)
    return event


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_stream_event(stored: StoredEvent) -> bytes:
    """The wire bytes of `to_stream_event(stored)`, without parsing the stored payload again.

    StreamEvent is `sequence` (field 1, varint) then the payload (field 2 transition or 3 rollout,
    length-delimited): the stored body is already that payload's serialization.
    """
    field = 2 if stored.kind == EVENT_TRANSITION else 5 if stored.kind == EVENT_REWARD_UPDATE else 3
    return b"\x08" + _varint(stored.sequence) + bytes(((field << 3) | 2,)) + _varint(len(stored.body)) + stored.body


class _Acks:
    """Acks read from the client's half of the stream, on a thread of their own.

    A durable consumer's ack is written to the store at most every _PERSIST_S and when the stream
    ends: one commit per ack made the store the bottleneck of a fast consumer. A collector crash
    can thus redeliver up to _PERSIST_S of acked events to a consumer that reconnects from scratch.
    """

    def __init__(self, store: Store, consumer: str, start: int) -> None:
        self.store = store
        self.consumer = consumer
        self.acked = start
        # The last sequence sent (set before each event is handed to gRPC): an ack beyond it is
        # refused, else a consumer could skip events it never received and be told it caught up.
        self.sent = start
        self._persisted = start
        self._persisted_at = time.monotonic()
        self.error: str | None = None
        self.finished = threading.Event()
        self.changed = threading.Condition()

    def read(self, requests: Iterator[bytes]) -> None:
        try:
            for raw in requests:
                request = pb.SubscribeRequest.FromString(raw)
                if request.WhichOneof("request") != "ack":
                    self.error = "after the first Subscribe, only Acks may be sent"
                    break
                if request.ack.sequence > self.sent:
                    self.error = f"ack.sequence {request.ack.sequence} is beyond the last sequence sent ({self.sent})"
                    break
                self._ack(request.ack.sequence)
                if time.monotonic() - self._persisted_at >= _PERSIST_S:
                    self.persist()
        except DecodeError as error:
            self.error = f"malformed SubscribeRequest: {error}"
        except grpc.RpcError:
            pass  # the client went away; the stream ends below
        finally:
            self.persist()
            self.finished.set()
            with self.changed:
                self.changed.notify_all()

    def _ack(self, sequence: int) -> None:
        with self.changed:
            if sequence <= self.acked:
                return
            self.acked = sequence
            self.changed.notify_all()

    def persist(self) -> None:
        acked = self.acked
        if self.consumer and acked > self._persisted:
            self.store.ack(self.consumer, acked)
            self._persisted = acked
        self._persisted_at = time.monotonic()


class TransitionStreamService:
    def __init__(self, store: Store, notifier: Notifier, *, max_streams: int = DEFAULT_MAX_STREAMS) -> None:
        self.store = store
        self.notifier = notifier
        self.max_streams = max_streams
        self._streams = threading.BoundedSemaphore(max_streams)

    def subscribe(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        if not self._streams.acquire(blocking=False):
            context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the collector serves at most {self.max_streams} transition streams at once; close one or retry later",
            )
        try:
            yield from self._subscribe(requests, context)
        finally:
            self._streams.release()

    def _subscribe(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        first = next(requests, None)
        try:
            request = pb.SubscribeRequest.FromString(first) if first is not None else None
        except DecodeError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"malformed SubscribeRequest: {error}")
        if request is None or request.WhichOneof("request") != "subscribe":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first SubscribeRequest must be a Subscribe")
        subscribe = request.subscribe
        if subscribe.start_after > _MAX_SEQUENCE:
            message = f"start_after must be below 2^63, not {subscribe.start_after}"
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        if len(subscribe.consumer.encode()) > _MAX_CONSUMER_NAME:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"consumer names are at most {_MAX_CONSUMER_NAME} bytes")
        from_latest = subscribe.from_latest and subscribe.follow and not subscribe.consumer
        if subscribe.consumer:
            # start_after lets a new consumer begin past what retention deleted.
            start = max(self.store.acked_sequence(subscribe.consumer), subscribe.start_after)
        else:
            start = self.store.last_sequence() if from_latest else subscribe.start_after
        window = subscribe.max_in_flight or DEFAULT_MAX_IN_FLIGHT
        # Without follow, the reader gets what was committed when it subscribed, then CaughtUp.
        end = None if subscribe.follow else self.store.last_sequence()
        self._check_retained(start, context)
        acks = _Acks(self.store, subscribe.consumer, start)
        # A reconnecting client first re-sends its last ack, which can be past what the store had
        # persisted: an ack up to its start_after is fair (never past the last event stored).
        acks.sent = max(start, min(subscribe.start_after, self.store.last_sequence()))
        threading.Thread(target=acks.read, args=(requests,), name="stream-acks", daemon=True).start()

        if from_latest:
            yield pb.StreamEvent(sequence=start, caught_up=pb.CaughtUp(last_sequence=start)).SerializeToString()
        sent = start
        # Read position; `sent` is the last event delivered. RewardUpdates go only to subscribers
        # that ask for them: consumers that know transitions and completions see nothing new.
        cursor = start
        while context.is_active():
            if acks.error:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, acks.error)
            room = window - (sent - acks.acked)
            if room <= 0:
                with acks.changed:
                    acks.changed.wait_for(
                        lambda sent=sent: sent - acks.acked < window or acks.finished.is_set(), _POLL_S
                    )
                if acks.finished.is_set() and sent - acks.acked >= window:
                    return
                continue
            generation = self.notifier.generation
            events = self.store.events_after(cursor, min(room, _PAGE), end)
            if events and events[0].sequence != cursor + 1:
                self._check_retained(cursor, context)  # a gap: deleted under a slow reader?
            for stored in events:
                cursor = stored.sequence
                if stored.kind == EVENT_REWARD_UPDATE and not subscribe.reward_updates:
                    continue
                sent = acks.sent = stored.sequence
                yield encode_stream_event(stored)
            if events:
                continue
            if end is not None:
                yield pb.StreamEvent(sequence=sent, caught_up=pb.CaughtUp(last_sequence=end)).SerializeToString()
                # Keep the call open until the client has sent its last acks and closed its side.
                acks.finished.wait(timeout=30)
                return
            acks.persist()
            self.notifier.wait(generation, _POLL_S)

    def _check_retained(self, after: int, context: grpc.ServicerContext) -> None:
        """A reader must not silently miss events retention deleted: OUT_OF_RANGE naming the first kept."""
        deleted = deleted_through(self.store)
        if after < deleted:
            context.abort(
                grpc.StatusCode.OUT_OF_RANGE,
                f"events {after + 1}..{deleted} were deleted by the collector's retention (--retain-hours,"
                f" --retain-mb) before this reader had them; the first event kept is {deleted + 1}:"
                f" subscribe with start_after={deleted} to go on from there",
            )

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(
            SERVICE,
            {"Subscribe": grpc.stream_stream_rpc_method_handler(self.subscribe)},
        )
