"""The demo's trainer as a Ray job: a driver on a running Ray cluster, its agents in worker actors."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the ray extra is part of `make install`")

from tests.support import free_port

REPO = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).with_name("ray"))
# A throwaway cluster on 127.0.0.1: no token authentication, no usage reports.
RAY_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture
def ray_cluster():
    """A one-node cluster started the way a real one is (`ray start --head`); `--block` ties its
    processes to this one, so stopping it stops only this cluster (not others on the machine)."""
    port = free_port()
    # Its own temp dir: the cluster's files (and the "current cluster" pointer) stay out of /tmp/ray.
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    head = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--port={port}",
            "--num-cpus=2",
            "--include-dashboard=false",
            f"--temp-dir={temp_dir}",
        ],
        env=RAY_ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            assert head.poll() is None and time.monotonic() < deadline, "ray start --head did not come up"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        head.wait(timeout=60)
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_the_demo_trains_with_its_agents_in_ray_worker_actors(ray_cluster, tmp_path):
    env = {**RAY_ENV, "RAY_ADDRESS": ray_cluster}
    # A Ray job is a driver on the cluster: `ray job submit -- python examples/calc_agent/train.py ...`
    # runs this very command with RAY_ADDRESS set (the job server is not needed to test it).
    done = subprocess.run(
        [
            sys.executable,
            "examples/calc_agent/train.py",
            *("--out", str(tmp_path), "--steps", "1", "--tasks-per-step", "2", "--group-size", "2"),
            *("--heldout", "2", "--warm-start-steps", "0", "--hidden", "32", "--layers", "1"),
            *("--workers", "2", "--ray-workers", "2"),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [point["rollouts"] for point in summary["curve"]] == [4]
    assert summary["stragglers"] == 0
    assert (tmp_path / "checkpoint.pt").exists()
