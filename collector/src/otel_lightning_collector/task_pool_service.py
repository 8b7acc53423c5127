"""The TaskPool gRPC service over TaskPool."""

from __future__ import annotations

import math
import threading

import grpc

from otel_lightning.v1 import tasks_pb2 as pb
from otel_lightning.v1 import tasks_pb2_grpc as pb_grpc
from otel_lightning_collector.task_pool import TaskPool, TaskSpec

_MAX_WAIT_S = 30.0
# A lease longer than a day is a mistake (1e9 s is 31 years): the sample would never come back.
MAX_LEASE_S = 24 * 3600.0
# Claims that wait for work at once. Each holds a gRPC thread while it waits; the server's pool has
# this many threads besides those for exports (server.py). One more claim does not wait: it is
# answered at once (a lease if one is free, else none, and the worker asks again).
DEFAULT_MAX_WAITING_CLAIMS = 64
_MAX_NAME_BYTES = 256


def _finite(value: float, name: str, context: grpc.ServicerContext) -> None:
    if not math.isfinite(value):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{name} must be a finite number of seconds, not {value}")


class TaskPoolService(pb_grpc.TaskPoolServicer):
    def __init__(self, pool: TaskPool, *, max_waiting_claims: int = DEFAULT_MAX_WAITING_CLAIMS) -> None:
        self.pool = pool
        self._waiting = threading.BoundedSemaphore(max_waiting_claims)

    def Submit(self, request: pb.SubmitTasksRequest, context: grpc.ServicerContext) -> pb.SubmitTasksResponse:  # noqa: N802
        try:
            accepted, known = self.pool.submit(
                [
                    TaskSpec(t.task_id, t.input_json, t.group_size or 1, t.openai_base_url, t.policy_version)
                    for t in request.tasks
                ]
            )
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return pb.SubmitTasksResponse(accepted=accepted, already_known=known)

    def Claim(self, request: pb.ClaimRequest, context: grpc.ServicerContext) -> pb.ClaimResponse:  # noqa: N802
        _finite(request.lease_s, "lease_s", context)
        _finite(request.wait_s, "wait_s", context)
        if not 0 < request.lease_s <= MAX_LEASE_S:
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"lease_s must be in (0, {MAX_LEASE_S:g}], not {request.lease_s:g}"
            )
        if len(request.worker.encode()) > _MAX_NAME_BYTES:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"worker names are at most {_MAX_NAME_BYTES} bytes")
        wait_s = min(max(request.wait_s, 0.0), _MAX_WAIT_S)
        if wait_s > 0 and self._waiting.acquire(blocking=False):
            try:
                lease = self.pool.claim(request.worker, request.lease_s, wait_s)
            finally:
                self._waiting.release()
        else:
            lease = self.pool.claim(request.worker, request.lease_s, 0.0)
        if lease is None:
            return pb.ClaimResponse()
        return pb.ClaimResponse(
            lease=pb.Lease(
                lease_id=lease.lease_id,
                task_id=lease.task_id,
                input_json=lease.input_json,
                sample=lease.sample,
                attempt=lease.attempt,
                rollout_id=lease.rollout_id,
                lease_s=lease.lease_s,
                openai_base_url=lease.openai_base_url,
                policy_version=lease.policy_version,
            )
        )

    def Heartbeat(self, request: pb.HeartbeatRequest, context: grpc.ServicerContext) -> pb.HeartbeatResponse:  # noqa: N802
        return pb.HeartbeatResponse(valid=self.pool.heartbeat(request.lease_id))

    def Complete(self, request: pb.CompleteRequest, context: grpc.ServicerContext) -> pb.CompleteResponse:  # noqa: N802
        try:
            accepted = self.pool.complete(
                request.lease_id, request.status, request.error_type, request.error_message, request.requeue
            )
        except ValueError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return pb.CompleteResponse(accepted=accepted)

    def SampleStates(  # noqa: N802
        self, request: pb.SampleStatesRequest, context: grpc.ServicerContext
    ) -> pb.SampleStatesResponse:
        return pb.SampleStatesResponse(
            samples=[
                pb.SampleState(
                    sample=info.sample,
                    state=info.state,
                    attempts=info.attempts,
                    status=info.status,
                    error=info.error,
                    rollout_id=info.rollout_id,
                )
                for info in self.pool.samples(request.task_id)
            ]
        )

    def Stats(self, request: pb.PoolStatsRequest, context: grpc.ServicerContext) -> pb.PoolStats:  # noqa: N802
        return pb.PoolStats(**self.pool.stats())
