"""Rollout workers as Ray actors on a local Ray cluster, claiming tasks from a real collector."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from otel_lightning.task_client import TaskPoolClient
from tests.support import rollouts, transitions, wait_for_rollouts

ray = pytest.importorskip("ray", reason="the ray extra is part of `make install`")

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        address="local",  # a new cluster of its own, whatever else runs on this machine
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(REPO), "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "openai_agents"}},
    )
    yield
    ray.shutdown()


def test_three_ray_workers_run_the_calc_agent_for_every_task(local_ray, collector, openai_stub):
    from otel_lightning.ray_workers import RayWorkerFleet

    pool = TaskPoolClient(collector.address)
    # The calc agent's reward is an exact match; the stub answers in a sentence.
    questions = {f"q{index}": (f"What is {index + 2} * 7?", f"The answer is {(index + 2) * 7}.") for index in range(6)}
    fleet = RayWorkerFleet(
        collector.address,
        ["examples.calc_agent.agent:run"],
        count=3,
        concurrency=2,
        openai_base_url=openai_stub.base_url,
        num_cpus_per_worker=0.5,
    ).start()
    try:
        # Tasks go in once every actor is up and waiting for work: submitted earlier, the first actor
        # to finish importing could take all of them before the others ask.
        pool.submit(
            [(task_id, {"question": question, "answer": answer}) for task_id, (question, answer) in questions.items()],
            group_size=2,
        )
        deadline = time.monotonic() + 120
        while pool.stats().get("done", 0) < 12:
            assert time.monotonic() < deadline, pool.stats()
            time.sleep(0.1)
    finally:
        stats = fleet.stop()
    assert sum(s["succeeded"] for s in stats) == 12 and not any(s["failed"] for s in stats)
    assert sum(1 for s in stats if s["succeeded"]) >= 2  # the work was shared, not done by one actor
    events = wait_for_rollouts(collector.address, 12, timeout_s=30)
    done = rollouts(events)
    assert len(done) == 12 and {r.status for r in done} == {"succeeded"}
    assert {r.task_id for r in done} == set(questions)
    # The stub answers through the calculator: two LLM calls, each with the stub's token ids.
    steps = transitions(events)
    assert len(steps) == 24 and all(t.response_token_ids for t in steps)
    assert all(r.has_reward for r in done), [(r.total_reward, r.has_reward) for r in done]
    assert sum(r.total_reward for r in done) == 12
