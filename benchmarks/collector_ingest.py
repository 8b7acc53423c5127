"""Collector ingest: spans/s into stored transitions, beside a bare OTLP receiver (the ceiling).

Both receivers run in their own process; this process plays the exporters (4 concurrent
requests of 512 spans, as BatchSpanProcessor sends them). The collector's clock stops when the
last rollout's completion is readable on the transition stream; the bare receiver's when the
last request is acknowledged. Prints both, their ratio, and the stream's end-to-end latency.

    python benchmarks/collector_ingest.py [--rollouts 2000] [--steps 4]

`--compare-limits`: what the input limits cost (issue 17). In one run, the collector's acknowledged
spans/s with its default limits and with every limit made permissive (sizes, span admission,
timeouts, connection and stream bounds), over gRPC and over OTLP/HTTP (gzip, as exporters send),
alternating, best of `--repeat`; and the HTTP body reader itself, bounded streaming inflate against
the read-all-then-`gzip.decompress` it replaced, on the same bodies.
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


def run_collector(port_queue: multiprocessing.Queue, store: str, permissive: bool = False) -> None:
    from otel_lightning_collector import CollectorConfig, CollectorServer
    from otel_lightning_collector.otlp_http import HttpLimits

    config = CollectorConfig(listen="127.0.0.1:0", http_listen="127.0.0.1:0", store_path=store)
    if permissive:  # every limit of issue 17 out of the way
        config.max_message_bytes = 1 << 30
        config.max_pending_spans = 1 << 40
        config.max_streams = config.max_waiting_claims = 10_000
        config.http_limits = HttpLimits(
            max_json_bytes=1 << 30, read_timeout_s=1e6, request_timeout_s=1e6, max_connections=1_000_000
        )
    server = CollectorServer(config).start()
    port_queue.put((server.port, server.http.port))
    server.wait()


def start(target, *args) -> tuple:
    ports: multiprocessing.Queue = multiprocessing.Queue()
    process = multiprocessing.Process(target=target, args=(ports, *args), daemon=True)
    process.start()
    port = ports.get(timeout=30)
    if isinstance(port, tuple):  # the collector: gRPC and OTLP/HTTP
        return process, f"127.0.0.1:{port[0]}", port[1]
    return process, f"127.0.0.1:{port}"


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
    parser.add_argument("--compare-limits", action="store_true", help="limits on vs permissive, same run")
    parser.add_argument("--repeat", type=int, default=3, help="--compare-limits: runs of each setting")
    args = parser.parse_args()
    requests, span_count = build_requests(args.rollouts, args.steps)

    if args.compare_limits:
        compare_limits(requests, span_count, args)
        return
    bare, bare_address = start(run_bare_receiver)
    began = send_all(bare_address, requests)
    bare_s = time.perf_counter() - began
    bare.terminate()

    with tempfile.TemporaryDirectory() as tmp:
        collector, address, _ = start(run_collector, os.path.join(tmp, "bench.db"))
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


def send_all_http(port: int, bodies: list[bytes], concurrency: int = 4) -> float:
    """OTLP/HTTP exporters: gzip protobuf bodies, one keep-alive connection per sender."""
    import http.client
    import threading

    local = threading.local()

    def post(body: bytes) -> None:
        if not hasattr(local, "connection"):
            local.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        headers = {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        local.connection.request("POST", "/v1/traces", body, headers)
        response = local.connection.getresponse()
        response.read()
        assert response.status == 200, response.status

    began = time.perf_counter()
    with futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(post, bodies))
    return began


def acked_spans_per_s(
    requests: list[bytes], bodies: list[bytes], span_count: int, permissive: bool, http: bool
) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        collector, address, http_port = start(run_collector, os.path.join(tmp, "bench.db"), permissive)
        try:
            began = send_all_http(http_port, bodies) if http else send_all(address, requests)
            return span_count / (time.perf_counter() - began)
        finally:
            collector.terminate()
            collector.join()


def body_reader_mb_per_s(bodies: list[bytes], bounded: bool, repeat: int) -> float:
    """The HTTP body reader alone, on in-memory bodies: bounded streaming inflate, or read all + decompress."""
    import gzip
    import io
    from email.message import Message

    from otel_lightning_collector.http_limits import read_body

    best = 0.0
    for _ in range(repeat):
        began = time.perf_counter()
        size = 0
        for body in bodies:
            stream = io.BufferedReader(io.BytesIO(body))
            if bounded:
                headers = Message()
                headers["Content-Length"] = str(len(body))
                headers["Content-Encoding"] = "gzip"
                size += len(read_body(stream, headers, 64 << 20))
            else:
                size += len(gzip.decompress(stream.read(len(body))))
        best = max(best, size / (1 << 20) / (time.perf_counter() - began))
    return best


def compare_limits(requests: list[bytes], span_count: int, args: argparse.Namespace) -> None:
    import gzip

    bodies = [gzip.compress(raw, compresslevel=1) for raw in requests]
    runs: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        for http in (False, True):
            for permissive in (True, False):
                key = f"{'http' if http else 'grpc'}_{'permissive' if permissive else 'limits'}"
                runs.setdefault(key, []).append(acked_spans_per_s(requests, bodies, span_count, permissive, http))
    best = {key: max(values) for key, values in runs.items()}
    reader_before = body_reader_mb_per_s(bodies, bounded=False, repeat=args.repeat * 3)
    reader_after = body_reader_mb_per_s(bodies, bounded=True, repeat=args.repeat * 3)
    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "spans": span_count,
        "requests": len(requests),
        **{f"{key}_acked_spans_per_s": round(value) for key, value in best.items()},
        "grpc_limits_cost": round(1 - best["grpc_limits"] / best["grpc_permissive"], 3),
        "http_limits_cost": round(1 - best["http_limits"] / best["http_permissive"], 3),
        "http_body_reader_read_all_mb_per_s": round(reader_before),
        "http_body_reader_bounded_mb_per_s": round(reader_after),
        "http_body_reader_cost": round(1 - reader_after / reader_before, 3),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"machine: {figures['machine']}")
    print(f"{span_count} spans in {len(requests)} requests; best of {args.repeat} runs each, alternating")
    for transport in ("grpc", "http"):
        print(
            f"{transport:>4}: permissive {best[f'{transport}_permissive']:>9,.0f} spans/s,"
            f" limits {best[f'{transport}_limits']:>9,.0f} spans/s, cost {figures[f'{transport}_limits_cost']:+.1%}"
        )
    print(
        f"HTTP body reader (gzip): read all + decompress {reader_before:,.0f} MB/s, bounded streaming"
        f" {reader_after:,.0f} MB/s, cost {figures['http_body_reader_cost']:+.1%}"
    )


if __name__ == "__main__":
    main()
