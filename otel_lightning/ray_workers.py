"""Rollout workers as Ray actors: `otel-lightning worker --ray 8 ...` on a Ray cluster.

Each actor is one worker process (its own tracing to the collector, its own agent, `concurrency`
task slots) that claims tasks from the collector's pool, exactly like `otel-lightning worker`;
Ray places the actors over the cluster's machines. The trainer stays where it is (or runs as a
Ray job); the collector is the meeting point, so nothing else changes.

    fleet = RayWorkerFleet("10.0.0.5:4317", ["my_agent:run"], count=8).start()
    ...
    stats = fleet.stop()
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import ray

from otel_lightning.worker import Worker
from otel_lightning.worker_setup import build_worker_parts, flush_worker_tracing, setup_worker_tracing


class WorkerActor:
    """One worker process; Ray makes it an actor (`ray.remote(WorkerActor)`)."""

    def __init__(
        self,
        collector: str,
        command: Sequence[str],
        *,
        name: str,
        concurrency: int,
        lease_s: float,
        task_timeout_s: float,
        openai_base_url: str | None,
        gateway: bool = True,
        reward: str | None = None,
    ) -> None:
        setup_worker_tracing(collector)
        # Each actor has its own model gateway, as each `otel-lightning worker` process does.
        self.parts = build_worker_parts(
            command,
            collector=collector,
            openai_base_url=openai_base_url,
            timeout_s=task_timeout_s,
            gateway=gateway,
            reward=reward,
        )
        self.worker = Worker(
            collector,
            self.parts.agent,
            concurrency=concurrency,
            lease_s=lease_s,
            task_timeout_s=task_timeout_s,
            name=name,
            gateway=self.parts.gateway,
            reward=self.parts.reward,
        )
        self.thread = self.worker.start_in_thread()

    def stats(self) -> dict[str, int]:
        return dataclasses.asdict(self.worker.stats)

    def stop(self) -> dict[str, int]:
        """Finish the rollouts in progress, export their spans, and return the counts."""
        self.worker.stop()
        self.thread.join()
        if self.parts.gateway is not None:
            self.parts.gateway.stop()
        flush_worker_tracing()
        return self.stats()


class RayWorkerFleet:
    def __init__(
        self,
        collector: str,
        command: Sequence[str],
        count: int,
        *,
        concurrency: int = 4,
        lease_s: float = 60.0,
        task_timeout_s: float = 600.0,
        openai_base_url: str | None = None,
        gateway: bool = True,
        reward: str | None = None,
        num_cpus_per_worker: float = 1.0,
        runtime_env: dict[str, Any] | None = None,
    ) -> None:
        self.collector = collector
        self.command = list(command)
        self.count = count
        self.options = {
            "concurrency": concurrency,
            "lease_s": lease_s,
            "task_timeout_s": task_timeout_s,
            "openai_base_url": openai_base_url,
            "gateway": gateway,
            "reward": reward,
        }
        self.actor_options = {"num_cpus": num_cpus_per_worker, **({"runtime_env": runtime_env} if runtime_env else {})}
        self.actors: list[Any] = []

    def start(self) -> RayWorkerFleet:
        """Start the actors (ray.init() must have run: a local cluster, or RAY_ADDRESS's)."""
        remote = ray.remote(WorkerActor).options(**self.actor_options)
        self.actors = [
            remote.remote(self.collector, self.command, name=f"ray-worker-{index}", **self.options)
            for index in range(self.count)
        ]
        # Wait until each has set up (an agent that cannot be loaded fails here, not later).
        ray.get([actor.stats.remote() for actor in self.actors])
        return self

    def stats(self) -> list[dict[str, int]]:
        return ray.get([actor.stats.remote() for actor in self.actors])

    def stop(self) -> list[dict[str, int]]:
        stats = ray.get([actor.stop.remote() for actor in self.actors])
        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        return stats
