"""Progress bars for the optimisation commands: one bar per candidate (rich)."""

from __future__ import annotations

import threading
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from otel_lightning.optimize.results import RolloutResult


class RolloutProgress:
    """`with RolloutProgress(names, per_candidate) as progress: ... on_result=progress.update`."""

    def __init__(self, candidates: list[str], per_candidate: int, *, enabled: bool = True, label: str = "") -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[detail]}"),
            TimeElapsedColumn(),
            disable=not enabled,
        )
        self._bars = {
            name: self._progress.add_task(f"{label}{name}", total=per_candidate, detail="") for name in candidates
        }
        self._counts: dict[str, dict[str, Any]] = {
            name: {"reward": 0.0, "scored": 0, "failed": 0} for name in candidates
        }
        self._lock = threading.Lock()

    def update(self, result: RolloutResult) -> None:
        with self._lock:
            counts = self._counts.get(result.candidate)
            if counts is None:
                return
            if result.reward is None:
                counts["failed"] += 1
            else:
                counts["scored"] += 1
                counts["reward"] += result.reward
            mean = counts["reward"] / counts["scored"] if counts["scored"] else float("nan")
            detail = f"mean reward {mean:.2f}" + (f", {counts['failed']} failed" if counts["failed"] else "")
            self._progress.update(self._bars[result.candidate], advance=1, detail=detail)

    def __enter__(self) -> RolloutProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()
