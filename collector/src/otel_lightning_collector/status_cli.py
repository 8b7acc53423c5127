"""`otel-lightning status --collector ADDR`: a live view of a collector (or one JSON snapshot).

otel-lightning status --collector 127.0.0.1:4317            # refreshes every second; Ctrl-C quits
otel-lightning status --collector 127.0.0.1:4317 --json     # one snapshot, for scripts
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import TYPE_CHECKING

import grpc
from google.protobuf import json_format

from otel_lightning.channels import open_channel
from otel_lightning.v1 import status_pb2 as pb
from otel_lightning.v1 import status_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from rich.console import Group

# Counters worth a line of their own in the live view (all of them are in --json).
_SHOWN_COUNTERS = (
    "intake.requests",
    "intake.spans_accepted",
    "intake.spans_foreign",
    "intake.requests_refused",
    "intake.requests_malformed",
    "index.spans_stored",
    "index.spans_duplicate",
    "index.spans_late",
    "index.spans_rejected",
    "forward.requests_forwarded",
    "forward.requests_dropped_queue_full",
    # Traces from anyone (trace_extras): steps trained without token ids, spans not kept, episodes, feedback.
    "assembly.steps_without_token_ids",
    "not_kept.spans",
    "episodes.episodes",
    "signals.log_records_stored",
    "feedback.recorded",
    "feedback.reward_updates",
    # Phoenix span annotations (annotations.py): rewards recorded, and those that gave none, by reason.
    "annotations.recorded",
    "annotations.without_score",
    "annotations.unknown_span",
    "annotations.waiting",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("status", help="show what a collector is doing: rollouts by status, errors, queues")
    parser.add_argument("--collector", default=os.environ.get("LIGHTNING_COLLECTOR", "127.0.0.1:4317"))
    parser.add_argument("--json", action="store_true", help="print one snapshot as JSON and exit")
    parser.add_argument("--window", type=int, default=60, help="seconds the rates and recent counts cover")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes of the live view")
    parser.set_defaults(run=_run)


def fetch(
    collector: str, window_s: int = 60, timeout_s: float = 5.0, channel: grpc.Channel | None = None
) -> pb.StatusReport:
    """One report (any role's token in LIGHTNING_TOKEN, the CA in LIGHTNING_TLS_CA where the collector asks);
    `channel`: one kept open across refreshes."""
    own = channel is None
    channel = channel or open_channel(collector)
    try:
        return pb_grpc.CollectorStatusStub(channel).GetStatus(pb.StatusRequest(window_s=window_s), timeout=timeout_s)
    finally:
        if own:
            channel.close()


def render(report: pb.StatusReport, collector: str) -> Group:
    from rich.console import Group
    from rich.table import Table

    statuses = Table(title=f"rollouts at {collector} (recent = last {report.window_s}s)", expand=True)
    statuses.add_column("status")
    statuses.add_column("total", justify="right")
    statuses.add_column("recent", justify="right")
    for count in report.statuses:
        style = "green" if count.status == "succeeded" else ("red" if count.total else "dim")
        statuses.add_row(count.status, f"{count.total:,}", f"{count.recent:,}", style=style)
    errors = Table(title="top errors", expand=True)
    for column in ("status", "error type", "count", "example"):
        errors.add_column(column)
    for kind in report.top_errors:
        example = f"task {kind.example_task_id} rollout {kind.example_rollout_id[:8]}: {kind.example_message[:80]}"
        errors.add_row(kind.status, kind.error_type or "-", f"{kind.count:,}", example)
    flow = Table(title="flow", expand=True, show_header=False)
    flow.add_column("figure")
    flow.add_column("value", justify="right")
    flow.add_row("rollouts/s", f"{report.rollouts_per_s:.2f}")
    flow.add_row("open rollouts", f"{report.open_rollouts:,}")
    flow.add_row(
        "task pool queued / leased / done / failed",
        f"{report.pool_queued:,} / {report.pool_leased:,} / {report.pool_done:,} / {report.pool_failed:,}",
    )
    flow.add_row("spans waiting to be indexed", f"{report.spans_pending:,}")
    flow.add_row("last event sequence", f"{report.last_sequence:,}")
    for consumer in report.consumers:
        flow.add_row(f"consumer {consumer.consumer!r} lag (events)", f"{consumer.lag:,}")
    for name in _SHOWN_COUNTERS:
        if name in report.counters:
            flow.add_row(name, f"{report.counters[name]:,}")
    return Group(statuses, errors, flow)


def _run(args: argparse.Namespace) -> int:
    if args.json:
        report = fetch(args.collector, args.window)
        print(json.dumps(json_format.MessageToDict(report, always_print_fields_with_no_presence=True), indent=2))
        return 0
    from rich.console import Console
    from rich.live import Live

    console = Console()
    channel = open_channel(args.collector)
    try:
        with Live(console=console, refresh_per_second=4, screen=False) as live:
            while True:
                try:
                    live.update(render(fetch(args.collector, args.window, channel=channel), args.collector))
                except grpc.RpcError as error:
                    live.update(f"[red]collector {args.collector} unreachable: {error.code().name}[/red]")
                time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        channel.close()
