"""The worker's model gateway, reward functions and task files, against a real collector and the vLLM-like stub
(token ids only when asked): agents with no OpenTelemetry at all still give exact token ids."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from otel_lightning.loading import LoadError, load_callable
from otel_lightning.task_client import TaskPoolClient
from otel_lightning.testing.openai_stub import token_ids
from otel_lightning.worker import Worker
from otel_lightning.worker_gateway import WorkerGateway
from otel_lightning.worker_setup import build_worker_parts
from tests.support import rollouts, run_until_done, transitions, wait_for_rollouts

# Raw HTTP, no openai package, no OpenTelemetry; run as plain `python` (no opentelemetry-instrument).
PLAIN_AGENT = textwrap.dedent(
    """
    import json, os, sys, urllib.request

    question = sys.stdin.read()
    assert question == os.environ["LIGHTNING_TASK"], (question, os.environ["LIGHTNING_TASK"])
    assert "opentelemetry" not in sys.modules
    request = urllib.request.Request(
        os.environ["OPENAI_BASE_URL"] + "/chat/completions",
        data=json.dumps({"model": "stub", "messages": [{"role": "user", "content": question}]}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]},
    )
    reply = json.load(urllib.request.urlopen(request))
    # The answer the agent asked for (none of the ids the gateway asked for on its behalf).
    assert not reply["choices"][0].get("token_ids") and not reply.get("prompt_token_ids"), reply
    print(reply["choices"][0]["message"]["content"])
    print("interpreter:", sys.executable)
    """
)


def exact_answer(task_input, output):
    """The reward function the tests name as tests.train.test_worker_gateway:exact_answer."""
    return {"correct": float("42" in output), "own_interpreter": float(f"interpreter: {sys.executable}" in output)}


def failing_reward(task_input, output):
    raise KeyError("expected")


def worker_for(collector, command, upstream, reward=None, auto_instrument=False, concurrency=2):
    parts = build_worker_parts(
        command,
        collector=collector.address,
        openai_base_url=upstream,
        timeout_s=60,
        gateway=True,
        reward=reward,
        auto_instrument=auto_instrument,
    )
    worker = Worker(collector.address, parts.agent, concurrency=concurrency, gateway=parts.gateway, reward=parts.reward)
    return worker, parts


def test_an_agent_without_opentelemetry_gives_exact_token_ids_and_a_reward(
    collector, otlp_export, openai_stub, tmp_path
):
    script = tmp_path / "plain_agent.py"
    script.write_text(PLAIN_AGENT)
    # `python`, not sys.executable: the worker runs its own interpreter whatever PATH says.
    worker, parts = worker_for(
        collector, ["python", str(script)], openai_stub.base_url, reward="tests.train.test_worker_gateway:exact_answer"
    )
    pool = TaskPoolClient(collector.address)
    pool.submit([("six-sevens", "What is 6*7?")], group_size=2)
    try:
        run_until_done(worker, pool, 2)
    finally:
        parts.gateway.stop()
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 2)
    done = rollouts(events)
    assert [(r.status, r.total_reward) for r in done] == [("succeeded", 2.0)] * 2, [r.error_message for r in done]
    steps = transitions(events)
    assert len(steps) == 2
    for step in steps:
        assert list(step.prompt_token_ids) == token_ids("user: What is 6*7?")
        assert list(step.response_token_ids) == token_ids("The answer is 42.")
        assert list(step.response_logprobs) == [-0.25] * len(token_ids("The answer is 42."))
    assert {s.rollout_id for s in steps} == {r.rollout_id for r in done}
    # The agent asked for no token ids; the gateway did, upstream.
    chat = [body for path, body in openai_stub.received if path.endswith("/chat/completions")]
    assert chat[-1]["return_token_ids"] is True


def test_a_raising_reward_function_fails_the_rollout_with_the_reason(collector, otlp_export, caplog):
    def agent(task):
        return f"answer to {task}"

    parts = build_worker_parts(
        ["tests.train.test_worker_gateway:exact_answer"],  # any importable function: replaced below
        collector=collector.address,
        openai_base_url=None,
        timeout_s=30,
        gateway=False,
        reward="tests.train.test_worker_gateway:failing_reward",
    )
    worker = Worker(collector.address, agent, concurrency=1, reward=parts.reward)
    pool = TaskPoolClient(collector.address)
    pool.submit([("bad-reward", {"q": 1})])
    run_until_done(worker, pool, 1)
    sample = collector.task_pool.sample("bad-reward", 0)
    assert sample["status"] == "failed"
    assert "reward function tests.train.test_worker_gateway:failing_reward raised KeyError" in sample["error"]
    assert "bad-reward" in caplog.text  # logged with the task id
    otlp_export.flush()
    [done] = rollouts(wait_for_rollouts(collector.address, 1))
    assert (done.status, done.error_type) == ("failed", "otel_lightning.reward_function.RewardFunctionError")
    assert done.total_reward == 0.0 and "no reward" in done.error_message


def test_an_in_process_agents_return_value_is_scored(collector, otlp_export):
    async def agent(task):
        return "The answer is 42." if task["q"] == "6*7" else "no idea"

    parts = build_worker_parts(
        ["tests.train.test_worker_gateway:exact_answer"],
        collector=collector.address,
        openai_base_url=None,
        timeout_s=30,
        gateway=False,
        reward="tests.train.test_worker_gateway:exact_answer",
    )
    worker = Worker(collector.address, agent, concurrency=2, reward=parts.reward)
    pool = TaskPoolClient(collector.address)
    pool.submit([("right", {"q": "6*7"}), ("wrong", {"q": "?"})])
    run_until_done(worker, pool, 2)
    otlp_export.flush()
    by_task = {r.task_id: r for r in rollouts(wait_for_rollouts(collector.address, 2))}
    assert (by_task["right"].total_reward, by_task["wrong"].total_reward) == (1.0, 0.0)


def test_load_callable_says_what_did_not_resolve():
    assert load_callable("json:dumps") is json.dumps
    with pytest.raises(LoadError, match="expected MODULE:FUNCTION"):
        load_callable("json.dumps")
    with pytest.raises(LoadError, match="cannot import module 'no_such_module_x'"):
        load_callable("no_such_module_x:f", "reward function")
    with pytest.raises(LoadError, match="has no 'nope'"):
        load_callable("json:nope")
    with pytest.raises(LoadError, match="not a callable"):
        load_callable("json:__doc__")


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otel_lightning.cli", *args], capture_output=True, text=True, timeout=120
    )


def test_submit_puts_a_task_file_in_the_pool_and_refuses_a_bad_line_whole(collector, tmp_path):
    good = tmp_path / "tasks.jsonl"
    good.write_text(
        '{"task_id": "a", "input": "What is 1+1?"}\n\n{"task_id": "b", "input": {"q": "2*3"}, "group_size": 3}\n'
    )
    done = run_cli("submit", "--collector", collector.address, str(good))
    assert done.returncode == 0, done.stderr
    assert "2 new" in done.stdout
    pool = TaskPoolClient(collector.address)
    assert len(pool.sample_states("b")) == 3 and len(pool.sample_states("a")) == 1

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "c", "input": 1}\n{"task_id": "d"}\n')
    refused = run_cli("submit", "--collector", collector.address, str(bad))
    assert refused.returncode != 0
    assert f"{bad}:2: task 'd' has no input" in refused.stderr
    assert pool.sample_states("c") == []  # nothing of the file went in


def test_an_in_process_agent_gets_token_ids_through_the_gateway(collector, otlp_export, openai_stub, monkeypatch):
    import openai

    monkeypatch.delenv("LIGHTNING_REQUEST_TOKEN_IDS", raising=False)  # the client asks for nothing
    gateway = WorkerGateway(openai_stub.base_url).start()
    # One base URL for the whole process: the calls' W3C headers (sent by our OpenAI instrumentor) say whose.
    client = openai.AsyncOpenAI(base_url=gateway.base_url, api_key="unused", max_retries=0)

    async def agent(task):
        reply = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": task}])
        return reply.choices[0].message.content

    worker = Worker(collector.address, agent, concurrency=2, gateway=gateway)
    pool = TaskPoolClient(collector.address)
    pool.submit([("a", "What is 6*7?"), ("b", "What is 2+3?")])
    try:
        run_until_done(worker, pool, 2)
    finally:
        gateway.stop()
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 2)
    steps = {s.task_id: s for s in transitions(events)}
    assert len(transitions(events)) == 2  # the client's span and the gateway's: one step per call
    for task_id, question, answer in (("a", "What is 6*7?", "42"), ("b", "What is 2+3?", "5")):
        assert list(steps[task_id].prompt_token_ids) == token_ids(f"user: {question}")
        assert list(steps[task_id].response_token_ids) == token_ids(f"The answer is {answer}.")


def test_worker_cli_refuses_a_reward_it_cannot_load(collector):
    done = run_cli("worker", "--collector", collector.address, "--reward", "no_such_rewards:f", "--", "python", "x.py")
    assert done.returncode != 0
    assert "cannot import module 'no_such_rewards' for the reward function 'no_such_rewards:f'" in done.stderr


@pytest.mark.parametrize(("server_reports", "expected"), [(None, "7"), ("stub-1", "stub-1")])
def test_through_the_gateway_a_tasks_policy_version_stands_in_for_the_servers(
    collector, otlp_export, tmp_path, server_reports, expected
):
    from otel_lightning.testing.openai_stub import StubOpenAIServer

    script = tmp_path / "plain_agent.py"
    script.write_text(PLAIN_AGENT)
    with StubOpenAIServer(policy_version=server_reports) as model_server:
        # No default model server: the task names its own, and the gateway starts in front of it.
        worker, parts = worker_for(collector, ["python", str(script)], None, concurrency=1)
        pool = TaskPoolClient(collector.address)
        pool.submit([("v", "What is 6*7?")], openai_base_url=model_server.base_url, policy_version="7")
        try:
            run_until_done(worker, pool, 1)
        finally:
            parts.gateway.stop()
    otlp_export.flush()
    (step,) = transitions(wait_for_rollouts(collector.address, 1))
    assert step.policy_version == expected
    assert list(step.response_token_ids) == token_ids("The answer is 42.")
