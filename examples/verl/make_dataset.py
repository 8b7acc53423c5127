"""Write the calc agent's tasks as verl parquet files (train and validation).

Each row: `prompt` (the chat verl's dataset reads), `extra_info` (what LightningAgentLoop hands the
agent as its task: question and answer), `agent_name` (our agent loop), and the rule reward fields
verl expects beside them (the agent emits its own reward; verl's reward function is not needed).

    python examples/verl/make_dataset.py --out runs/verl/data
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from examples.calc_agent.tasks import make_tasks


def rows(count: int, seed: int, prefix: str) -> list[dict]:
    return [
        {
            "data_source": "otel_lightning/calc",
            "prompt": [{"role": "user", "content": task["question"]}],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": task["answer"]},
            "extra_info": {"index": index, "task_id": task_id, **task},
            "agent_name": "otel_lightning",
        }
        for index, (task_id, task) in enumerate(make_tasks(count, seed, prefix))
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/verl/data")
    parser.add_argument("--train", type=int, default=2048)
    parser.add_argument("--val", type=int, default=128)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows(args.train, seed=0, prefix="train")).to_parquet(out / "train.parquet")
    pd.DataFrame(rows(args.val, seed=10_000, prefix="val")).to_parquet(out / "val.parquet")
    print(f"wrote {args.train} training and {args.val} validation rows to {out}")


if __name__ == "__main__":
    main()
