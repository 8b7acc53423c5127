"""The policy server's limits, over loopback against `otel-lightning policy-server` in its own process:
an oversized prompt fails alone (the requests batched with it are answered), bodies are bounded before
they are parsed, and bad arguments get a 400 that names them; memory measured from outside."""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import psutil
import pytest

from tests.support import ChildProcess, free_port, wait_until

MB = 1024 * 1024
GOOD = {"model": "p", "messages": [{"role": "user", "content": "2+3?"}], "max_tokens": 4}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, psutil.Process]]:
    port = free_port()
    child = ChildProcess(
        [sys.executable, "-m", "otel_lightning.cli", "policy-server", "--model", "tiny", "--port", str(port)]
    ).start()
    base = f"http://127.0.0.1:{port}/v1"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/models", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        assert wait_until(up, 120), "the policy server did not come up"
        yield base, psutil.Process(child.process.pid)
    finally:
        child.stop()


def chat(base: str, body: dict, timeout_s: float = 60) -> httpx.Response:
    return httpx.post(f"{base}/chat/completions", json=body, timeout=timeout_s)


def test_an_oversized_prompt_fails_alone(server):
    """Before: one 2-20 MB prompt failed every good request batched with it (500) and held ~2.6 GB."""
    base, process = server
    rss_before = process.memory_info().rss
    peak = [rss_before]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    huge = {**GOOD, "messages": [{"role": "user", "content": "x" * (2 * MB)}]}
    with ThreadPoolExecutor(12) as pool:
        bad = [pool.submit(chat, base, huge) for _ in range(2)]
        good = [pool.submit(chat, base, {**GOOD, "seed": n}) for n in range(10)]
        answers = [f.result() for f in good]
        refused = [f.result() for f in bad]
    done.set()
    sampler.join()
    assert [a.status_code for a in answers] == [200] * 10
    for answer in refused:
        assert answer.status_code == 400
        assert "context" in answer.json()["error"]["message"]
    assert (peak[0] - rss_before) / MB < 200


def test_bodies_over_the_limit_are_413_before_parsing(server):
    base, process = server
    port = int(base.split(":")[2].split("/")[0])
    rss_before = process.memory_info().rss
    body = json.dumps({**GOOD, "messages": [{"role": "user", "content": "x" * (20 * MB)}]}).encode()
    answer = httpx.post(f"{base}/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 413
    assert "4194304-byte limit" in answer.json()["error"]["message"]
    # Chunked: no length declared; counted as it comes.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        connection.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * MB
        try:
            for _ in range(20):
                connection.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # answered and closed
        assert connection.recv(4096).startswith(b"HTTP/1.1 413")
    assert (process.memory_info().rss - rss_before) / MB < 100
    assert chat(base, GOOD).status_code == 200


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"max_tokens": -5}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_completion_tokens": -1}, "max_completion_tokens"),
        ({"max_tokens": 100_000}, "max_tokens"),
        ({"temperature": -1}, "temperature"),
    ],
)
def test_bad_arguments_are_400_naming_them(server, change, named):
    base, _ = server
    answer = chat(base, {**GOOD, **change})
    assert answer.status_code == 400
    assert named in answer.json()["error"]["message"]


def test_a_length_that_is_not_a_number_is_400(server):
    base, _ = server
    port = int(base.split(":")[2].split("/")[0])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n{}")
        assert connection.recv(4096).startswith(b"HTTP/1.1 400")
