"""Time the model gateway adds per call, and calls/s through it against calls/s straight to the same
upstream: non-streamed and streamed chat completions, in one run.

The upstream is the stub model server (vLLM-like: token ids only when asked) in a process of its own;
the gateway runs in another process, recording every call into the real OpenTelemetry SDK
(BatchSpanProcessor) with an exporter that drops the spans, so the figures are the gateway's own cost
(HTTP in and out, body handling, the span) and not a collector's. A third way, "bare proxy", is the
same HTTP stack (uvicorn + one pooled httpx client) passing bytes through and recording nothing: what
any Python proxy of this stack costs, against which the gateway's own work shows.

Latency: one call at a time over a kept-alive connection, the ways alternating by round; "added" =
p50 (p99) through minus p50 (p99) direct. CPU: the seconds the answering process spent per call (on
a loaded machine wall-clock figures include waiting for a core; CPU figures do not). Throughput:
`--concurrency` callers for `--seconds`, each way.

    python benchmarks/gateway_overhead.py [--calls 300] [--rounds 5] [--concurrency 8] [--seconds 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]
QUESTION = [{"role": "user", "content": "What is 17+25?"}]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_gateway(port: int, upstream: str) -> None:
    """The gateway process: the real SDK, spans recorded and batched, then dropped."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from otel_lightning_gateway import Gateway

    class DropExporter(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(DropExporter()))
    Gateway(upstream, tracer_provider=provider, port=port).serve_forever()


def serve_bare_proxy(port: int, upstream: str) -> None:
    """The reference: uvicorn and a pooled httpx client passing bodies through, nothing recorded."""
    import uvicorn

    from otel_lightning_gateway.upstream import new_client

    client: httpx.AsyncClient | None = None

    async def app(scope, receive, send) -> None:
        nonlocal client
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] == "lifespan.startup":
                client = new_client(3.0, 600.0)
                await send({"type": "lifespan.startup.complete"})
            return await send({"type": "lifespan.shutdown.complete"})
        request = b""
        while True:
            message = await receive()
            request += message.get("body", b"")
            if not message.get("more_body"):
                break
        url = upstream + scope["path"][3:]
        answer = await client.send(client.build_request(scope["method"], url, content=request), stream=True)
        headers = [(b"content-type", answer.headers["content-type"].encode())]
        await send({"type": "http.response.start", "status": answer.status_code, "headers": headers})
        async for data in answer.aiter_raw():
            await send({"type": "http.response.body", "body": data, "more_body": True})
        await answer.aclose()
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def wait_for(url: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def body(stream: bool) -> dict:
    return {"model": "m", "messages": QUESTION, "stream": stream}


def one_call(client: httpx.Client, base_url: str, stream: bool) -> float:
    began = time.perf_counter()
    if stream:
        with client.stream("POST", f"{base_url}/chat/completions", json=body(True)) as response:
            for _ in response.iter_raw():
                pass
    else:
        client.post(f"{base_url}/chat/completions", json=body(False)).raise_for_status()
    return time.perf_counter() - began


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def latencies(
    bases: dict[str, str], stream: bool, calls: int, rounds: int, processes: dict[str, psutil.Process]
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per way, every call's seconds (the ways alternate by round so drift in the machine's load hits
    both), and CPU seconds per call of the process that answers it (the stub directly, the gateway in
    front of it): what each costs, whatever the load."""
    found: dict[str, list[float]] = {way: [] for way in bases}
    cpu = dict.fromkeys(bases, 0.0)
    with httpx.Client(timeout=30) as client:
        for base in bases.values():  # warm up: connections, imports, first-call paths
            for _ in range(20):
                one_call(client, base, stream)
        for _ in range(rounds):
            for way, base in bases.items():
                before = cpu_seconds(processes[way])
                found[way].extend(one_call(client, base, stream) for _ in range(calls // rounds))
                cpu[way] += cpu_seconds(processes[way]) - before
    return found, {way: seconds / len(found[way]) for way, seconds in cpu.items()}


async def throughput(base_url: str, stream: bool, concurrency: int, seconds: float) -> float:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        done = 0
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                if stream:
                    async with client.stream("POST", f"{base_url}/chat/completions", json=body(True)) as response:
                        async for _ in response.aiter_raw():
                            pass
                else:
                    (await client.post(f"{base_url}/chat/completions", json=body(False))).raise_for_status()
                done += 1

        began = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        return done / (time.perf_counter() - began)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="calls per way and mode for the latency figures")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="per way and mode for the throughput figures")
    parser.add_argument("--json", action="store_true", help="one JSON object of figures on the last line")
    parser.add_argument("--serve-gateway", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare-proxy", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_gateway:
        return serve_gateway(int(args.serve_gateway[0]), args.serve_gateway[1])
    if args.serve_bare_proxy:
        return serve_bare_proxy(int(args.serve_bare_proxy[0]), args.serve_bare_proxy[1])

    stub_port, gateway_port, bare_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{stub_port}/v1"
    stub = [sys.executable, "-m", "otel_lightning.testing.openai_stub", "--port", str(stub_port)]
    children = [
        subprocess.Popen(stub, stdout=subprocess.DEVNULL),
        subprocess.Popen([sys.executable, __file__, "--serve-gateway", str(gateway_port), upstream], cwd=ROOT),
        subprocess.Popen([sys.executable, __file__, "--serve-bare-proxy", str(bare_port), upstream], cwd=ROOT),
    ]
    try:
        bases = {
            "direct": upstream,
            "gateway": f"http://127.0.0.1:{gateway_port}/v1",
            "bare": f"http://127.0.0.1:{bare_port}/v1",
        }
        for base in bases.values():
            wait_for(f"{base}/models")
        processes = {way: psutil.Process(child.pid) for way, child in zip(bases, children, strict=True)}
        figures: dict[str, dict[str, float]] = {}
        for mode, stream in (("plain", False), ("streamed", True)):
            found, cpu_per_call = latencies(bases, stream, args.calls, args.rounds, processes)
            rates = {
                way: asyncio.run(throughput(base, stream, args.concurrency, args.seconds))
                for way, base in bases.items()
            }
            p50 = {way: percentile(values, 50) * 1000 for way, values in found.items()}
            p99 = {way: percentile(values, 99) * 1000 for way, values in found.items()}
            figures[mode] = {
                "direct_p50_ms": round(p50["direct"], 3),
                "gateway_p50_ms": round(p50["gateway"], 3),
                "added_p50_ms": round(p50["gateway"] - p50["direct"], 3),
                "added_p99_ms": round(p99["gateway"] - p99["direct"], 3),
                "bare_proxy_added_p50_ms": round(p50["bare"] - p50["direct"], 3),
                "gateway_cpu_ms_per_call": round(cpu_per_call["gateway"] * 1000, 3),
                "bare_proxy_cpu_ms_per_call": round(cpu_per_call["bare"] * 1000, 3),
                "upstream_cpu_ms_per_call": round(cpu_per_call["direct"] * 1000, 3),
                "direct_calls_per_s": round(rates["direct"]),
                "gateway_calls_per_s": round(rates["gateway"]),
                "bare_proxy_calls_per_s": round(rates["bare"]),
                "throughput_ratio": round(rates["gateway"] / rates["direct"], 2),
            }
    finally:
        for child in children:
            child.terminate()
            child.wait(10)
    if args.json:
        print(json.dumps({"concurrency": args.concurrency, **figures}))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{args.calls} calls per way for latency, {args.concurrency} callers x {args.seconds:g} s for throughput")
    print("| mode | way | p50 added | p99 added | CPU per call | calls/s |")
    print("|---|---|---:|---:|---:|---:|")
    for mode, f in figures.items():
        print(f"| {mode} | direct | | | {f['upstream_cpu_ms_per_call']:.2f} ms | {f['direct_calls_per_s']:,} |")
        print(
            f"| {mode} | bare proxy | {f['bare_proxy_added_p50_ms']:.2f} ms |"
            f" | {f['bare_proxy_cpu_ms_per_call']:.2f} ms | {f['bare_proxy_calls_per_s']:,} |"
        )
        print(
            f"| {mode} | gateway | {f['added_p50_ms']:.2f} ms | {f['added_p99_ms']:.2f} ms"
            f" | {f['gateway_cpu_ms_per_call']:.2f} ms | {f['gateway_calls_per_s']:,}"
            f" ({f['throughput_ratio']:.2f} of direct) |"
        )


if __name__ == "__main__":
    main()
