"""Collector ingest: spans/s into stored transitions, beside a bare OTLP receiver (the ceiling).

Both receivers run in their own process; this process plays the exporters (4 concurrent
requests of 512 spans, as BatchSpanProcessor sends them). The collector's clock stops when the
last rollout's completion is readable on the transition stream; the bare receiver's when the
last request is acknowledged. Prints both, their ratio, and the stream's end-to-end latency.

    python benchmarks/collector_ingest.py [--rollouts 2000] [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from otel_lightning.stream_client import TransitionStreamClient
from tests.support import SpanFactory, export_request

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
BATCH = 512


def build_requests(rollouts: int, steps: int) -> tuple[list[bytes], int]:
    """Serialized export requests, as an agent fleet would send them: rollouts interleaved."""
    prompt = "You are a careful assistant. " * 20  # ~600 characters of prompt per step
    spans = []
    for index in range(rollouts):
        factory = SpanFactory(rollout_id=f"r{index:06d}", task_id=f"t{index % 100}")
        for step in range(steps):
            spans.append(
                factory.llm(
                    f"{prompt} question {index} step {step}",
                    f"answer {step}",
                    **{
                        "lightning.llm.prompt_token_ids": list(range(150)),
                        "lightning.llm.response_token_ids": list(range(20)),
                    },
                )
            )
        spans.append(factory.reward(1.0))
        spans.append(factory.root())
    requests = [export_request(*spans[i : i + BATCH]).SerializeToString() for i in range(0, len(spans), BATCH)]
    return requests, len(spans)


def run_bare_receiver(port_queue: multiprocessing.Queue) -> None:
    counted = [0]

    def export(raw: bytes, context: grpc.ServicerContext) -> bytes:
        request = ExportTraceServiceRequest.FromString(raw)
        counted[0] += sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        return ExportTraceServiceResponse().SerializeToString()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "opentelemetry.proto.collector.trace.v1.TraceService",
                {"Export": grpc.unary_unary_rpc_method_handler(export)},
            ),
        )
    )
    port_queue.put(server.add_insecure_port("127.0.0.1:0"))
    server.start()
    server.wait_for_termination()


def run_collector(port_queue: multiprocessing.Queue, store: str) -> None:
    from otel_lightning_collector import CollectorConfig, CollectorServer

    server = CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=store)).start()
    port_queue.put(server.port)
    server.wait()


def start(target, *args) -> tuple[multiprocessing.Process, str]:
    ports: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=target, args=(ports, *args), daemon=True)
    process.start()
    return process, f"127.0.0.1:{ports.get(timeout=30)}"


def send_all(address: str, requests: list[bytes], concurrency: int = 4) -> float:
    channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", 64 << 20)])
    export = channel.unary_unary(EXPORT)
    export(requests[0][:0] or ExportTraceServiceRequest().SerializeToString())  # connect first
    began = time.perf_counter()
    with futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda raw: export(raw, timeout=60), requests))
    return began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=4, help="LLM calls per rollout")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    requests, span_count = build_requests(args.rollouts, args.steps)

    bare, bare_address = start(run_bare_receiver)
    began = send_all(bare_address, requests)
    bare_s = time.perf_counter() - began
    bare.terminate()

    with tempfile.TemporaryDirectory() as tmp:
        collector, address = start(run_collector, os.path.join(tmp, "bench.db"))
        began = send_all(address, requests)
        acked_s = time.perf_counter() - began
        completed = 0
        with TransitionStreamClient(address, consumer="bench", auto_ack=True, max_in_flight=4096) as client:
            for event in client:
                if event.HasField("rollout"):
                    completed += 1
                    if completed == args.rollouts:
                        break
        collector_s = time.perf_counter() - began
        collector.terminate()

    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "spans": span_count,
        "rollouts": args.rollouts,
        "bare_receiver_spans_per_s": round(span_count / bare_s),
        "collector_acked_spans_per_s": round(span_count / acked_s),
        "collector_to_transitions_spans_per_s": round(span_count / collector_s),
        "acked_vs_bare": round(bare_s / acked_s, 3),
        "transitions_vs_bare": round(bare_s / collector_s, 3),
        "transitions_per_s": round(args.rollouts * args.steps / collector_s),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"machine: {figures['machine']}")
    print(f"{span_count} spans in {len(requests)} requests ({args.rollouts} rollouts x {args.steps + 2} spans)")
    print(f"bare OTLP receiver (decode + count):     {figures['bare_receiver_spans_per_s']:>9,} spans/s")
    print(f"collector, stored and acknowledged:      {figures['collector_acked_spans_per_s']:>9,} spans/s")
    print(
        f"collector, into streamed transitions:    {figures['collector_to_transitions_spans_per_s']:>9,} spans/s"
        f"  ({figures['transitions_per_s']:,} transitions/s)"
    )
    print(f"acknowledged / bare ceiling:             {figures['acked_vs_bare']:.2f}")
    print(f"into transitions / bare ceiling:         {figures['transitions_vs_bare']:.2f}")


if __name__ == "__main__":
    main()
