"""The demo's training loop, measured: rollouts/s, trainer step time, and the share of wall time
the trainer waits for rollouts. Runs the demo configuration with fewer steps.

    python benchmarks/train_loop.py [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples.calc_agent import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        summary = train.main(["--out", out, "--steps", str(args.steps), "--heldout", "20"])
    if args.json:
        keys = ("rollouts_per_step", "train_rollouts_per_s", "trainer_step_s_mean", "trainer_wait_share")
        print(json.dumps({key: summary[key] for key in keys}))
        return
    print(f"machine: {summary['machine']}")
    print(f"rollouts per step: {summary['rollouts_per_step']} (policy: {summary['policy_parameters']:,} parameters)")
    print(f"rollouts/s while collecting: {summary['train_rollouts_per_s']:.1f}")
    print(f"trainer step: {summary['trainer_step_s_mean'] * 1000:.0f} ms (mean)")
    print(f"share of wall time the trainer waits for rollouts: {summary['trainer_wait_share']:.1%}")


if __name__ == "__main__":
    main()
