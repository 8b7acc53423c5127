"""An unchanged OpenAI Agents SDK app on its default model (the Responses API), run by the worker against a
vLLM-like upstream (token ids only when asked, none on its Responses API): through the worker's gateway its
transitions carry the upstream's token ids, id for id, streamed and not; the SDK uploads nothing to OpenAI."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import textwrap

import pytest

from otel_lightning.task_client import TaskPoolClient
from otel_lightning.testing.openai_stub import chat_completion
from otel_lightning.worker import Worker, _opentelemetry_instrument
from otel_lightning.worker_setup import build_worker_parts
from tests.support import rollouts, run_until_done, transitions, wait_for_rollouts
from tests.train.test_worker import ONLY_OURS

# The SDK's default model (OpenAIResponsesModel on the default client from OPENAI_BASE_URL), a tool, and
# nothing about tracing. Prints whether the SDK's exporter to OpenAI got anything.
SDK_AGENT = textwrap.dedent(
    """
    import asyncio, sys
    from agents import Agent, Runner, function_tool
    from agents.tracing import processors

    @function_tool
    def calculator(expression: str) -> str:
        "Evaluate an arithmetic expression."
        return str(eval(expression, {"__builtins__": {}}))

    async def main(question: str, streamed: bool) -> str:
        agent = Agent(name="Math", instructions="Use the calculator.", tools=[calculator], model="stub")
        if not streamed:
            return str((await Runner.run(agent, question, max_turns=4)).final_output)
        result = Runner.run_streamed(agent, question, max_turns=4)
        async for _ in result.stream_events():
            pass
        return str(result.final_output)

    question = sys.stdin.read()
    print(asyncio.run(main(question, "--streamed" in sys.argv)))
    vendor = processors.default_processor()
    print("vendor queue:", vendor._queue.qsize(), "thread:", vendor._worker_thread is not None)
    """
)


def upstream_token_ids(received: list[tuple[str, dict]]) -> collections.Counter:
    """(prompt ids, response ids) of each chat completion the stub answered: what it returned, recomputed."""
    pairs: collections.Counter = collections.Counter()
    for path, body in received:
        if path.endswith("/chat/completions") and body.get("return_token_ids"):
            answer = chat_completion(body)
            pairs[(tuple(answer["prompt_token_ids"]), tuple(answer["choices"][0]["token_ids"]))] += 1
    return pairs


def answer_reward(task_input, output):
    """Named as tests.train.test_worker_agents_sdk:answer_reward."""
    return float("42" in output and "vendor queue: 0 thread: False" in output)


@pytest.mark.parametrize("streamed", [False, True], ids=["run", "run_streamed"])
def test_agents_sdk_default_model_gives_the_upstreams_token_ids(
    collector, otlp_export, openai_stub, tmp_path, streamed
):
    script = tmp_path / "sdk_agent.py"
    script.write_text(SDK_AGENT)
    command = ["python", str(script), *(["--streamed"] if streamed else [])]
    parts = build_worker_parts(
        command,
        collector=collector.address,
        openai_base_url=openai_stub.base_url,
        timeout_s=120,
        reward="tests.train.test_worker_agents_sdk:answer_reward",
    )
    parts.agent.env = dict(ONLY_OURS)  # OpenInference's Agents SDK instrumentor (off) would replace its processors
    worker = Worker(collector.address, parts.agent, concurrency=1, gateway=parts.gateway, reward=parts.reward)
    pool = TaskPoolClient(collector.address)
    before = len(openai_stub.received)
    pool.submit([("sdk", "What is 6*7?")])
    try:
        run_until_done(worker, pool, 1, timeout_s=150)
    finally:
        parts.gateway.stop()
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 1, timeout_s=20)
    [done] = rollouts(events)
    assert (done.status, done.total_reward) == ("succeeded", 1.0), done.error_message
    steps = transitions(events)
    calls = list(openai_stub.received)[before:]
    # The SDK called /v1/responses; the gateway served it through the upstream's chat completions.
    assert all(path.endswith("/chat/completions") for path, _ in calls) and len(calls) == 2
    expected = upstream_token_ids(calls)
    got = collections.Counter((tuple(s.prompt_token_ids), tuple(s.response_token_ids)) for s in steps)
    assert got == expected and sum(got.values()) == 2
    assert all(s.agent == "Math" for s in steps)  # our Agents SDK spans still name the agent


def test_no_already_instrumented_line_when_an_agent_starts():
    done = subprocess.run(
        [_opentelemetry_instrument(), sys.executable, "-c", "import openai"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **ONLY_OURS, **{f"OTEL_{kind}_EXPORTER": "none" for kind in ("TRACES", "METRICS", "LOGS")}},
    )
    assert done.returncode == 0, done.stderr
    assert "already instrumented" not in done.stderr


def test_an_in_process_agents_sdk_agent_under_the_worker_cli(collector, openai_stub):
    """`otel-lightning worker MODULE:FUNCTION`: the worker process instruments the SDK and the OpenAI client
    itself, turns the SDK's upload off, and the calls reach the gateway with their trace headers."""
    import signal
    from pathlib import Path

    from tests.support import wait_until

    before = len(openai_stub.received)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otel_lightning.cli",
            "worker",
            "--collector",
            collector.address,
            "--openai-base-url",
            openai_stub.base_url,
            "--concurrency",
            "1",
            "--reward",
            "tests.train.test_worker_agents_sdk:answer_reward",
            "tests.train.inprocess_sdk_agent:run",
        ],
        cwd=Path(__file__).parents[2],
        env={**os.environ, "OPENAI_API_KEY": "unused"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    pool = TaskPoolClient(collector.address)
    pool.submit([("sdk-in-process", "What is 6*7?")])
    try:
        assert wait_until(lambda: pool.stats()["done"] + pool.stats()["failed"] >= 1, 120), pool.stats()
    finally:
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    assert "1 succeeded, 0 failed" in output, output
    events = wait_for_rollouts(collector.address, 1, timeout_s=20)
    [done] = rollouts(events)
    assert (done.status, done.total_reward) == ("succeeded", 1.0), (done.error_message, output[-3000:])
    calls = list(openai_stub.received)[before:]
    assert len(calls) == 2 and all(path.endswith("/chat/completions") for path, _ in calls)
    steps = transitions(events)
    got = collections.Counter((tuple(s.prompt_token_ids), tuple(s.response_token_ids)) for s in steps)
    assert got == upstream_token_ids(calls)
    assert [s.agent for s in steps] == ["Math", "Math"]
