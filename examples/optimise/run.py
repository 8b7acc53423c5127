"""Evaluate the calc agent's base and trained checkpoints and a prompt variant side by side (CPU, offline).

    python examples/optimise/run.py --out runs/optimise

1. base: the calc demo's warm start only (`train.py --steps 0`), saved as base.pt;
2. trained: GRPO from base (`train.py --resume base.pt`, the demo's steps), saved as trained.pt, with its
   held-out questions (none trained on) written as heldout.jsonl;
3. `otel-lightning eval` on those questions with three candidates (candidates.yaml, written next to
   the checkpoints): base, trained, and trained with a system prompt added at the gateway. The agent is
   `examples/calc_agent/agent.py`, unchanged, run once per rollout.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CANDIDATES = """\
candidates:
  - name: base
    policy: base.pt            # the warm-started policy, before GRPO
    temperature: 0             # greedy, as the demo's held-out evaluation
  - name: trained
    policy: trained.pt         # after GRPO
    temperature: 0
  - name: trained+prompt
    policy: trained.pt
    temperature: 0
    system_prompt: {mode: replace, text: "Use the calculator."}
  - name: reference
    base_url: {reference}      # a fixed policy that always uses the calculator (the offline stub server)
"""


def step(title: str, command: list[str]) -> None:
    print(f"\n== {title}\n$ {' '.join(command)}", flush=True)
    subprocess.run(command, check=True, cwd=ROOT)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/optimise")
    parser.add_argument("--warm-start-steps", type=int, default=None, help="default: the demo's")
    parser.add_argument("--grpo-steps", type=int, default=None, help="default: the demo's")
    parser.add_argument("--tasks-per-step", type=int, default=None, help="GRPO: tasks per step (default: the demo's)")
    parser.add_argument("--group-size", type=int, default=None, help="GRPO: rollouts per task (default: the demo's)")
    parser.add_argument("--heldout", type=int, default=50, help="evaluation questions (unseen in training)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--reuse", action="store_true", help="keep base.pt and trained.pt of an earlier run")
    args = parser.parse_args(argv)
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if not (args.reuse and (out / "base.pt").exists() and (out / "trained.pt").exists()):
        train_checkpoints(args, out)
    evaluate(args, out)
    print(f"\nall done in {time.perf_counter() - started:.0f} s; results in {out / 'eval'}")


def _given(flag: str, value: int | None) -> list[str]:
    """The flag for train.py when set here; otherwise train.py's own default (the demo's)."""
    return [] if value is None else [flag, str(value)]


def train_checkpoints(args: argparse.Namespace, out: Path) -> None:
    python = sys.executable
    train = str(ROOT / "examples/calc_agent/train.py")
    step(
        "base checkpoint: warm start only",
        [
            python,
            train,
            "--out",
            str(out / "base"),
            "--steps",
            "0",
            "--heldout",
            "0",
            *_given("--warm-start-steps", args.warm_start_steps),
        ],
    )
    shutil.copy(out / "base" / "checkpoint.pt", out / "base.pt")
    step(
        "trained checkpoint: GRPO from base",
        [
            python,
            train,
            "--out",
            str(out / "trained"),
            "--resume",
            str(out / "base.pt"),
            *_given("--steps", args.grpo_steps),
            *_given("--tasks-per-step", args.tasks_per_step),
            *_given("--group-size", args.group_size),
            # Its held-out questions (none trained on, warm start included) are the evaluation's tasks,
            # and its own before/after figures a cross-check of eval's.
            "--heldout",
            str(args.heldout),
        ],
    )
    shutil.copy(out / "trained" / "checkpoint.pt", out / "trained.pt")


def evaluate(args: argparse.Namespace, out: Path) -> None:
    from otel_lightning.testing.openai_stub import StubOpenAIServer

    python = sys.executable
    reference = StubOpenAIServer().__enter__()
    (out / "candidates.yaml").write_text(CANDIDATES.replace("{reference}", reference.base_url))
    # Held-out questions the training never saw: those the trained run evaluated itself on.
    shutil.copy(out / "trained" / "heldout.jsonl", out / "tasks.jsonl")
    env = {**os.environ, "CALC_AGENT_MAX_TOKENS": "24"}
    print("\n== evaluation", flush=True)
    command = [
        python, "-m", "otel_lightning.cli", "eval",
        "--tasks", str(out / "tasks.jsonl"),
        "--candidates", str(out / "candidates.yaml"),
        "--reward", "examples.optimise.rewards:correct",
        "--repeats", str(args.repeats),
        "--concurrency", str(args.concurrency),
        "--out", str(out / "eval"),
        "--", "python", "examples/calc_agent/agent.py",
    ]  # fmt: skip
    print(f"$ {' '.join(command)}", flush=True)
    try:
        subprocess.run(command, check=True, cwd=ROOT, env=env)
    finally:
        reference.__exit__(None, None, None)


if __name__ == "__main__":
    main()
