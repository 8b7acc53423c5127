"""Tasks and demonstrations from a JSONL file or a `module:function`, checked before a run starts.

A task is a record `{"task_id": ..., "input": ..., ...}`: the agent gets `input`; the whole record (its
other keys too, e.g. the expected answer) goes to a worker-side reward function. A demonstration is a
conversation `{"messages": [...], "tools": [...]}` in the OpenAI fine-tuning layout; an assistant message
with `"weight": 0` is context, not trained on.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otel_lightning.loading import LoadError, load_callable


class TaskSourceError(ValueError):
    """Tasks or demonstrations that cannot be read; the message names the source and the line."""


@dataclass(frozen=True)
class TaskRecord:
    task_id: str
    input: Any
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "input": self.input, **self.extra}


def is_function_spec(spec: str) -> bool:
    return ":" in spec and not spec.endswith((".jsonl", ".json")) and not Path(spec).exists()


def _call_source(spec: str, what: str, seed: int) -> Iterable[Any]:
    try:
        function = load_callable(spec, what)
    except LoadError as error:
        raise TaskSourceError(str(error)) from None
    accepts_seed = "seed" in inspect.signature(function).parameters
    try:
        return list(function(seed=seed) if accepts_seed else function())
    except Exception as error:
        raise TaskSourceError(f"{what} {spec} raised {type(error).__name__}: {error}") from error


def _read_jsonl(path: Path, what: str) -> list[tuple[str, Any]]:
    """(where, record) per non-blank line."""
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise TaskSourceError(f"{what} {path}: cannot read it ({error.strerror or error})") from None
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as error:
            raise TaskSourceError(f"{what} {path}:{number}: not JSON ({error.msg})") from None
    return records


def _raw_records(spec: str, base_dir: Path, what: str, seed: int) -> list[tuple[str, Any]]:
    if is_function_spec(spec):
        return [(f"{spec} item {index}", item) for index, item in enumerate(_call_source(spec, what, seed))]
    path = Path(spec) if Path(spec).is_absolute() else base_dir / spec
    return _read_jsonl(path, what)


def load_tasks(spec: str, base_dir: Path, *, what: str = "tasks", seed: int = 0) -> list[TaskRecord]:
    """Every task of the source, in its order; an empty source, a record without `input` or a repeated
    `task_id` is an error naming where."""
    tasks: list[TaskRecord] = []
    seen: set[str] = set()
    for where, record in _raw_records(spec, base_dir, what, seed):
        if isinstance(record, tuple | list) and len(record) == 2:  # (task_id, input) from a function
            record = {"task_id": record[0], "input": record[1]}
        if not isinstance(record, dict) or "input" not in record:
            raise TaskSourceError(f"{what} {where}: a task needs an 'input' (and a 'task_id'), got {str(record)[:80]}")
        task_id = str(record.get("task_id", len(tasks)))
        if task_id in seen:
            raise TaskSourceError(f"{what} {where}: task_id {task_id!r} appears twice")
        seen.add(task_id)
        extra = {key: value for key, value in record.items() if key not in ("task_id", "input")}
        tasks.append(TaskRecord(task_id, record["input"], extra))
    if not tasks:
        raise TaskSourceError(f"{what} {spec}: no tasks in it")
    return tasks


def load_conversations(spec: str, base_dir: Path, *, seed: int = 0) -> list[dict[str, Any]]:
    """Demonstration conversations; each needs a list of messages with at least one assistant turn."""
    what = "sft.demonstrations"
    conversations = []
    for where, record in _raw_records(spec, base_dir, what, seed):
        messages = record.get("messages") if isinstance(record, dict) else None
        if not isinstance(messages, list) or not any(
            isinstance(m, dict) and m.get("role") == "assistant" for m in messages
        ):
            raise TaskSourceError(f"{what} {where}: a conversation needs 'messages' with an assistant turn")
        conversations.append(record)
    if not conversations:
        raise TaskSourceError(f"{what} {spec}: no conversations in it")
    return conversations
