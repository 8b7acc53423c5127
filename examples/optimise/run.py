"""Evaluate the calc agent's base and trained checkpoints and a prompt variant side by side (CPU, offline).

    python examples/optimise/run.py --out runs/optimise

1. base: the calc demo's warm start only (`train.py --steps 0`), saved as base.pt;
2. trained: GRPO from base (`train.py --resume base.pt --steps N`), saved as trained.pt;
3. `otel-lightning eval` on held-out questions with three candidates (candidates.yaml, written next to
   the checkpoints): base, trained, and trained with a system prompt added at the gateway. The agent is
   `examples/calc_agent/agent.py`, unchanged, run once per rollout.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from examples.calc_agent.tasks import make_tasks  # noqa: E402

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
    parser.add_argument("--warm-start-steps", type=int, default=800)
    parser.add_argument("--grpo-steps", type=int, default=20)
    parser.add_argument("--tasks-per-step", type=int, default=8, help="GRPO: tasks per step")
    parser.add_argument("--group-size", type=int, default=8, help="GRPO: rollouts per task")
    parser.add_argument("--heldout", type=int, default=50, help="evaluation questions")
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
            "--warm-start-steps",
            str(args.warm_start_steps),
        ],
    )
    shutil.copy(out / "base" / "checkpoint.pt", out / "base.pt")
    step(
        f"trained checkpoint: {args.grpo_steps} GRPO steps from base",
        [
            python,
            train,
            "--out",
            str(out / "trained"),
            "--resume",
            str(out / "base.pt"),
            "--steps",
            str(args.grpo_steps),
            "--tasks-per-step",
            str(args.tasks_per_step),
            "--group-size",
            str(args.group_size),
            "--heldout",
            "0",
        ],
    )
    shutil.copy(out / "trained" / "checkpoint.pt", out / "trained.pt")


def evaluate(args: argparse.Namespace, out: Path) -> None:
    from otel_lightning.testing.openai_stub import StubOpenAIServer

    python = sys.executable
    reference = StubOpenAIServer().__enter__()
    (out / "candidates.yaml").write_text(CANDIDATES.replace("{reference}", reference.base_url))
    # Held-out questions the training never saw (the demo draws its held-out set from the same seed).
    tasks = make_tasks(args.heldout, seed=10_000, prefix="heldout")
    (out / "tasks.jsonl").write_text("".join(json.dumps({"task_id": t, "input": task}) + "\n" for t, task in tasks))
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
