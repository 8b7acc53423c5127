"""Time the model gateway adds per call, and calls/s through it against calls/s straight to the same
upstream: non-streamed and streamed chat completions, in one run.

The upstream is the stub model server (vLLM-like: token ids only when asked) in a process of its own;
the gateway runs in another process, recording every call into the real OpenTelemetry SDK
(BatchSpanProcessor) with an exporter that drops the spans, so the figures are the gateway's own cost
(HTTP in and out, body handling, the span) and not a collector's. A third way, "bare proxy", is the
gateway's own stack (its HTTP/1.1 server and model-server client on uvloop) passing bytes through and
recording nothing: the floor any proxy on this stack costs, against which the gateway's own work shows.
`--old-stack` adds the stacks the gateway had before, bare: aiohttp's server and client, and uvicorn
with one pooled httpx client.
`--burn-control MS` adds a control: the bare proxy spinning MS ms of CPU after each answer, off the
caller's path. Next to the gateway (give it the gateway's CPU per call minus the bare proxy's), it shows
how much of the gateway's throughput figure is its CPU alone, taken from the callers' and stub's cores.
`--count-caller-calls` adds, per way, the Python function calls (frames entered, coroutine resumptions
included) the callers make per HTTP call, counted by a profile hook in an extra, untimed burst: whether
the callers do more work through a proxy, or the same work more slowly.
The callers are httpx clients, as openai-python is.

Latency: one call at a time over a kept-alive connection, the ways alternating by round; "added" =
p50 (p99) through minus p50 (p99) direct. CPU: the seconds the answering process spent per call (on
a loaded machine wall-clock figures include waiting for a core; CPU figures do not). Throughput:
`--concurrency` callers for `--seconds` per way, in `--rounds` bursts alternating between the ways.

    python benchmarks/gateway_overhead.py [--calls 300] [--rounds 5] [--concurrency 8] [--seconds 5]
                                          [--old-stack] [--pin] [--burn-control MS] [--count-caller-calls]
                                          [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
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


def serve_bare_proxy(port: int, upstream: str, burn_ms: float = 0.0) -> None:
    """The floor: the gateway's own stack (its HTTP/1.1 server and model-server client, on uvloop)
    passing bodies through, nothing parsed and nothing recorded. With `burn_ms` (`--burn-control`), it
    spins that much CPU after each answer has gone: a control for what CPU alone costs the others."""
    from yarl import URL

    from otel_lightning_gateway.http_server import HttpServer, Reply, Request
    from otel_lightning_gateway.model_server_client import ModelServerPool
    from otel_lightning_gateway.server import run_loop

    pool = ModelServerPool(connect_timeout_s=3, read_timeout_s=600)
    headers = [("Content-Type", "application/json")]

    def burn() -> None:
        until = time.thread_time() + burn_ms / 1000
        while time.thread_time() < until:
            pass

    async def handle(request: Request, reply: Reply) -> None:
        if request.method == "GET":  # /v1/models, to see it is up
            reply.send(200, b'{"data": []}', headers)
            return
        answer = await pool.post(URL(upstream + request.raw_path[3:], encoded=True), headers, request.body)
        kind = answer.headers.get("Content-Type", "")
        if "text/event-stream" not in kind:
            body = await answer.read()
            answer.release()
            reply.send(answer.status, body, [("Content-Type", kind)])
            burn()
            return
        await reply.start(answer.status, [("Content-Type", kind)])
        async for data in answer.iter_any():
            await reply.write(data)
        answer.release()
        burn()

    async def serve() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", port))
        await HttpServer(handle).start(sock)
        await asyncio.Event().wait()

    run_loop(serve())


def serve_aiohttp_proxy(port: int, upstream: str) -> None:
    """The stack the gateway had before this one (aiohttp's server and one keep-alive ClientSession),
    passing bodies through."""
    from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

    async def start(app: web.Application) -> None:
        connector = TCPConnector(limit=1024, keepalive_timeout=30)
        app["session"] = ClientSession(connector=connector, timeout=ClientTimeout(total=None, sock_connect=3))

    async def close(app: web.Application) -> None:
        await app["session"].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        content = await request.read()
        url = upstream + request.path[3:]
        headers = {"content-type": "application/json"}
        async with request.app["session"].post(url, data=content, headers=headers) as answer:
            kind = answer.headers.get("content-type", "")
            if "text/event-stream" not in kind:
                return web.Response(body=await answer.read(), status=answer.status, headers={"content-type": kind})
            response = web.StreamResponse(status=answer.status, headers={"content-type": kind})
            await response.prepare(request)
            async for data in answer.content.iter_any():
                await response.write(data)
            await response.write_eof()
            return response

    async def models(request: web.Request) -> web.Response:
        async with request.app["session"].get(upstream + "/models") as answer:
            return web.Response(body=await answer.read(), status=answer.status, content_type="application/json")

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(close)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_uvicorn_proxy(port: int, upstream: str) -> None:
    """The stack the gateway had first (uvicorn + one pooled httpx client), passing bytes through."""
    import uvicorn

    client: httpx.AsyncClient | None = None

    async def app(scope, receive, send) -> None:
        nonlocal client
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] == "lifespan.startup":
                limits = httpx.Limits(max_connections=1024, max_keepalive_connections=256, keepalive_expiry=30.0)
                transport = httpx.AsyncHTTPTransport(
                    limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
                )
                client = httpx.AsyncClient(transport=transport, timeout=600, trust_env=False)
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


@contextlib.contextmanager
def pinned(processes: dict[str, psutil.Process], pin: bool) -> Iterator[None]:
    """With `pin`: the proxies on the last core, the caller (this process) and the stub on the others,
    for as long as it lasts; then every process may run anywhere again. One call at a time, three
    processes on two cores otherwise meet wherever the scheduler puts them, and which of them waits for
    a core moves every figure by more than a proxy costs."""
    if not pin:
        yield
        return
    cores = sorted(psutil.Process().cpu_affinity())
    if len(cores) < 2:
        raise SystemExit("--pin needs at least 2 cores")
    everyone = [psutil.Process(), *processes.values()]
    for process in everyone:
        is_proxy = process.pid not in (os.getpid(), processes["direct"].pid)
        process.cpu_affinity(cores[-1:] if is_proxy else cores[:-1])
    try:
        yield
    finally:
        for process in everyone:
            process.cpu_affinity(cores)


def latencies(
    bases: dict[str, str], stream: bool, calls: int, rounds: int, processes: dict[str, psutil.Process], pin: bool
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per way, every call's seconds (the ways alternate by round so drift in the machine's load hits
    both), and CPU seconds per call of the process that answers it (the stub directly, the gateway in
    front of it): what each costs, whatever the load."""
    found: dict[str, list[float]] = {way: [] for way in bases}
    cpu = dict.fromkeys(bases, 0.0)
    with pinned(processes, pin), httpx.Client(timeout=30) as client:
        for base in bases.values():  # warm up: connections, imports, first-call paths
            for _ in range(20):
                one_call(client, base, stream)
        for _ in range(rounds):
            for way, base in bases.items():
                before = cpu_seconds(processes[way])
                found[way].extend(one_call(client, base, stream) for _ in range(calls // rounds))
                cpu[way] += cpu_seconds(processes[way]) - before
    return found, {way: seconds / len(found[way]) for way, seconds in cpu.items()}


async def burst(client: httpx.AsyncClient, base_url: str, stream: bool, concurrency: int, seconds: float) -> int:
    """Calls completed by `concurrency` callers in `seconds`."""
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

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return done


async def python_calls_per_call(
    client: httpx.AsyncClient, base_url: str, stream: bool, concurrency: int, seconds: float
) -> float:
    """Python function calls the callers make per HTTP call, counted by a profile hook (it slows them
    down, so this burst is not one of the timed ones)."""
    counted = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal counted
        if event == "call":
            counted += 1

    sys.setprofile(count)
    try:
        done = await burst(client, base_url, stream, concurrency, seconds)
    finally:
        sys.setprofile(None)
    return counted / max(done, 1)


async def throughputs(
    bases: dict[str, str], stream: bool, concurrency: int, seconds: float, rounds: int, count_calls: bool = False
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Calls/s per way: `seconds` each, in `rounds` bursts alternating between the ways (as the latency
    figures do), each way with its own kept-alive client; the callers' CPU seconds per call (they
    share this process, and its one core is what bounds the bursts); with `count_calls`, the callers'
    Python function calls per HTTP call (else empty)."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = {way: httpx.AsyncClient(timeout=30, limits=limits) for way in bases}
    done = dict.fromkeys(bases, 0)
    spent = dict.fromkeys(bases, 0.0)
    callers_cpu = dict.fromkeys(bases, 0.0)
    me = psutil.Process()
    try:
        for way, base in bases.items():  # warm up: the connections
            await burst(clients[way], base, stream, concurrency, 0.2)
        for _ in range(rounds):
            for way, base in bases.items():
                began, cpu_before = time.perf_counter(), cpu_seconds(me)
                done[way] += await burst(clients[way], base, stream, concurrency, seconds / rounds)
                spent[way] += time.perf_counter() - began
                callers_cpu[way] += cpu_seconds(me) - cpu_before
        python_calls: dict[str, float] = {}
        if count_calls:
            for way, base in bases.items():
                python_calls[way] = await python_calls_per_call(clients[way], base, stream, concurrency, 2.0)
    finally:
        for client in clients.values():
            await client.aclose()
    rates = {way: done[way] / spent[way] for way in bases}
    return rates, {way: callers_cpu[way] / done[way] for way in bases}, python_calls


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


# Ways through to the upstream, besides "direct": (name in the table, the --serve-* flag that starts it).
PROXIES = {
    "bare proxy": "--serve-bare-proxy",
    "gateway": "--serve-gateway",
}
OLD_STACKS = {"aiohttp proxy": "--serve-aiohttp-proxy", "uvicorn proxy": "--serve-uvicorn-proxy"}


def figures_of(
    found: dict[str, list[float]],
    cpu_per_call: dict[str, float],
    rates: dict[str, float],
    callers: dict[str, float],
    python_calls: dict[str, float],
) -> dict:
    """Per way: p50/p99 added over direct (ms), CPU ms per call of the answering process, calls/s and its
    ratio to direct, the callers' CPU ms per call in the throughput bursts (and their Python function
    calls per HTTP call, when counted)."""
    p50 = {way: percentile(values, 50) * 1000 for way, values in found.items()}
    p99 = {way: percentile(values, 99) * 1000 for way, values in found.items()}
    out: dict[str, dict[str, float]] = {}
    for way in found:
        out[way] = {
            "p50_ms": round(p50[way], 3),
            "p99_ms": round(p99[way], 3),
            "added_p50_ms": round(p50[way] - p50["direct"], 3),
            "added_p99_ms": round(p99[way] - p99["direct"], 3),
            "cpu_ms_per_call": round(cpu_per_call[way] * 1000, 3),
            "calls_per_s": round(rates[way]),
            "throughput_ratio": round(rates[way] / rates["direct"], 2),
            "callers_cpu_ms_per_call": round(callers[way] * 1000, 3),
        }
        if way in python_calls:
            out[way]["callers_python_calls_per_call"] = round(python_calls[way], 1)
    return out


def print_table(figures: dict[str, dict[str, dict[str, float]]]) -> None:
    print("| mode | way | p50 added | p99 added | CPU per call | calls/s (of direct) | callers' CPU per call |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for mode, ways in figures.items():
        for way, f in ways.items():
            if way == "direct":
                print(
                    f"| {mode} | direct (p50 {f['p50_ms']:.2f} ms) | | | {f['cpu_ms_per_call']:.2f} ms"
                    f" | {f['calls_per_s']:,} | {f['callers_cpu_ms_per_call']:.2f} ms |"
                )
                continue
            print(
                f"| {mode} | {way} | {f['added_p50_ms']:.2f} ms | {f['added_p99_ms']:.2f} ms"
                f" | {f['cpu_ms_per_call']:.2f} ms | {f['calls_per_s']:,} ({f['throughput_ratio']:.2f})"
                f" | {f['callers_cpu_ms_per_call']:.2f} ms |"
            )
    print("CPU per call: of the process that answers (direct: the stub; otherwise the proxy alone).")
    print("Callers' CPU per call: of the one process whose callers make the throughput bursts (its core bounds them).")
    for mode, ways in figures.items():
        counted = {way: f.get("callers_python_calls_per_call") for way, f in ways.items()}
        if None not in counted.values():
            listed = ", ".join(f"{way} {calls:,.0f}" for way, calls in counted.items())
            print(f"Callers' Python function calls per HTTP call, {mode}: {listed}")
    plain = figures["plain"]["gateway"]
    for goal, value, met in (
        ("plain p50 added < 1 ms", f"{plain['added_p50_ms']:.2f} ms", plain["added_p50_ms"] < 1.0),
        ("plain calls/s >= 0.8 of direct", f"{plain['throughput_ratio']:.2f}", plain["throughput_ratio"] >= 0.8),
    ):
        print(f"goal {goal}: {value}, {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=300, help="calls per way and mode for the latency figures")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0, help="per way and mode for the throughput figures")
    parser.add_argument(
        "--old-stack",
        action="store_true",
        help="add rows for the gateway's former stacks (aiohttp; uvicorn + httpx), bare",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="for the latency figures, the proxies on the last core and the caller and stub on the others",
    )
    parser.add_argument(
        "--burn-control",
        type=float,
        metavar="MS",
        help="add a control way: the bare proxy spinning MS ms of CPU after each answer (what CPU alone costs)",
    )
    parser.add_argument(
        "--count-caller-calls",
        action="store_true",
        help="add the callers' Python function calls per HTTP call, per way (an extra, untimed burst each)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object of figures on the last line")
    parser.add_argument("--serve-gateway", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-bare-proxy", nargs="+", metavar="PORT UPSTREAM [BURN_MS]", help=argparse.SUPPRESS)
    parser.add_argument("--serve-aiohttp-proxy", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    parser.add_argument("--serve-uvicorn-proxy", nargs=2, metavar=("PORT", "UPSTREAM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    for given, serve in (
        (args.serve_gateway, serve_gateway),
        (args.serve_bare_proxy, serve_bare_proxy),
        (args.serve_aiohttp_proxy, serve_aiohttp_proxy),
        (args.serve_uvicorn_proxy, serve_uvicorn_proxy),
    ):
        if given:
            return serve(int(given[0]), given[1], *map(float, given[2:]))

    proxies: dict[str, list[str]] = {way: [flag] for way, flag in PROXIES.items()}
    if args.old_stack:
        proxies.update({way: [flag] for way, flag in OLD_STACKS.items()})
    if args.burn_control is not None:
        proxies[f"bare proxy + {args.burn_control:g} ms CPU"] = ["--serve-bare-proxy", str(args.burn_control)]
    stub_port = free_port()
    upstream = f"http://127.0.0.1:{stub_port}/v1"
    stub = [sys.executable, "-m", "otel_lightning.testing.openai_stub", "--port", str(stub_port)]
    children = {"direct": subprocess.Popen(stub, stdout=subprocess.DEVNULL)}
    bases = {"direct": upstream}
    for way, (flag, *extra) in proxies.items():
        port = free_port()
        children[way] = subprocess.Popen([sys.executable, __file__, flag, str(port), upstream, *extra], cwd=ROOT)
        bases[way] = f"http://127.0.0.1:{port}/v1"
    try:
        for base in bases.values():
            wait_for(f"{base}/models")
        processes = {way: psutil.Process(child.pid) for way, child in children.items()}
        figures: dict[str, dict[str, dict[str, float]]] = {}
        for mode, stream in (("plain", False), ("streamed", True)):
            found, cpu_per_call = latencies(bases, stream, args.calls, args.rounds, processes, args.pin)
            rates, callers, python_calls = asyncio.run(
                throughputs(bases, stream, args.concurrency, args.seconds, args.rounds, args.count_caller_calls)
            )
            figures[mode] = figures_of(found, cpu_per_call, rates, callers, python_calls)
    finally:
        for child in children.values():
            child.terminate()
            child.wait(10)
    if args.json:
        print(json.dumps({"concurrency": args.concurrency, "pinned": args.pin, **figures}))
        return
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load {load}")
    pinning = " (pinned: proxies on their own core)" if args.pin else ""
    throughput = f"{args.concurrency} callers x {args.seconds:g} s for throughput"
    print(f"{args.calls} calls per way for latency{pinning}, {throughput}")
    print_table(figures)


if __name__ == "__main__":
    main()
