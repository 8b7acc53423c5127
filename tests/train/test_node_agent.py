"""A JavaScript agent (examples/node_agent: the `openai` npm package, a calculator tool, no otel-lightning code)
trained through the real CLI: `otel-lightning submit`, `otel-lightning worker --reward ... -- node agent.js` with
its gateway, the vLLM-like stub. Its transitions carry the upstream's token ids id for id, and the reward."""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from otel_lightning.task_client import TaskPoolClient
from tests.support import rollouts, transitions, wait_for_rollouts, wait_until
from tests.train.test_worker_agents_sdk import upstream_token_ids

NODE_AGENT = Path(__file__).parents[2] / "examples" / "node_agent"


@pytest.fixture(scope="module")
def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node not found: the JavaScript example needs Node 20+ on PATH")
    if not (NODE_AGENT / "node_modules" / "openai").is_dir():
        pytest.fail("examples/node_agent has no node_modules: run `make install` (npm ci)")
    return found


def test_node_agent_through_submit_worker_and_gateway(node, collector, openai_stub, tmp_path):
    tasks = tmp_path / "tasks.jsonl"
    tasks.write_text(
        "\n".join(
            json.dumps(task)
            for task in (
                {"task_id": "sum", "input": {"question": "What is 17+25?", "answer": "42"}, "group_size": 2},
                {"task_id": "product", "input": {"question": "What is 6*7?", "answer": "41"}},
            )
        )
    )
    cli = [sys.executable, "-m", "otel_lightning.cli"]
    submitted = subprocess.run(
        [*cli, "submit", "--collector", collector.address, str(tasks)], capture_output=True, text=True, timeout=60
    )
    assert submitted.returncode == 0, submitted.stderr
    before = len(openai_stub.received)
    worker = subprocess.Popen(
        [
            *cli,
            "worker",
            "--collector",
            collector.address,
            "--openai-base-url",
            openai_stub.base_url,
            "--concurrency",
            "2",
            "--reward",
            "examples.node_agent.rewards:correct",
            "--",
            "node",
            str(NODE_AGENT / "agent.js"),
        ],
        cwd=NODE_AGENT.parents[1],
        env={**os.environ, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},  # the worker's flag, not this, is used
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pool = TaskPoolClient(collector.address)
    try:
        assert wait_until(lambda: pool.stats()["done"] + pool.stats()["failed"] >= 3, 90), pool.stats()
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    assert "3 succeeded, 0 failed" in output, output
    events = wait_for_rollouts(collector.address, 3, timeout_s=20)
    by_task = collections.defaultdict(list)
    for done in rollouts(events):
        by_task[done.task_id].append((done.status, done.total_reward))
    assert by_task == {"sum": [("succeeded", 1.0)] * 2, "product": [("succeeded", 0.0)]}
    calls = list(openai_stub.received)[before:]
    assert len(calls) == 6 and all(body["return_token_ids"] for _, body in calls)  # the gateway asked
    steps = transitions(events)
    got = collections.Counter((tuple(s.prompt_token_ids), tuple(s.response_token_ids)) for s in steps)
    assert got == upstream_token_ids(calls) and sum(got.values()) == 6
    assert all(s.response_logprobs for s in steps)
