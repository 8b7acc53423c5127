"""Faults that really happen: a killed collector, a full disk, a trainer that stops reading."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import grpc
import psutil

from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning_collector import CollectorConfig, CollectorServer
from tests.collector.test_ingest_robustness import EXPORT
from tests.support import ChildProcess, SpanFactory, export_request, free_port, rollouts, transitions, wait_for_rollouts


def rollout_request(rollout_id: str, prompt_chars: int = 200) -> bytes:
    spans = SpanFactory(rollout_id=rollout_id, task_id=f"task-{rollout_id}")
    return export_request(
        spans.llm("q" * prompt_chars, "a0"), spans.llm("q1", "a1"), spans.reward(1.0), spans.root()
    ).SerializeToString()


class CollectorProcess(ChildProcess):
    """`otel-lightning collector` in a process of its own, to kill -9 and start again."""

    def __init__(self, store: Path, port: int, *extra: str) -> None:
        self.address = f"127.0.0.1:{port}"
        super().__init__(
            [
                *(sys.executable, "-m", "otel_lightning.cli", "collector", "--listen", self.address),
                *("--http-listen", "off", "--store", str(store), *extra),
            ]
        )

    def start(self) -> CollectorProcess:
        super().start()
        channel = grpc.insecure_channel(self.address)
        try:
            grpc.channel_ready_future(channel).result(timeout=60)
        finally:
            channel.close()
        return self


def export_with_retries(address: str, raw: bytes, deadline_s: float = 60.0) -> None:
    """What an OTLP exporter does: send, and on a retryable answer wait and send again."""
    channel = grpc.insecure_channel(address)
    export = channel.unary_unary(EXPORT)
    deadline = time.monotonic() + deadline_s
    try:
        while True:
            try:
                export(raw, timeout=5)
                return
            except grpc.RpcError as error:
                if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise
                assert time.monotonic() < deadline, f"export not accepted within {deadline_s}s: {error.details()}"
                time.sleep(0.1)
    finally:
        channel.close()


def test_kill_9_the_collector_mid_run_every_acked_rollout_reaches_the_trainer_once(tmp_path):
    collector = CollectorProcess(tmp_path / "c.db", free_port()).start()
    acked: list[str] = []
    received: list[tuple[str, int]] = []
    completions: list[str] = []
    stop_trainer = threading.Event()

    def trainer() -> None:
        client = TransitionStreamClient(collector.address, consumer="trainer", auto_ack=True, reconnect_timeout_s=60)
        for event in client:
            if event.HasField("transition"):
                received.append((event.transition.rollout_id, event.transition.step))
            else:
                completions.append(event.rollout.rollout_id)
            if stop_trainer.is_set() and len(completions) >= len(acked):
                break
        client.close()

    reader = threading.Thread(target=trainer, daemon=True)
    reader.start()
    try:
        for index in range(60):
            if index == 30:
                collector.kill()  # mid-run: exports in flight, the trainer reading
                collector.start()
            rollout_id = f"r{index:03d}"
            export_with_retries(collector.address, rollout_request(rollout_id))
            acked.append(rollout_id)
        stop_trainer.set()
        reader.join(60)
    finally:
        collector.stop()
    assert not reader.is_alive()
    assert sorted(completions) == sorted(acked)  # each acked rollout, once
    assert sorted(received) == sorted((r, step) for r in acked for step in (0, 1))  # each transition, once


def test_a_full_store_refuses_exports_retryably_keeps_what_it_has_and_catches_up_with_room(tmp_path, caplog):
    store = tmp_path / "full.db"
    config = CollectorConfig(listen="127.0.0.1:0", store_path=store, max_store_bytes=3 * 1024 * 1024)
    acked: list[str] = []
    refusal = ""
    with CollectorServer(config) as collector:
        channel = grpc.insecure_channel(collector.address)
        export = channel.unary_unary(EXPORT)
        for index in range(200):
            try:
                export(rollout_request(f"r{index:03d}", prompt_chars=20_000), timeout=10)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE  # retryable, per the OTLP spec
                refusal = error.details()
                break
            acked.append(f"r{index:03d}")
        channel.close()
        assert refusal and acked, "the store never filled up"
        assert "disk is full" in refusal or "waiting to be indexed" in refusal
        assert collector.intake.counters.requests_refused >= 1
        # It keeps serving what it has.
        assert len(rollouts(wait_for_rollouts(collector.address, 1))) >= 1
    assert "refused an export request" in caplog.text or "cannot take spans" in caplog.text
    # Given room (a restart without the cap), every acknowledged rollout is there, once.
    with CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=store)) as collector:
        events = wait_for_rollouts(collector.address, len(acked), timeout_s=60)
    assert sorted(r.rollout_id for r in rollouts(events)) == acked
    assert len(transitions(events)) == 2 * len(acked)


def test_a_stalled_trainer_keeps_the_collector_bounded_and_catches_up(tmp_path):
    collector = CollectorProcess(tmp_path / "c.db", free_port()).start()
    try:
        process = psutil.Process(collector.process.pid)
        stalled = TransitionStreamClient(collector.address, consumer="trainer", max_in_flight=64)
        events = iter(stalled)
        for index in range(20):
            export_with_retries(collector.address, rollout_request(f"warm{index}"))
        first = next(events)  # subscribed, then stops reading for a while
        baseline = process.memory_info().rss
        for index in range(1500):
            export_with_retries(collector.address, rollout_request(f"r{index:04d}", prompt_chars=2_000))
        peak = process.memory_info().rss
        # Everything is on disk, not in memory: ~15 MB of spans went in.
        assert peak - baseline < 60 * 1024 * 1024, (baseline, peak)
        seen = {first.sequence}
        completed = 0
        for next_event in events:
            seen.add(next_event.sequence)
            completed += next_event.HasField("rollout")
            stalled.ack(next_event.sequence)
            if completed == 1520 - (1 if first.HasField("rollout") else 0):
                break
        stalled.close()
        assert completed + first.HasField("rollout") == 1520
    finally:
        collector.stop()
    assert os.path.getsize(tmp_path / "c.db") > 10 * 1024 * 1024
