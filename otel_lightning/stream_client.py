"""TransitionStreamClient: receive transitions from a collector, ack them, resume after reconnects."""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc

from otel_lightning.channels import open_channel
from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning.v1 import transitions_pb2_grpc as pb_grpc

logger = logging.getLogger(__name__)

# A transition holds its prompt twice (state and the previous step's next_state): gRPC's default
# 4 MB receive limit would refuse a long-context step.
CHANNEL_OPTIONS = (("grpc.max_receive_message_length", 256 * 1024 * 1024),)
_RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
_CLOSE = object()


class TransitionStreamClient:
    """Iterate events of the collector's TransitionStream in commit order.

        client = TransitionStreamClient("127.0.0.1:4317", consumer="trainer")
        for event in client:
            if event.HasField("transition"):
                train_on(event.transition)
            client.ack(event.sequence)

    A named `consumer` resumes after its last ack on the collector (also across restarts). Acks
    are cumulative; `auto_ack=True` acks each event as the next one is requested. A lost
    connection is retried (`reconnect_timeout_s`), and events already delivered are skipped, so
    the caller sees each one once. Without `follow`, iteration ends once the stored events are read.
    `from_latest=True` (followers without a consumer name) skips what was committed before subscribing.
    """

    def __init__(
        self,
        target: str,
        consumer: str = "",
        *,
        follow: bool = True,
        start_after: int = 0,
        max_in_flight: int = 256,
        auto_ack: bool = False,
        reconnect_timeout_s: float = 30.0,
        from_latest: bool = False,
        channel: grpc.Channel | None = None,
        reward_updates: bool = False,
    ) -> None:
        if from_latest and (consumer or not follow):
            raise ValueError("from_latest is for followers without a consumer name")
        self.target = target
        self.consumer = consumer
        self.follow = follow
        self.max_in_flight = max_in_flight
        self.auto_ack = auto_ack
        self.reconnect_timeout_s = reconnect_timeout_s
        # Also receive RewardUpdate events (late rewards for rollouts already streamed).
        self.reward_updates = reward_updates
        self._channel = channel or open_channel(target, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.TransitionStreamStub(self._channel)
        self._delivered = start_after
        self._acked = start_after
        self._requests: queue.Queue[Any] | None = None
        self._call: Any = None
        self._lock = threading.Lock()
        self._closed = False
        # Until the server said where a from_latest reader starts; a reconnect after that resumes from there.
        self._from_latest = from_latest
        self._positioned = threading.Event()
        if not from_latest:
            self._positioned.set()

    def ack(self, sequence: int) -> None:
        """Mark everything up to `sequence` as processed."""
        with self._lock:
            if sequence <= self._acked:
                return
            self._acked = sequence
            requests = self._requests
        if requests is not None:
            requests.put(pb.SubscribeRequest(ack=pb.Ack(sequence=sequence)))

    def _request_stream(self, requests: queue.Queue[Any], first: pb.SubscribeRequest) -> Iterator[pb.SubscribeRequest]:
        yield first
        while True:
            items = [requests.get()]
            # Acks are cumulative: of those waiting, only the last one needs to go.
            while not requests.empty():
                items.append(requests.get_nowait())
            acks = [item for item in items if item is not _CLOSE]
            if acks:
                yield acks[-1]
            if _CLOSE in items:
                return

    def _open(self) -> Iterator[pb.StreamEvent]:
        requests: queue.Queue[Any] = queue.Queue()
        subscribe = pb.Subscribe(
            consumer=self.consumer,
            start_after=self._delivered,
            follow=self.follow,
            max_in_flight=self.max_in_flight,
            from_latest=self._from_latest,
            reward_updates=self.reward_updates,
        )
        with self._lock:
            self._requests = requests
            # A reconnect must not wait on acks the old call never passed on.
            pending_ack = self._acked
        if pending_ack:
            requests.put(pb.SubscribeRequest(ack=pb.Ack(sequence=pending_ack)))
        self._call = self._stub.Subscribe(self._request_stream(requests, pb.SubscribeRequest(subscribe=subscribe)))
        return self._call

    def __iter__(self) -> Iterator[pb.StreamEvent]:
        deadline: float | None = None
        while not self._closed:
            try:
                call = self._open()
                for event in call:
                    deadline = None
                    if event.HasField("caught_up") and self._from_latest:
                        self._from_latest = False
                        self._delivered = self._acked = event.caught_up.last_sequence
                        self._positioned.set()
                        continue
                    if event.HasField("caught_up"):
                        # Half-close, then let the server end the call once it has our last acks.
                        self._finish_call()
                        for _ in call:
                            pass
                        return
                    if event.sequence <= self._delivered:
                        continue  # redelivered after a reconnect: the caller has it already
                    self._delivered = event.sequence
                    yield event
                    if self.auto_ack:
                        self.ack(event.sequence)
                if not self.follow:
                    return
            except grpc.RpcError as error:
                if self._closed or error.code() not in _RETRYABLE:
                    if self._closed:
                        return
                    raise
                deadline = deadline or time.monotonic() + self.reconnect_timeout_s
                if time.monotonic() > deadline:
                    raise
                logger.warning("transition stream from %s lost (%s); reconnecting", self.target, error.code().name)
                time.sleep(0.2)

    def wait_positioned(self, timeout_s: float) -> bool:
        """For from_latest: True once the server said where this reader starts (iteration must be running)."""
        return self._positioned.wait(timeout_s)

    def _finish_call(self) -> None:
        with self._lock:
            requests = self._requests
            self._requests = None
        if requests is not None:
            requests.put(_CLOSE)

    def close(self) -> None:
        self._closed = True
        self._finish_call()
        if self._call is not None:
            self._call.cancel()
        self._channel.close()

    def __enter__(self) -> TransitionStreamClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _json_or_none(text: str) -> Any:
    return json.loads(text) if text else None


def event_to_dict(event: pb.StreamEvent) -> dict[str, Any]:
    """A JSON-ready view of a stream event (state/action/next_state decoded from their JSON)."""
    if event.HasField("transition"):
        t = event.transition
        return {
            "type": "transition",
            "sequence": event.sequence,
            "task_id": t.task_id,
            "rollout_id": t.rollout_id,
            "attempt": t.attempt,
            "step": t.step,
            "agent": t.agent,
            "state": _json_or_none(t.state_json),
            "action": _json_or_none(t.action_json),
            "reward": t.reward,
            "next_state": _json_or_none(t.next_state_json),
            "done": t.done,
            "prompt_token_ids": list(t.prompt_token_ids),
            "response_token_ids": list(t.response_token_ids),
            "response_logprobs": list(t.response_logprobs),
            "policy_version": t.policy_version,
            "model": t.model,
            "rollout_status": t.rollout_status,
            "token_ids_absent": t.token_ids_absent,
        }
    if event.HasField("reward_update"):
        u = event.reward_update
        return {
            "type": "reward_update",
            "sequence": event.sequence,
            "task_id": u.task_id,
            "rollout_id": u.rollout_id,
            "attempt": u.attempt,
            "name": u.name,
            "value": u.value,
            "trace_id": u.trace_id,
            "response_id": u.response_id,
            "span_id": u.span_id,
            "origin": u.origin,
        }
    r = event.rollout
    return {
        "type": "rollout",
        "sequence": event.sequence,
        "task_id": r.task_id,
        "rollout_id": r.rollout_id,
        "attempt": r.attempt,
        "status": r.status,
        "error_type": r.error_type,
        "error_message": r.error_message,
        "total_reward": r.total_reward,
        "has_reward": r.has_reward,
        "transition_count": r.transition_count,
        "span_count": r.span_count,
        "steps_without_token_ids": r.steps_without_token_ids,
        "token_ids_note": r.token_ids_note,
        "source": r.source or "rollout",
    }
