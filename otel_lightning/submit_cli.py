"""`otel-lightning submit`: put tasks in a collector's pool from a JSON Lines file.

    otel-lightning submit --collector 127.0.0.1:4317 tasks.jsonl

One JSON object per line: `task_id` (a non-empty string), `input` (any JSON value: what the agent
gets), optional `group_size` (rollouts of the task, default --group-size). Blank lines are skipped.
Every line is checked before anything is sent: a bad line stops the command with its line number,
and no task of the file is submitted.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class TaskFileError(ValueError):
    """A line of the task file is not a task; the message names the file and the line."""


@dataclass(frozen=True)
class TaskLine:
    task_id: str
    input: Any
    group_size: int


def read_task_file(path: Path, default_group_size: int = 1) -> list[TaskLine]:
    tasks: list[TaskLine] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskFileError(f"{where}: not JSON ({error.msg} at column {error.colno})") from None
            if not isinstance(record, dict):
                kind = type(record).__name__
                raise TaskFileError(f"{where}: expected a JSON object with task_id and input, got {kind}")
            unknown = set(record) - {"task_id", "input", "group_size"}
            if unknown:
                fields = sorted(unknown)
                raise TaskFileError(f"{where}: unknown field(s) {fields}; a task has task_id, input, group_size")
            task_id = record.get("task_id")
            if not isinstance(task_id, str) or not task_id:
                raise TaskFileError(f"{where}: task_id must be a non-empty string, got {task_id!r}")
            if "input" not in record:
                raise TaskFileError(f"{where}: task {task_id!r} has no input")
            group_size = record.get("group_size", default_group_size)
            if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
                raise TaskFileError(f"{where}: group_size must be a positive integer, got {group_size!r}")
            if task_id in seen:
                raise TaskFileError(f"{where}: task_id {task_id!r} already on line {seen[task_id]}")
            seen[task_id] = number
            tasks.append(TaskLine(task_id, record["input"], group_size))
    return tasks


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("submit", help="put the tasks of a JSON Lines file in a collector's pool")
    parser.add_argument("--collector", default=os.environ.get("LIGHTNING_COLLECTOR", "127.0.0.1:4317"))
    parser.add_argument("--group-size", type=int, default=1, help="rollouts per task when a line gives none")
    parser.add_argument("--openai-base-url", default="", help="the model server these tasks' rollouts must call")
    parser.add_argument("--policy-version", default="", help="the version that server serves (vLLM reports none)")
    parser.add_argument("tasks", type=Path, help='JSON Lines: {"task_id": ..., "input": ..., "group_size": N}')
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from otel_lightning.task_client import TaskPoolClient

    if args.group_size < 1:
        raise SystemExit("--group-size must be at least 1")
    try:
        tasks = read_task_file(args.tasks, args.group_size)
    except (OSError, TaskFileError) as error:
        raise SystemExit(f"nothing submitted: {error}") from None
    by_group_size: dict[int, list[tuple[str, Any]]] = defaultdict(list)
    for task in tasks:
        by_group_size[task.group_size].append((task.task_id, task.input))
    client = TaskPoolClient(args.collector)
    try:
        new = sum(
            client.submit(batch, group_size, openai_base_url=args.openai_base_url, policy_version=args.policy_version)
            for group_size, batch in by_group_size.items()
        )
    finally:
        client.close()
    print(f"submitted {len(tasks)} task(s) from {args.tasks} to {args.collector}: {new} new, {len(tasks) - new} known")
    return 0
