"""The collector's status in one report: rollouts by status, top errors, rates, queues, lag, counters.

Served over gRPC (`CollectorStatus/GetStatus`, for `otel-lightning status`) and read by the
collector's own metrics, so both say the same thing.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import grpc

from otel_lightning.v1 import status_pb2 as pb
from otel_lightning.v1 import status_pb2_grpc as pb_grpc
from otel_lightning_collector.store import Store
from otel_lightning_collector.task_pool import TaskPool
from otel_lightning_collector.transitions import STATUSES

DEFAULT_WINDOW_S = 60
DEFAULT_TOP_ERRORS = 5


class StatusReporter:
    """`counters()` returns the live counters of the collector's parts, by name."""

    def __init__(
        self, store: Store, pool: TaskPool, counters: Callable[[], dict[str, int]], pending: Callable[[], int]
    ):
        self.store = store
        self.pool = pool
        self.counters = counters
        self.pending = pending

    def report(self, window_s: int = DEFAULT_WINDOW_S, top_errors: int = DEFAULT_TOP_ERRORS) -> pb.StatusReport:
        now = time.time_ns()
        counts = self.store.status_counts(now - window_s * 1_000_000_000)
        report = pb.StatusReport(time_unix_nano=now, window_s=window_s)
        for status in (*STATUSES, *sorted(set(counts) - set(STATUSES))):
            total, recent = counts.get(status, (0, 0))
            report.statuses.add(status=status, total=total, recent=recent)
        report.rollouts_per_s = sum(recent for _, recent in counts.values()) / window_s
        for status, error_type, count, rollout_id, task_id, message in self.store.top_errors(top_errors):
            report.top_errors.add(
                status=status,
                error_type=error_type,
                count=count,
                example_rollout_id=rollout_id,
                example_task_id=task_id,
                example_message=message[:500],
            )
        report.open_rollouts = self.store.open_rollout_count()
        report.last_sequence = self.store.last_sequence()
        for consumer, acked in sorted(self.store.consumers().items()):
            report.consumers.add(consumer=consumer, acked_sequence=acked, lag=max(report.last_sequence - acked, 0))
        pool = self.pool.stats()
        report.pool_queued, report.pool_leased = pool["queued"], pool["leased"]
        report.pool_done, report.pool_failed = pool["done"], pool["failed"]
        report.spans_pending = self.pending()
        report.counters.update(self.counters())
        return report


def counters_of(*parts: object) -> dict[str, int]:
    """The fields of counter dataclasses, prefixed by their part: {"intake.requests": 12, ...}."""
    found: dict[str, int] = {}
    for prefix, counters in zip(parts[::2], parts[1::2], strict=True):
        if counters is not None:
            found.update({f"{prefix}.{name}": value for name, value in dataclasses.asdict(counters).items()})
    return found


class CollectorStatusService(pb_grpc.CollectorStatusServicer):
    def __init__(self, reporter: StatusReporter) -> None:
        self.reporter = reporter

    def GetStatus(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusReport:  # noqa: N802
        window_s = min(request.window_s or DEFAULT_WINDOW_S, 24 * 3600)
        return self.reporter.report(window_s, min(request.top_errors or DEFAULT_TOP_ERRORS, 50))
