"""TaskPoolClient: submit tasks to the collector's pool, claim and complete them (a worker's side)."""

from __future__ import annotations

import json
import time
from typing import Any

import grpc

from otel_lightning.channels import open_channel
from otel_lightning.v1 import tasks_pb2 as pb
from otel_lightning.v1 import tasks_pb2_grpc as pb_grpc


class TaskPoolClient:
    def __init__(self, target: str, channel: grpc.Channel | None = None) -> None:
        self.target = target
        self._channel = channel or open_channel(target)
        self._stub = pb_grpc.TaskPoolStub(self._channel)

    def submit(
        self, tasks: list[tuple[str, Any]], group_size: int = 1, openai_base_url: str = "", policy_version: str = ""
    ) -> int:
        """Submit (task_id, input) pairs, input JSON-serialisable; returns how many were new.

        `openai_base_url`: the model server these tasks' rollouts must call (the worker's default if empty);
        `policy_version`: the version it serves, recorded on the rollouts when the server does not say (vLLM).
        """
        request = pb.SubmitTasksRequest(
            tasks=[
                pb.Task(
                    task_id=task_id,
                    input_json=json.dumps(given),
                    group_size=group_size,
                    openai_base_url=openai_base_url,
                    policy_version=policy_version,
                )
                for task_id, given in tasks
            ]
        )
        return self._stub.Submit(request).accepted

    def claim(self, worker: str, lease_s: float = 60.0, wait_s: float = 1.0) -> pb.Lease | None:
        """A lease, or None when no task came within `wait_s`."""
        began = time.monotonic()
        response = self._stub.Claim(pb.ClaimRequest(worker=worker, lease_s=lease_s, wait_s=wait_s), timeout=wait_s + 30)
        if response.HasField("lease"):
            return response.lease
        # A collector whose waiting claims are at their bound answers at once: wait out the rest here,
        # so a worker loop asking again does not spin.
        time.sleep(max(0.0, min(wait_s, 30.0) - (time.monotonic() - began)))
        return None

    def heartbeat(self, lease_id: str) -> bool:
        return self._stub.Heartbeat(pb.HeartbeatRequest(lease_id=lease_id), timeout=30).valid

    def complete(
        self, lease_id: str, status: str, error_type: str = "", error_message: str = "", requeue: bool = False
    ) -> bool:
        request = pb.CompleteRequest(
            lease_id=lease_id,
            status=status,
            error_type=error_type,
            error_message=error_message[-2000:],
            requeue=requeue,
        )
        return self._stub.Complete(request, timeout=30).accepted

    def sample_states(self, task_id: str) -> list[pb.SampleState]:
        return list(self._stub.SampleStates(pb.SampleStatesRequest(task_id=task_id), timeout=30).samples)

    def stats(self) -> dict[str, int]:
        stats = self._stub.Stats(pb.PoolStatsRequest(), timeout=30)
        return {"queued": stats.queued, "leased": stats.leased, "done": stats.done, "failed": stats.failed}

    def close(self) -> None:
        self._channel.close()
