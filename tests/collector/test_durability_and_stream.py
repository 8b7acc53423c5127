"""Stored before acknowledged; consumers resume after their last ack, with no loss and no duplicates."""

from __future__ import annotations

import threading

import grpc

from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning_collector import CollectorConfig, CollectorServer
from tests.collector.test_ingest_robustness import exporter
from tests.support import SpanFactory, export_request, read_all, transitions, wait_for_rollouts


def export_rollouts(address: str, count: int, start: int = 0) -> None:
    export = exporter(address)
    for index in range(start, start + count):
        spans = SpanFactory(rollout_id=f"r{index:03d}", task_id=f"t{index}")
        export(export_request(spans.llm(f"q{index}", f"a{index}"), spans.reward(float(index)), spans.root()))


def test_collector_restart_between_export_and_subscribe_keeps_everything(tmp_path):
    store = tmp_path / "durable.db"
    with CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=store)) as server:
        export_rollouts(server.address, 5)
        wait_for_rollouts(server.address, 5)
    with CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=store)) as server:
        steps = transitions(read_all(server.address))
    assert [t.rollout_id for t in steps] == [f"r{i:03d}" for i in range(5)]


def test_acknowledged_spans_of_unfinished_rollouts_survive_a_restart(tmp_path):
    store = tmp_path / "half.db"
    spans = SpanFactory(rollout_id="r-half")
    with CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=store)) as server:
        exporter(server.address)(export_request(spans.llm("q", "a"), spans.reward(1.0)))
    with CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=store)) as server:
        exporter(server.address)(export_request(spans.root()))
        [step] = transitions(wait_for_rollouts(server.address, 1))
    assert (step.rollout_id, step.reward) == ("r-half", 1.0)


def test_consumer_resumes_after_last_ack_across_reconnects_and_restarts(tmp_path):
    store = tmp_path / "consumer.db"
    seen: list[str] = []
    with CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=store)) as server:
        export_rollouts(server.address, 10)
        wait_for_rollouts(server.address, 10)
        # Read 4 transitions, ack only 3, then drop the connection.
        with TransitionStreamClient(server.address, consumer="trainer", max_in_flight=2) as client:
            for event in client:
                if event.HasField("transition"):
                    if len(seen) == 3:
                        break
                    seen.append(event.transition.rollout_id)
                client.ack(event.sequence)
    with CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=store)) as server:
        export_rollouts(server.address, 5, start=10)
        wait_for_rollouts(server.address, 15)
        with TransitionStreamClient(server.address, consumer="trainer", follow=False) as client:
            for event in client:
                if event.HasField("transition"):
                    seen.append(event.transition.rollout_id)
                client.ack(event.sequence)
        # Everything is acked now: a third session gets nothing.
        with TransitionStreamClient(server.address, consumer="trainer", follow=False) as client:
            assert list(client) == []
    assert seen == [f"r{i:03d}" for i in range(15)]


def test_following_consumer_gets_new_rollouts_live_and_survives_a_collector_restart(tmp_path):
    store = tmp_path / "live.db"
    config = CollectorConfig(listen="127.0.0.1:0", store_path=store)
    server = CollectorServer(config).start()
    address = server.address
    received: list[str] = []
    done = threading.Event()

    def consume() -> None:
        with TransitionStreamClient(address, consumer="live", reconnect_timeout_s=20) as client:
            for event in client:
                if event.HasField("transition"):
                    received.append(event.transition.rollout_id)
                client.ack(event.sequence)
                if len(received) == 6:
                    done.set()
                    return

    consumer = threading.Thread(target=consume, daemon=True)
    consumer.start()
    export_rollouts(address, 3)
    wait_for_rollouts(address, 3)
    server.stop()
    # Same port, same store: the client reconnects by itself.
    server = CollectorServer(CollectorConfig(listen=address, store_path=store)).start()
    export_rollouts(address, 3, start=3)
    assert done.wait(30), f"consumer got only {received}"
    server.stop()
    assert received == [f"r{i:03d}" for i in range(6)]


def test_slow_consumer_is_held_to_its_window(collector):
    export_rollouts(collector.address, 20)
    wait_for_rollouts(collector.address, 20)
    channel = grpc.insecure_channel(collector.address)
    from otel_lightning.v1 import transitions_pb2 as pb
    from otel_lightning.v1 import transitions_pb2_grpc as pb_grpc

    release = threading.Event()

    def requests():
        yield pb.SubscribeRequest(subscribe=pb.Subscribe(consumer="slow", follow=True, max_in_flight=4))
        release.wait(10)

    call = pb_grpc.TransitionStreamStub(channel).Subscribe(requests())
    got = []
    for event in call:
        got.append(event.sequence)
        if len(got) == 4:
            break
    # Without acks the server sends no more than the window: the next read would block.
    assert got == [1, 2, 3, 4]
    ready = threading.Event()

    def read_one_more() -> None:
        try:
            next(call, None)
            ready.set()
        except grpc.RpcError:
            pass  # cancelled below

    threading.Thread(target=read_one_more, daemon=True).start()
    assert not ready.wait(1.0)
    release.set()
    call.cancel()


def test_encoded_stream_events_equal_protobuf_serialization():
    from otel_lightning.v1 import transitions_pb2 as pb
    from otel_lightning_collector.store import EVENT_ROLLOUT, EVENT_TRANSITION, StoredEvent
    from otel_lightning_collector.stream_service import encode_stream_event, to_stream_event

    transition = pb.Transition(rollout_id="r", step=3, state_json="{}" * 200, prompt_token_ids=range(300))
    rollout = pb.RolloutCompleted(rollout_id="r", status="succeeded", total_reward=1.5)
    for sequence in (1, 127, 128, 300, 2**40):
        for kind, body in ((EVENT_TRANSITION, transition), (EVENT_ROLLOUT, rollout)):
            stored = StoredEvent(sequence, kind, body.SerializeToString())
            assert encode_stream_event(stored) == to_stream_event(stored).SerializeToString()


def test_a_from_latest_follower_skips_history_and_gets_what_comes_after(collector):
    export_rollouts(collector.address, 2)
    wait_for_rollouts(collector.address, 2)
    received: list[str] = []
    client = TransitionStreamClient(collector.address, from_latest=True, auto_ack=True)

    def follow() -> None:
        for event in client:
            payload = getattr(event, event.WhichOneof("payload"))
            received.append(payload.rollout_id)
            if event.HasField("rollout"):
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert client.wait_positioned(10)
    export_rollouts(collector.address, 1, start=7)
    reader.join(10)
    client.close()
    assert received and set(received) == {"r007"}
