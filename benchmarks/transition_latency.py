"""Transition latency and stream throughput: how soon, and how fast, the trainer gets transitions.

Latency: exporters send rollouts (4 LLM spans, a reward, the root: 6 spans) at a steady rate of
`--spans-per-s` (default 1,000) to a collector in its own process; a trainer in a third process
follows the stream. For each rollout, latency = the time the trainer receives its completion
(its transitions come just before it) minus the end time of its root span, which is stamped
just before the export is sent. Prints p50/p95/p99/max.

Throughput: a collector is filled with `--stored-rollouts` rollouts first, then one consumer reads
every event (transitions and completions) with acks: events/s and MB/s.

    python benchmarks/transition_latency.py [--seconds 15] [--spans-per-s 1000] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.collector_ingest import EXPORT, build_requests, run_collector, send_all, start
from otel_lightning.stream_client import TransitionStreamClient
from tests.support import SpanFactory, export_request

SPANS_PER_ROLLOUT = 6


def rollout_request(index: int) -> tuple[str, bytes]:
    factory = SpanFactory(rollout_id=f"lat-{index:06d}", task_id=f"t{index % 50}")
    spans = [
        factory.llm(
            f"question {index} step {step} " + "context " * 60,
            f"answer {step}",
            **{"lightning.llm.prompt_token_ids": list(range(150)), "lightning.llm.response_token_ids": list(range(20))},
        )
        for step in range(4)
    ]
    spans.append(factory.reward(1.0))
    root = factory.root()
    root.end_time_unix_nano = time.time_ns()
    spans.append(root)
    return factory.rollout_id, export_request(*spans).SerializeToString()


def follow(address: str, expected: int, results: multiprocessing.Queue) -> None:
    received: dict[str, int] = {}
    with TransitionStreamClient(address, consumer="trainer", auto_ack=True, max_in_flight=4096) as client:
        for event in client:
            if event.HasField("rollout"):
                received[event.rollout.rollout_id] = time.time_ns()
                if len(received) == expected:
                    break
    results.put(received)


def measure_latency(seconds: float, spans_per_s: float) -> dict[str, float]:
    rollouts = int(seconds * spans_per_s / SPANS_PER_ROLLOUT)
    interval = SPANS_PER_ROLLOUT / spans_per_s
    with tempfile.TemporaryDirectory() as tmp:
        collector, address = start(run_collector, os.path.join(tmp, "latency.db"))
        results: multiprocessing.Queue = multiprocessing.Queue()
        trainer = multiprocessing.Process(target=follow, args=(address, rollouts, results), daemon=True)
        trainer.start()
        export = grpc.insecure_channel(address).unary_unary(EXPORT)
        ended: dict[str, int] = {}
        began = time.perf_counter()
        for index in range(rollouts):
            # Steady pacing: each rollout goes at its slot, whatever the previous export took.
            delay = began + index * interval - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            rollout_id, raw = rollout_request(index)
            ended[rollout_id] = time.time_ns()
            export(raw, timeout=30)
        sent_s = time.perf_counter() - began
        received = results.get(timeout=120)
        trainer.join(10)
        collector.terminate()
    latencies_ms = sorted((received[r] - ended[r]) / 1e6 for r in ended)
    quantiles = statistics.quantiles(latencies_ms, n=100)
    return {
        "rollouts": rollouts,
        "offered_spans_per_s": round(rollouts * SPANS_PER_ROLLOUT / sent_s),
        "latency_p50_ms": round(quantiles[49], 1),
        "latency_p95_ms": round(quantiles[94], 1),
        "latency_p99_ms": round(quantiles[98], 1),
        "latency_max_ms": round(latencies_ms[-1], 1),
    }


def measure_stream(stored_rollouts: int) -> dict[str, float]:
    requests, _ = build_requests(stored_rollouts, 4)
    with tempfile.TemporaryDirectory() as tmp:
        collector, address = start(run_collector, os.path.join(tmp, "stream.db"))
        send_all(address, requests)
        # Wait until every rollout is completed, then time one consumer reading it all.
        with TransitionStreamClient(address, consumer="warmup", auto_ack=True, max_in_flight=4096) as client:
            completed = 0
            for event in client:
                completed += event.HasField("rollout")
                if completed == stored_rollouts:
                    break
        events = payload = 0
        began = time.perf_counter()
        with TransitionStreamClient(
            address, consumer="trainer", follow=False, auto_ack=True, max_in_flight=4096
        ) as client:
            for event in client:
                events += 1
                payload += event.ByteSize()
        elapsed = time.perf_counter() - began
        collector.terminate()
    return {
        "stream_events": events,
        "stream_events_per_s": round(events / elapsed),
        "stream_mb_per_s": round(payload / elapsed / 1e6, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--spans-per-s", type=float, default=1000.0)
    parser.add_argument("--stored-rollouts", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = {**measure_latency(args.seconds, args.spans_per_s), **measure_stream(args.stored_rollouts)}
    if args.json:
        print(json.dumps(figures))
        return
    print(f"{figures['rollouts']} rollouts at {figures['offered_spans_per_s']:,} spans/s offered")
    print(
        f"root span end -> trainer: p50 {figures['latency_p50_ms']} ms, p95 {figures['latency_p95_ms']} ms,"
        f" p99 {figures['latency_p99_ms']} ms, max {figures['latency_max_ms']} ms"
    )
    print(
        f"stream to one consumer: {figures['stream_events_per_s']:,} events/s ({figures['stream_mb_per_s']} MB/s,"
        f" {figures['stream_events']:,} events)"
    )


if __name__ == "__main__":
    main()
