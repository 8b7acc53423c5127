"""Training-free optimisation, measured: `eval` throughput against the embedded policy server, and the
prompt optimiser's cost per round.

1. eval: the calc agent (a Python process per rollout, unchanged) under two candidates served by an
   in-process policy server (tiny Qwen2, greedy) behind the gateway; rollouts/s and model calls/s over
   the whole run (pool, worker, gateway, collector, stream), and the same with a stub model server, to
   tell the policy's generation from the rest.
2. optimize-prompt: a scripted optimiser and a prompt-sensitive stub model; optimiser calls, rollouts and
   seconds per round (beam B, branch K, T training and V validation tasks: per round B optimiser calls,
   B*T training rollouts and up to B*K*V validation rollouts).

    python benchmarks/optimize_eval.py [--tasks 12] [--concurrency 4] [--rounds 2] [--json]
"""

# ruff: noqa: E402  (the checkout goes on sys.path first, as in the other benchmarks)
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from examples.calc_agent.tasks import make_tasks
from examples.optimise.rewards import correct
from otel_lightning.optimize.candidates import parse_candidates
from otel_lightning.optimize.eval_runner import EvalSettings, embedded_collector, run_eval
from otel_lightning.optimize.prompt_search import SearchSettings, run_prompt_search
from otel_lightning.optimize.report import summarize
from otel_lightning.testing.optimize_stubs import PromptSensitiveModel, ScriptedOptimizer
from otel_lightning.train.policies import build_policy
from otel_lightning.train.trainer import GRPOTrainer

AGENT = [sys.executable, str(ROOT / "examples/calc_agent/agent.py")]


def eval_throughput(collector: str, tasks: int, concurrency: int, directory: Path) -> dict:
    GRPOTrainer(build_policy("tiny")).save(directory / "tiny.pt")
    questions = make_tasks(tasks, seed=10_000, prefix="bench")
    figures = {}
    with PromptSensitiveModel(base_accuracy=0.5) as stub:
        for label, candidates in (
            (
                "policy_server",
                [{"name": f"tiny-{i}", "policy": str(directory / "tiny.pt"), "temperature": 0} for i in (1, 2)],
            ),
            ("stub_model", [{"name": f"stub-{i}", "base_url": stub.base_url} for i in (1, 2)]),
        ):
            run = run_eval(
                parse_candidates(candidates),
                questions,
                AGENT,
                correct,
                EvalSettings(concurrency=concurrency, collector=collector),
            )
            summary = summarize(run)
            calls = sum(entry["calls"] for entry in summary["candidates"])
            figures[label] = {
                "rollouts": summary["rollouts"],
                "wall_s": round(run.wall_s, 2),
                "rollouts_per_s": round(summary["rollouts"] / run.wall_s, 3),
                "model_calls_per_s": round(calls / run.wall_s, 3),
                "p50_call_ms": summary["candidates"][0]["p50_latency_ms"],
                "unscored": sum(entry["unscored"] for entry in summary["candidates"]),
            }
    return figures


def prompt_search_cost(collector: str, rounds: int, concurrency: int, directory: Path) -> dict:
    reply = "It guesses. <prompt>Check your work.</prompt> <prompt>Always use the calculator.</prompt>"
    train = [(f"t{n}", {"question": f"What is {n}*{n + 3}?", "answer": str(n * (n + 3))}) for n in range(2, 6)]
    val = [(f"v{n}", {"question": f"What is {n}*{n + 3}?", "answer": str(n * (n + 3))}) for n in range(10, 14)]
    with PromptSensitiveModel() as model, ScriptedOptimizer([reply]) as optimizer:
        settings = SearchSettings(
            base_url=model.base_url,
            optimizer_url=optimizer.base_url,
            optimizer_model="scripted",
            rounds=rounds,
            beam=2,
            branch=2,
            worst=2,
            concurrency=concurrency,
            collector=collector,
            progress=False,
        )
        began = time.perf_counter()
        history = run_prompt_search(
            train,
            val,
            [sys.executable, str(ROOT / "tests/optimize/calc_client.py")],
            correct_last_number,
            settings,
            directory / "search",
        )
        wall = time.perf_counter() - began
    return {
        "train_tasks": len(train),
        "val_tasks": len(val),
        "beam": 2,
        "branch": 2,
        "per_round": [
            {"round": r["round"], "optimizer_calls": r["optimizer_calls"], "rollouts": r["rollouts"]}
            for r in history["rounds"][1:]
        ],
        "optimizer_calls": history["optimizer_calls"],
        "rollouts": history["rollouts"],
        "wall_s": round(wall, 1),
        "best_val_reward": history["best"]["val_reward"],
    }


def correct_last_number(task: dict, output: str) -> float:
    import re

    numbers = re.findall(r"-?\d+", output)
    return float(bool(numbers) and numbers[-1] == task["answer"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as directory, embedded_collector() as collector:
        throughput = eval_throughput(collector, args.tasks, args.concurrency, Path(directory))
        cost = prompt_search_cost(collector, args.rounds, args.concurrency, Path(directory))
    figures = {
        "eval_rollouts_per_s_policy_server": throughput["policy_server"]["rollouts_per_s"],
        "eval_rollouts_per_s_stub_model": throughput["stub_model"]["rollouts_per_s"],
        "prompt_search_optimizer_calls_per_round": [r["optimizer_calls"] for r in cost["per_round"]],
        "prompt_search_rollouts_per_round": [r["rollouts"] for r in cost["per_round"]],
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(json.dumps({"eval": throughput, "prompt_search": cost}, indent=2))


if __name__ == "__main__":
    main()
