"""Workers against a real collector: in-process and subprocess agents, crashes and timeouts."""

from __future__ import annotations

import sys
import textwrap

import pytest

from otel_lightning.task_client import TaskPoolClient
from otel_lightning.testing.openai_stub import StubOpenAIServer
from otel_lightning.worker import SubprocessAgent, Worker
from tests.support import rollouts, run_until_done, transitions, wait_for_rollouts

# The dev environment has every framework's and vendor's instrumentor installed (to test composing with them);
# a user's agent has ours. Those others cost each agent seconds of imports on a loaded 2-core machine.
ONLY_OURS = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai,openai_agents,langchain,autogen_agentchat"}

AGENT = textwrap.dedent(
    """
    import json, os, sys, time
    import openai
    import otel_lightning as ol

    task = json.load(sys.stdin)
    assert json.loads(os.environ["LIGHTNING_TASK"]) == task
    resource = dict(pair.split("=", 1) for pair in os.environ["OTEL_RESOURCE_ATTRIBUTES"].split(","))
    assert resource["lightning.task.id"] in ("ok", "crash", "hang") and resource["lightning.rollout.id"]
    if task["mode"] == "crash":
        print("something broke in the agent", file=sys.stderr)
        sys.exit(3)
    if task["mode"] == "hang":
        time.sleep(300)
    client = openai.OpenAI()
    reply = client.chat.completions.create(model="stub", messages=[{"role": "user", "content": task["question"]}])
    ol.emit_reward(float("42" in reply.choices[0].message.content))
    """
)


def test_subprocess_agent_outcomes_become_rollout_statuses(collector, otlp_export, openai_stub, tmp_path):
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    agent = SubprocessAgent(
        # 60 s: an agent under opentelemetry-instrument takes 10-20 s to start on a loaded 2-core machine.
        [sys.executable, str(script)],
        timeout_s=60,
        openai_base_url=openai_stub.base_url,
        collector=collector.address,
        env=ONLY_OURS,
    )
    worker = Worker(collector.address, agent, concurrency=3, lease_s=30)
    pool = TaskPoolClient(collector.address)
    pool.submit(
        [("ok", {"mode": "ok", "question": "What is 6*7?"}), ("crash", {"mode": "crash"}), ("hang", {"mode": "hang"})]
    )
    run_until_done(worker, pool, 3, timeout_s=120)
    otlp_export.flush()
    samples = {task: collector.task_pool.sample(task, 0) for task in ("ok", "crash", "hang")}
    assert samples["ok"]["status"] == "succeeded"
    assert samples["crash"]["status"] == "failed"
    assert "exited with code 3" in samples["crash"]["error"]
    assert "something broke in the agent" in samples["crash"]["error"]
    assert samples["hang"]["status"] == "timeout"
    assert "ran past 60s" in samples["hang"]["error"]  # the subprocess limit, not the worker's

    events = wait_for_rollouts(collector.address, 3)
    by_task = {r.task_id: r for r in rollouts(events)}
    assert by_task["ok"].status == "succeeded" and by_task["ok"].total_reward == 1.0
    assert (by_task["crash"].status, by_task["crash"].error_type) == (
        "failed",
        "otel_lightning.worker.AgentProcessError",
    )
    assert by_task["hang"].status == "timeout" and by_task["hang"].error_type == "TimeoutError"
    # The subprocess's LLM span joined the worker's rollout through TRACEPARENT/BAGGAGE.
    [step] = transitions(events)
    assert step.rollout_id == samples["ok"]["rollout_id"]
    assert step.trace_id and bytes(step.response_token_ids).decode() == "The answer is 42."


def test_in_process_worker_runs_sync_and_async_agents_concurrently(collector, otlp_export, openai_stub):
    import asyncio

    import openai

    import otel_lightning as ol

    client = openai.AsyncOpenAI(base_url=openai_stub.base_url, api_key="unused")

    async def agent(task):
        reply = await client.chat.completions.create(model="m", messages=[{"role": "user", "content": task["q"]}])
        await asyncio.sleep(0.05)
        ol.emit_reward(float(task["expect"] in reply.choices[0].message.content))

    worker = Worker(collector.address, agent, concurrency=4)
    pool = TaskPoolClient(collector.address)
    pool.submit([(f"t{i}", {"q": f"{i}+{i}?", "expect": str(2 * i)}) for i in range(4)], group_size=2)
    run_until_done(worker, pool, 8)
    otlp_export.flush()
    done = rollouts(wait_for_rollouts(collector.address, 8))
    assert sorted(r.task_id for r in done) == sorted([f"t{i}" for i in range(4)] * 2)
    assert all(r.status == "succeeded" and r.total_reward == 1.0 for r in done)
    assert worker.stats.succeeded == 8


@pytest.mark.parametrize("failure", ["raise"])
def test_agent_exception_is_a_failed_rollout_not_a_requeue(collector, otlp_export, failure):
    def agent(task):
        raise ValueError("bad answer format")

    worker = Worker(collector.address, agent, concurrency=1)
    pool = TaskPoolClient(collector.address)
    pool.submit([("x", {})])
    run_until_done(worker, pool, 1)
    sample = collector.task_pool.sample("x", 0)
    assert (sample["state"], sample["status"], sample["attempts"]) == ("done", "failed", 1)
    assert "bad answer format" in sample["error"]


def test_worker_task_timeout_ends_the_rollout_as_timeout(collector, otlp_export):
    import asyncio

    async def slow_agent(task):
        await asyncio.sleep(30)

    worker = Worker(collector.address, slow_agent, concurrency=1, task_timeout_s=0.3)
    pool = TaskPoolClient(collector.address)
    pool.submit([("slow", {})])
    run_until_done(worker, pool, 1, timeout_s=20)
    sample = collector.task_pool.sample("slow", 0)
    assert (sample["status"], sample["attempts"]) == ("timeout", 1)
    assert "ran past the worker's 0.3s task timeout" in sample["error"]
    otlp_export.flush()
    [done] = rollouts(wait_for_rollouts(collector.address, 1))
    assert (done.status, done.error_type) == ("timeout", "TimeoutError")


@pytest.mark.parametrize(("server_reports", "expected"), [(None, "7"), ("stub-1", "stub-1")])
def test_a_tasks_policy_version_is_recorded_unless_the_server_names_one(
    collector, otlp_export, tmp_path, server_reports, expected
):
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    with StubOpenAIServer(policy_version=server_reports) as model_server:
        agent = SubprocessAgent([sys.executable, str(script)], timeout_s=30, collector=collector.address, env=ONLY_OURS)
        worker = Worker(collector.address, agent, concurrency=1)
        pool = TaskPoolClient(collector.address)
        pool.submit(
            [("ok", {"mode": "ok", "question": "What is 6*7?"})],
            openai_base_url=model_server.base_url,
            policy_version="7",
        )
        run_until_done(worker, pool, 1)
    otlp_export.flush()
    (step,) = transitions(wait_for_rollouts(collector.address, 1))
    assert step.policy_version == expected
