"""An evaluation's summary: per-candidate figures, the best candidate, a table, eval.json and eval.png."""

from __future__ import annotations

import json
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from otel_lightning.optimize.eval_runner import EvalRun
from otel_lightning.optimize.statistics import confidence_interval, mean, paired_test, percentile


def summarize(run: EvalRun) -> dict[str, Any]:
    """The eval.json document. Mean reward and its interval are over scored rollouts only; rollouts that
    failed (or recorded no reward) are not scored as 0: they are counted in `statuses` and `success_rate`."""
    entries = []
    per_task: dict[str, dict[str, list[float]]] = {}
    for candidate in run.candidates:
        mine = [r for r in run.results if r.candidate == candidate.name]
        rewards = [r.reward for r in mine if r.reward is not None]
        statuses = Counter(r.status for r in mine)
        if run.missing.get(candidate.name):
            statuses["missing"] = run.missing[candidate.name]
        total = len(run.tasks) * run.settings.repeats
        tasks: dict[str, list[float]] = defaultdict(list)
        for result in mine:
            if result.reward is not None:
                tasks[result.task_id].append(result.reward)
        per_task[candidate.name] = dict(tasks)
        calls = run.calls.get(candidate.name, [])
        interval = confidence_interval(rewards)
        errors = Counter(r.error for r in mine if r.error and r.reward is None)
        entries.append(
            {
                "name": candidate.name,
                "upstream": candidate.base_url or str(candidate.policy.checkpoint if candidate.policy else ""),
                "mean_reward": mean(rewards),
                "ci95": list(interval) if interval else None,
                "success_rate": statuses.get("succeeded", 0) / total if total else 0.0,
                "statuses": dict(statuses),
                "rollouts": total,
                "scored": len(rewards),
                "unscored": total - len(rewards),
                "calls": len(calls),
                "failed_calls": sum(c.error for c in calls),
                "mean_tokens_per_call": mean([c.input_tokens + c.output_tokens for c in calls]),
                "p50_latency_ms": (p50 * 1000) if (p50 := percentile([c.latency_s for c in calls], 50)) else None,
                # Which weights answered (policy servers report their version in every response).
                "policy_versions": sorted({t.policy_version for r in mine for t in r.transitions if t.policy_version}),
                "problem": run.problems.get(candidate.name),
                "errors": [{"error": text, "rollouts": count} for text, count in errors.most_common(5)],
            }
        )
    ranked = sorted(
        (e for e in entries if e["mean_reward"] is not None),
        key=lambda e: (e["mean_reward"], e["success_rate"]),
        reverse=True,
    )
    best = ranked[0]["name"] if ranked else None
    comparison = None
    if len(ranked) >= 2:
        first, second = ranked[0]["name"], ranked[1]["name"]
        result = paired_test(per_task[first], per_task[second])
        comparison = {
            "best": first,
            "runner_up": second,
            "test": "paired sign-flip permutation test over tasks (mean reward per task)",
            "tasks": result.tasks if result else 0,
            "mean_difference": result.mean_difference if result else None,
            "p_value": result.p_value if result else None,
            "beats_runner_up": bool(result and result.significant and result.mean_difference > 0),
            "verdict": result.describe(first, second) if result else "too few shared tasks to test",
        }
    rollouts = sum(e["rollouts"] for e in entries)
    return {
        "candidates": entries,
        "best": best,
        "comparison": comparison,
        "tasks": len(run.tasks),
        "repeats": run.settings.repeats,
        "rollouts": rollouts,
        "retried_rollouts": run.retried,
        "wall_s": run.wall_s,
        "rollouts_per_s": rollouts / run.wall_s if run.wall_s else None,
    }


def _figure(value: float | None, pattern: str = "{:.3f}") -> str:
    return "—" if value is None else pattern.format(value)


def print_table(summary: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    # Not a terminal (a log, a README): wide enough for every column.
    console = console or Console(width=None if sys.stdout.isatty() else 130)
    table = Table(title=f"{summary['tasks']} tasks x {summary['repeats']} repeats per candidate")
    for column in ("candidate", "mean reward", "95% CI", "success", "statuses", "tokens/call", "p50 latency"):
        table.add_column(column, justify="left" if column in ("candidate", "statuses") else "right")
    for entry in summary["candidates"]:
        name = entry["name"] + (" ★" if entry["name"] == summary["best"] else "")
        interval = entry["ci95"]
        table.add_row(
            name,
            _figure(entry["mean_reward"]),
            f"[{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "—",
            f"{entry['success_rate']:.0%}",
            ", ".join(f"{status} {count}" for status, count in sorted(entry["statuses"].items())),
            _figure(entry["mean_tokens_per_call"], "{:.0f}"),
            _figure(entry["p50_latency_ms"], "{:.1f} ms"),
        )
    console.print(table)
    for entry in summary["candidates"]:
        if entry["problem"]:
            console.print(f"[red]candidate {entry['name']}: {entry['problem']}[/red]")
        for error in entry["errors"]:
            console.print(
                f"[yellow]candidate {entry['name']}: {error['rollouts']} rollout(s) failed: {error['error']}[/]"
            )
    if summary["best"] is None:
        console.print("[red]no candidate was scored: every rollout failed (see the errors above)[/red]")
    elif summary["comparison"]:
        console.print(f"best: {summary['best']} — {summary['comparison']['verdict']}")
    else:
        console.print(f"best: {summary['best']} (the only candidate scored)")


def plot(summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = summary["candidates"]
    names = [e["name"] for e in entries]
    means = [e["mean_reward"] or 0.0 for e in entries]
    low = [m - (e["ci95"][0] if e["ci95"] else m) for m, e in zip(means, entries, strict=True)]
    high = [(e["ci95"][1] if e["ci95"] else m) - m for m, e in zip(means, entries, strict=True)]
    colours = ["tab:green" if e["name"] == summary["best"] else "tab:blue" for e in entries]
    figure, axis = plt.subplots(figsize=(max(4.5, 1.4 * len(entries) + 2), 3.8))
    axis.bar(names, means, yerr=[low, high], capsize=6, color=colours)
    for index, entry in enumerate(entries):
        label = "not scored" if entry["mean_reward"] is None else f"{entry['mean_reward']:.2f}"
        axis.annotate(f"{label}\n{entry['success_rate']:.0%} ok", (index, 0.02), ha="center", va="bottom", fontsize=8)
    axis.set_ylabel("mean reward (95% CI)")
    axis.set_ylim(0, max(1.05, max(means, default=0) * 1.15))
    axis.set_title(f"eval: {summary['tasks']} tasks x {summary['repeats']} repeats")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(summary: dict[str, Any], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(summary, indent=2))
    plot(summary, out / "eval.png")
