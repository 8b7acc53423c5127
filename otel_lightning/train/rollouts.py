"""Running tasks through the pool and reading back whole groups: what every stage and evaluation does."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from otel_lightning.optimize.statistics import confidence_interval
from otel_lightning.train.services import TrainingServices
from otel_lightning.train.task_source import TaskRecord
from otel_lightning.train.trainer import RolloutRecord, rollout_stats


def run_tasks(
    services: TrainingServices,
    tasks: Sequence[TaskRecord],
    *,
    label: str,
    group_size: int,
    timeout_s: float,
    openai_base_url: str = "",
) -> dict[str, list[RolloutRecord]]:
    """Each task `group_size` times under the pool id `LABEL/TASK_ID`; the groups by pool id."""
    assert services.pool is not None and services.groups is not None
    submitted = []
    for record in tasks:
        pool_id = f"{label}/{record.task_id}"
        services.records[pool_id] = record
        submitted.append((pool_id, record.input))
    services.pool.submit(submitted, group_size=group_size, openai_base_url=openai_base_url)
    collected = services.groups.collect(
        {pool_id: group_size for pool_id, _ in submitted}, timeout_s, abort=services.watch.reason
    )
    services.span_processor.force_flush()
    services.groups.ack_consumed()
    return collected


def evaluate(
    services: TrainingServices, tasks: Sequence[TaskRecord], *, label: str, samples: int, greedy: bool, timeout_s: float
) -> dict[str, Any]:
    """Mean reward over the tasks (a rollout that did not succeed counts 0), its 95% interval over tasks,
    the success rate and the mean per agent: `samples` sampled answers per task, or one greedy answer."""
    policy = services.policy
    policy.greedy = greedy
    try:
        collected = run_tasks(services, tasks, label=label, group_size=1 if greedy else samples, timeout_s=timeout_s)
    finally:
        policy.greedy = False
    expected = 1 if greedy else samples
    per_task = []
    records = []
    for record in tasks:
        members = collected.get(f"{label}/{record.task_id}", [])
        records += members
        scores = [m.reward if m.status == "succeeded" else 0.0 for m in members]
        per_task.append(sum(scores) / expected)  # a missing rollout counts 0 too
    interval = confidence_interval(per_task) or (0.0, 0.0)
    statuses = rollout_stats(records)["statuses"]
    return {
        "reward": sum(per_task) / max(len(per_task), 1),
        "interval_95": [round(interval[0], 4), round(interval[1], 4)],
        "success_rate": statuses.get("succeeded", 0) / max(len(tasks) * expected, 1),
        "statuses": statuses,
        "agents": {name: figures["reward_mean"] for name, figures in rollout_stats(records)["agents"].items()},
    }


def evaluate_both(
    services: TrainingServices, tasks: Sequence[TaskRecord], *, label: str, samples: int, greedy: bool, timeout_s: float
) -> dict[str, Any]:
    """The held-out figures sampled (the headline: the policy as it acts in training) and, if asked, greedy."""
    sampled = evaluate(services, tasks, label=label, samples=samples, greedy=False, timeout_s=timeout_s)
    if greedy:
        greedy_figures = evaluate(services, tasks, label=f"{label}-greedy", samples=1, greedy=True, timeout_s=timeout_s)
        sampled["greedy"] = greedy_figures["reward"]
        sampled["greedy_interval_95"] = greedy_figures["interval_95"]
        sampled["greedy_agents"] = greedy_figures["agents"]
    return sampled
