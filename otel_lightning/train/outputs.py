"""What a run leaves a user: the reward-curve PNG, `summary.json`, and the progress file `--resume` reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROGRESS_FILE = "progress.json"
STATE_FILE = "trainer.pt"


def plot_curve(curve: list[dict[str, Any]], before: float | None, after: float | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    axis.plot(
        [p["step"] for p in curve], [p["mean_reward"] for p in curve], marker="o", label="training reward (sampled)"
    )
    evaluations = [p for p in curve if "heldout" in p]
    if evaluations:
        axis.plot(
            [p["step"] for p in evaluations],
            [p["heldout"]["reward"] for p in evaluations],
            marker="s",
            color="tab:green",
            label="held-out (sampled)",
        )
    if before is not None:
        axis.axhline(before, color="grey", linestyle="--", label=f"held-out before ({before:.2f})")
    if after is not None:
        axis.axhline(after, color="green", linestyle="--", label=f"held-out after ({after:.2f})")
    axis.set_xlabel("GRPO step")
    axis.set_ylabel("mean reward")
    axis.set_ylim(-0.05, 1.05)
    axis.set_title(title)
    axis.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_json(path: Path, value: Any) -> None:
    """Written whole or not at all (a run stopped mid-write leaves the previous file)."""
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(value, indent=2, default=str))
    partial.replace(path)


def read_progress(folder: Path) -> dict[str, Any]:
    path = folder / PROGRESS_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--resume {folder}: no {PROGRESS_FILE} there (not a folder `train` wrote)") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"--resume {folder}: {PROGRESS_FILE} is damaged ({error.msg})") from None
