"""Reading what the optimisation commands are given: task files and MODULE:FUNCTION reward functions."""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


class InputError(ValueError):
    """A file or function the user named cannot be used; the message says which and why."""


def load_tasks(path: str | Path) -> list[tuple[str, Any]]:
    """(task_id, input) pairs from JSON lines `{"task_id": ..., "input": ...}` (no task_id: `task-<line>`)."""
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except OSError as error:
        raise InputError(f"cannot read tasks file {path}: {error}") from None
    tasks: list[tuple[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{path}:{number}: not JSON ({error})") from None
        if not isinstance(entry, dict) or "input" not in entry:
            raise InputError(f'{path}:{number}: expected an object with "input" (and "task_id"), got {line[:80]!r}')
        task_id = str(entry.get("task_id") or f"task-{number}")
        if "/" in task_id:
            raise InputError(f"{path}:{number}: task_id {task_id!r} must not contain '/'")
        tasks.append((task_id, entry["input"]))
    duplicates = sorted({t for t, _ in tasks if [x for x, _ in tasks].count(t) > 1})
    if duplicates:
        raise InputError(f"{path}: task ids must be unique; repeated: {', '.join(duplicates[:5])}")
    if not tasks:
        raise InputError(f"{path}: no tasks")
    return tasks


def load_function(spec: str) -> Callable[..., Any]:
    """The function named by `module:function` (the module importable from the current directory)."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise InputError(f"expected MODULE:FUNCTION (e.g. my_rewards:correct), got {spec!r}")
    # First on the path: an editable install puts the checkout after site-packages, where a dependency's
    # own top-level `tests` package would win.
    if sys.path[:1] != [os.getcwd()]:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise InputError(f"cannot import {module_name!r} for {spec!r}: {error}") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise InputError(f"{module_name} has no function {attribute!r} (from {spec!r})")
    return function
