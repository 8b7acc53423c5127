"""The collector as an attacker meets it: its CLI in a process of its own on loopback, measured from outside
(RSS, threads, open files with psutil), and a good exporter that must still be served meanwhile."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import psutil

from tests.collector.test_ingest_robustness import EXPORT
from tests.support import ChildProcess, SpanFactory, export_request, free_port, read_all, rollouts, wait_until

MB = 1024 * 1024


def rollout_request(rollout_id: str) -> bytes:
    spans = SpanFactory(rollout_id=rollout_id, task_id=f"task-{rollout_id}")
    return export_request(spans.llm("2+2?", "4"), spans.reward(1.0), spans.root()).SerializeToString()


class Collector(ChildProcess):
    """`otel-lightning collector` with gRPC and OTLP/HTTP on free loopback ports."""

    def __init__(self, tmp_path: Path, *extra: str, env: dict[str, str] | None = None, log: Path | None = None) -> None:
        self.log = log
        self.grpc_port, self.http_port = free_port(), free_port()
        self.address = f"127.0.0.1:{self.grpc_port}"
        self.store = tmp_path / "store" / "c.db"
        super().__init__(
            [
                *(sys.executable, "-m", "otel_lightning.cli", "collector", "--listen", self.address),
                *("--http-listen", f"127.0.0.1:{self.http_port}", "--store", str(self.store), *extra),
            ],
            env={**os.environ, **(env or {})},
        )
        self.good = 0

    def start(self) -> Collector:
        if self.log is None:
            super().start()
        else:  # its log kept, to check what it said
            with self.log.open("w") as log:
                self.process = subprocess.Popen(self.command, env=self.env, stdout=subprocess.DEVNULL, stderr=log)
        channel = grpc.insecure_channel(self.address)
        try:
            grpc.channel_ready_future(channel).result(timeout=60)
        finally:
            channel.close()
        assert wait_until(self._http_ready, 30), "OTLP/HTTP did not come up"
        self.psutil = psutil.Process(self.process.pid)
        self.export_channel = grpc.insecure_channel(self.address)
        self.export = self.export_channel.unary_unary(EXPORT)
        self.good_export()  # connected before any attack
        return self

    def _http_ready(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.http_port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self, timeout_s: float = 30.0) -> None:
        if hasattr(self, "export_channel"):
            self.export_channel.close()
        super().stop(timeout_s)

    def good_export(self, timeout_s: float = 1.0) -> str:
        """A well-behaved exporter's request; it must be answered OK within `timeout_s` (its deadline)."""
        rollout_id = f"good-{self.good}"
        self.good += 1
        self.export(rollout_request(rollout_id), timeout=timeout_s)
        return rollout_id

    def rss(self) -> int:
        return self.psutil.memory_info().rss

    def threads(self) -> int:
        return self.psutil.num_threads()

    def fds(self) -> int:
        return self.psutil.num_fds()

    def completed_rollouts(self) -> set[str]:
        return {r.rollout_id for r in rollouts(read_all(self.address))}

    def wait_for_good_rollouts(self, timeout_s: float = 30.0) -> bool:
        """Every good export's rollout reached the stream: nothing acknowledged was lost."""
        expected = {f"good-{n}" for n in range(self.good)}
        return wait_until(lambda: expected <= self.completed_rollouts(), timeout_s)


class PeakRss:
    """The largest RSS of a process seen while the `with` block runs (sampled every 10 ms)."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self.baseline = self.peak
        self._done = threading.Event()

    def __enter__(self) -> PeakRss:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._done.wait(0.01):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except psutil.Error:
                return

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return (self.peak - self.baseline) / MB


class GoodExporter:
    """Exports every 0.1 s on a thread while an attack runs; each must be answered within 1 s."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.served = 0
        self.failures: list[str] = []
        self._done = threading.Event()

    def __enter__(self) -> GoodExporter:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while True:
            try:
                self.collector.good_export(timeout_s=1.0)
                self.served += 1
            except grpc.RpcError as error:
                self.failures.append(f"{error.code()}: {error.details()}")
            if self._done.wait(0.1):
                return

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()
        assert not self.failures, f"good exports failed during the attack: {self.failures[:3]}"
        assert self.served >= 1


def raw_http(port: int, head: bytes, body: bytes = b"", *, read_timeout_s: float = 10.0) -> tuple[int, bytes]:
    """Send bytes as they are (no client library fixing them up); the status and body of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout_s) as connection:
        connection.sendall(head + body)
        return read_response(connection)


def read_response(connection: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        piece = connection.recv(65536)
        if not piece:
            raise ConnectionError(f"closed before an answer: {data!r}")
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = next(
        (int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
    )
    while len(body) < length:
        piece = connection.recv(65536)
        if not piece:
            break
        body += piece
    return status, body


def post_head(port: int, path: str = "/v1/traces", **headers: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Content-Type: application/x-protobuf"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
