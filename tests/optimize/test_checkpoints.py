"""Evaluation after training: two real checkpoints of the calc agent's policy, before and after a short
supervised training, each served by its own policy server behind the gateway, the agent unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from examples.calc_agent.tasks import make_tasks
from otel_lightning.optimize.candidates import load_candidates
from otel_lightning.optimize.eval_runner import EvalSettings, run_eval
from otel_lightning.optimize.report import summarize
from otel_lightning.train.policies import build_policy
from otel_lightning.train.sft import warm_start
from otel_lightning.train.trainer import GRPOTrainer
from tests.optimize.rewards import correct

ROOT = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, str(ROOT / "examples/calc_agent/agent.py")]


def tool_call_demonstrations(tokenizer, count: int) -> list[tuple[list[int], list[int]]]:
    """The first move of a good calc agent: call the calculator on the question's expression."""
    demos = []
    for _, task in make_tasks(count, seed=7, prefix="demo"):
        expression = task["question"].removeprefix("What is ").removesuffix("?")
        prompt = tokenizer.encode_prompt([{"role": "user", "content": task["question"]}], "calculator")
        demos.append((prompt, [*tokenizer.encode_tool_call("calculator", expression, "calculator"), tokenizer.eos_id]))
    return demos


@pytest.mark.timeout(900)
def test_base_and_trained_checkpoints_side_by_side(collector, otlp_export, tmp_path):
    torch.manual_seed(0)
    policy = build_policy("tiny", hidden=32, layers=1, seed=1)
    GRPOTrainer(policy).save(tmp_path / "base.pt")
    warm_start(policy, tool_call_demonstrations(policy.tokenizer, 400), steps=60, batch_size=16, lr=1e-2)
    GRPOTrainer(policy).save(tmp_path / "trained.pt")
    (tmp_path / "candidates.yaml").write_text(
        "candidates:\n"
        "  - {name: base, policy: base.pt, temperature: 0}\n"
        "  - {name: trained, policy: trained.pt, temperature: 0}\n"
    )
    candidates = load_candidates(tmp_path / "candidates.yaml")  # sizes read from the checkpoints' weights
    tasks = [(task_id, task) for task_id, task in make_tasks(3, seed=10_000, prefix="heldout")]
    run = run_eval(candidates, tasks, AGENT, correct, EvalSettings(concurrency=3, collector=collector.address))
    summary = summarize(run)
    base, trained = summary["candidates"]
    assert base["statuses"] == {"succeeded": 3} and trained["statuses"] == {"succeeded": 3}
    # Each checkpoint answered its own rollouts: the policy version each was saved with.
    assert base["policy_versions"] == ["0"] and trained["policy_versions"] == ["1"]
    # After training the agent calls the calculator first, on every held-out question.
    for result in (r for r in run.results if r.candidate == "trained"):
        first = min(result.transitions, key=lambda t: t.step)
        assert '"calculator"' in first.action_json
    assert trained["calls"] == 6  # the tool call, then the answer
    assert base["mean_reward"] is not None and trained["mean_reward"] is not None
