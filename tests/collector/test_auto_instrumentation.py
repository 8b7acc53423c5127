"""`opentelemetry-instrument python agent.py` with the endpoint at the collector: nothing else needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support import rollouts, transitions, wait_for_rollouts

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def test_quickstart_agent_under_opentelemetry_instrument(collector, openai_stub):
    env = {
        **os.environ,
        "OPENAI_BASE_URL": openai_stub.base_url,
        "OPENAI_API_KEY": "unused",
        "OTEL_SERVICE_NAME": "quickstart-test",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector.address}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        # The stub, as vLLM, gives token ids only when asked (the worker's gateway asks for agents it runs).
        "LIGHTNING_REQUEST_TOKEN_IDS": "true",
    }
    run = subprocess.run(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(ROOT / "examples/quickstart/agent.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert "Error" not in run.stderr, run.stderr  # metrics/logs exports are accepted too

    events = wait_for_rollouts(collector.address, 4)
    assert sorted((t.task_id, t.reward) for t in transitions(events)) == [
        ("quickstart-0", 1.0),
        ("quickstart-1", 1.0),
        ("quickstart-2", 1.0),
        ("quickstart-3", 0.0),
    ]
    assert all(len(t.response_token_ids) > 0 for t in transitions(events))
    assert {r.status for r in rollouts(events)} == {"succeeded"}

    cli = subprocess.run(
        [str(BIN / "otel-lightning"), "transitions", "--collector", collector.address, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    printed = [json.loads(line) for line in cli.stdout.splitlines()]
    steps = [p for p in printed if p["type"] == "transition"]
    assert len(steps) == 4 and len([p for p in printed if p["type"] == "rollout"]) == 4
    first = steps[0]
    for key in (
        "task_id",
        "rollout_id",
        "step",
        "agent",
        "state",
        "action",
        "prompt_token_ids",
        "response_token_ids",
        "reward",
        "done",
        "policy_version",
        "rollout_status",
    ):
        assert key in first, key
    assert first["state"]["messages"][0] == {"role": "system", "content": "Answer briefly."}
    assert first["policy_version"] == "stub-1"


def test_transitions_follow_prints_new_rollouts_as_they_complete(collector):
    from tests.collector.test_ingest_robustness import exporter
    from tests.support import SpanFactory, export_request

    follower = subprocess.Popen(
        [str(BIN / "otel-lightning"), "transitions", "--collector", collector.address, "--follow", "--json"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        for index in range(2):
            spans = SpanFactory(rollout_id=f"live-{index}")
            exporter(collector.address)(export_request(spans.llm("q", "a"), spans.reward(1.0), spans.root()))
        lines = [json.loads(follower.stdout.readline()) for _ in range(4)]
    finally:
        follower.terminate()
        follower.wait(10)
    assert [(line["type"], line["rollout_id"]) for line in lines] == [
        ("transition", "live-0"),
        ("rollout", "live-0"),
        ("transition", "live-1"),
        ("rollout", "live-1"),
    ]
