"""Done when, for real: a plain OpenAI-client agent whose only instrumentation is another project's,
run by `otel-lightning worker` (its gateway in front of a vLLM-like model that gives token ids only
when asked), gives one transition per call with the upstream's exact token ids and the client's
messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_lightning.task_client import TaskPoolClient
from otel_lightning.testing.openai_stub import StubOpenAIServer, _text_of, token_ids
from tests.support import rollouts, transitions, wait_for_rollouts

RECORDER = Path(__file__).with_name("dialect_recorder.py")


@pytest.mark.parametrize("dialect", ["openinference", "openllmetry", "genai"])
def test_a_third_party_instrumented_agent_run_by_the_worker_trains(dialect: str, collector) -> None:
    with StubOpenAIServer(policy_version=None) as stub:
        TaskPoolClient(collector.address).submit([(f"calc-{dialect}", "What is 17 * 23?")])
        env = {**os.environ, "OPENAI_API_KEY": "unused", "OTEL_BSP_SCHEDULE_DELAY": "50"}
        env.pop("LIGHTNING_REQUEST_TOKEN_IDS", None)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "otel_lightning.cli",
                "worker",
                "--collector",
                collector.address,
                "--openai-base-url",
                stub.base_url,
                # Only the agent's own (third-party) instrumentation: none of ours in its process.
                "--no-auto-instrument",
                "--",
                sys.executable,
                str(RECORDER),
                dialect,
                "-",
                f"otlp:{collector.address}",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            events = wait_for_rollouts(collector.address, 1, timeout_s=90)
        finally:
            worker.terminate()
            _, errors = worker.communicate(timeout=30)
        (completed,) = rollouts(events)
        assert completed.status == "succeeded", (completed, errors[-3000:])
        calls = [body for path, body in stub.received if path.endswith("/chat/completions")]
    steps = transitions(events)
    assert [t.step for t in steps] == [0, 1] and completed.steps_without_token_ids == 0
    for step, body in zip(steps, calls, strict=True):
        prompt = "\n".join(f"{m.get('role')}: {_text_of(m.get('content'))}" for m in body["messages"])
        assert list(step.prompt_token_ids) == token_ids(prompt)
    assert bytes(steps[1].response_token_ids).decode() == "The answer is 391."
    assert [m["role"] for m in json.loads(steps[1].state_json)["messages"]] == ["system", "user", "assistant", "tool"]
    assert json.loads(steps[0].action_json)["tool_calls"][0]["function"]["name"] == "calculator"
