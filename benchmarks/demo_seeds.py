"""`make demo` for three seeds, one after another, each in a fresh process: held-out reward before and
after training (sampled, the demo's headline; greedy beside it), the rise, the wall time of each (what a
new user sees, imports included) with where it went, and the machine's load average around each run
(other jobs on this machine stretch the wall time).

    python benchmarks/demo_seeds.py [--seeds 0 1 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_seed(seed: int, out: Path, extra: list[str]) -> dict:
    """One demo run as `make demo` starts it (its own interpreter: imports and all count)."""
    load_before = os.getloadavg()[0]
    began = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "otel_lightning.cli",
            "train",
            str(ROOT / "examples" / "calc_agent" / "train.yaml"),
            "--set",
            f"out={out}",
            "--set",
            f"seed={seed}",
            *extra,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    wall_s = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"seed {seed} failed:\n{done.stderr[-2000:]}")
    summary = json.loads((out / "summary.json").read_text())
    before, after = summary["held_out_reward_before"], summary["held_out_reward_after"]
    return {
        "seed": seed,
        "before": before,
        "after": after,
        "rise": after - before,
        "greedy_before": summary["held_out_greedy_before"],
        "greedy_after": summary["held_out_greedy_after"],
        "wall_s": wall_s,
        "script_s": summary["wall_s"],  # the rest of wall_s: the interpreter's start and imports
        "phases_s": summary.get("phases_s", {}),
        "late_spans": summary.get("late_spans"),  # spans that reached the collector after their rollout completed
        # 1-minute load averages at the start and the end (each averages the minute before it).
        "load_average": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "extra", nargs="*", help="more `otel-lightning train` arguments (after --), e.g. -- --set grpo.steps=20"
    )
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in args.seeds:
            results.append(run_seed(seed, Path(scratch) / f"seed{seed}", args.extra))
            if not args.json:
                r = results[-1]
                print(
                    f"seed {r['seed']}: held-out reward before={r['before']:.2f} after={r['after']:.2f}"
                    f" (rise {r['rise']:+.2f}; greedy {r['greedy_before']:.2f} -> {r['greedy_after']:.2f})"
                    f" in {r['wall_s']:.0f} s, load average {r['load_average'][0]:.1f} -> {r['load_average'][1]:.1f}",
                    flush=True,
                )
                phases = ", ".join(f"{name} {seconds:.0f}" for name, seconds in r["phases_s"].items())
                print(f"  seconds: start and imports {r['wall_s'] - r['script_s']:.0f}, {phases}", flush=True)
                print(f"  late spans: {r['late_spans']}", flush=True)
    figures = {
        "seeds": results,
        "min_rise": min(r["rise"] for r in results),
        "max_wall_s": max(r["wall_s"] for r in results),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"smallest rise {figures['min_rise']:+.2f}, longest run {figures['max_wall_s']:.0f} s")


if __name__ == "__main__":
    main()
