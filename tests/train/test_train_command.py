"""`otel-lightning train` end to end, as a user runs it: an agent the project never saw, in its own folder
(examples/receipt_agent: a command, a JSONL of tasks, a worker-side reward, a config), distilled from a teacher's
traces then trained with GRPO; a Node agent; a stopped run resumed to the same figures as an unbroken one; an
agent that fails every rollout. Learning is not asserted here (that is `make demo`'s job): the runs must finish,
write a Hugging Face checkpoint that transformers and our policy server load, and report what they kept."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
RECEIPT = ROOT / "examples" / "receipt_agent" / "train.yaml"
NODE = ROOT / "examples" / "node_agent" / "train.yaml"
CALC = ROOT / "examples" / "calc_agent" / "train.yaml"
SMALL_GRPO = [
    "grpo.steps=1",
    "grpo.tasks_per_step=2",
    "grpo.group_size=2",
    "tasks.eval_limit=2",
    "evaluation.samples=1",
]


def train(config: Path, *settings: str, extra: list[str] = (), timeout: float = 600) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "otel_lightning.cli", "train", str(config), *extra]
    for setting in settings:
        command += ["--set", setting]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def finished(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"rc={result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def assert_hf_checkpoint_loads(folder: Path) -> None:
    from transformers import AutoModelForCausalLM

    from otel_lightning.train.policies import build_policy

    model = AutoModelForCausalLM.from_pretrained(folder)
    policy = build_policy(str(folder))
    assert policy.version >= 1  # the trained version came back with the weights
    ids = torch.tensor([policy.tokenizer.encode_text("What is 2+2?")])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, policy.model(ids).logits, atol=1e-5)


def test_a_users_agent_distilled_from_a_teacher_then_grpo_with_the_tiny_model(tmp_path, openai_stub):
    out = tmp_path / "run"
    result = train(
        RECEIPT,
        f"out={out}",
        f"sft.teacher.url={openai_stub.base_url}",
        "sft.teacher.tasks=6",
        "sft.steps=20",
        *SMALL_GRPO,
    )
    finished(result)
    summary = json.loads((out / "summary.json").read_text())
    sft = summary["sft"]
    # The stub teacher calls the calculator and answers right: every rollout passes the worker-side reward.
    assert sft["source"] == "teacher" and sft["kept_conversations"] >= 6 and sft["examples"] >= 12
    assert summary["grpo_steps"] == 1 and summary["held_out_tasks"] == 2
    assert summary["held_out_reward_before"] is not None and summary["held_out_reward_after"] is not None
    point = summary["curve"][0]
    assert point["rollouts"] == 4 and point["prompt_tokens"] > 0  # the gateway recorded the calls' token ids
    assert "held-out reward: before=" in result.stdout
    assert (out / "reward_curve.png").stat().st_size > 0
    assert_hf_checkpoint_loads(out / "checkpoint")


def test_a_node_agent_trains_through_the_gateway(tmp_path):
    if not (ROOT / "examples" / "node_agent" / "node_modules" / "openai").is_dir() or shutil.which("node") is None:
        pytest.fail("the Node example needs node and `make install` (npm ci)")
    out = tmp_path / "node"
    result = train(NODE, f"out={out}", "sft.steps=10", *SMALL_GRPO)
    finished(result)
    summary = json.loads((out / "summary.json").read_text())
    point = summary["curve"][0]
    assert point["rollouts"] == 4 and point["statuses"] == {"succeeded": 4}
    assert point["prompt_tokens"] > 0 and point["response_tokens"] > 0
    assert (out / "checkpoint" / "config.json").exists()


def test_resume_gives_the_same_figures_as_an_unbroken_run(tmp_path):
    short = ["sft.steps=30", "grpo.tasks_per_step=4", "grpo.group_size=4", "evaluation.after=false"]
    short += [
        "evaluation.before=false",
        "evaluation.greedy=false",
        "reward.function=tests.train.varied_reward:by_length",
    ]
    finished(train(CALC, f"out={tmp_path / 'unbroken'}", "grpo.steps=2", *short))
    finished(train(CALC, f"out={tmp_path / 'stopped'}", "grpo.steps=1", *short))
    resumed = train(CALC, "grpo.steps=2", *short, extra=["--resume", str(tmp_path / "stopped")])
    finished(resumed)
    assert "resumed" in resumed.stdout and "1 GRPO steps" in resumed.stdout
    unbroken = json.loads((tmp_path / "unbroken" / "summary.json").read_text())
    continued = json.loads((tmp_path / "stopped" / "summary.json").read_text())
    keys = ("mean_reward", "rollouts", "sequences", "loss", "approx_kl", "prompt_tokens", "response_tokens")
    for one, other in zip(unbroken["curve"], continued["curve"], strict=True):
        assert {k: one.get(k, 0.0) for k in keys} == pytest.approx(
            {k: other.get(k, 0.0) for k in keys}, rel=1e-4, abs=1e-6
        )
    assert continued["policy_version"] == unbroken["policy_version"]
    assert any(point["sequences"] for point in unbroken["curve"])  # some step updated the weights
    from transformers import AutoModelForCausalLM

    first = AutoModelForCausalLM.from_pretrained(tmp_path / "unbroken" / "checkpoint").state_dict()
    second = AutoModelForCausalLM.from_pretrained(tmp_path / "stopped" / "checkpoint").state_dict()
    assert all(torch.allclose(first[name], second[name], atol=1e-5) for name in first)


def test_an_agent_that_fails_every_rollout_stops_the_run_with_its_stderr(tmp_path):
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "agent.py").write_text("import sys\nsys.exit('the API key is missing: set MY_API_KEY')\n")
    (folder / "tasks.jsonl").write_text("".join(json.dumps({"task_id": f"t{i}", "input": i}) + "\n" for i in range(4)))
    (folder / "train.yaml").write_text(
        "agent: {command: python agent.py, max_consecutive_failures: 3}\ntasks: {train: tasks.jsonl}\n"
        "grpo: {steps: 2, tasks_per_step: 4, group_size: 2}\n"
    )
    result = train(folder / "train.yaml", f"out={tmp_path / 'out'}", timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "failed 3 rollouts in a row" in last or "failed" in last
    assert "the API key is missing: set MY_API_KEY" in last


def test_a_users_agent_trains_smollm2_and_its_checkpoint_reloads(tmp_path, openai_stub):
    out = tmp_path / "smollm2"
    result = train(
        RECEIPT,
        f"out={out}",
        "model.name=smollm2",
        f"sft.teacher.url={openai_stub.base_url}",
        "sft.teacher.tasks=2",
        "sft.steps=2",
        "sft.batch_size=4",
        "agent.env.RECEIPT_MAX_TOKENS=16",
        "evaluation.greedy=false",
        *SMALL_GRPO,
        timeout=900,
    )
    finished(result)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["policy"] == "smollm2-135m" and summary["sft"]["kept_conversations"] >= 2
    assert summary["grpo_steps"] == 1 and summary["curve"][0]["prompt_tokens"] > 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from otel_lightning.train.policies import build_policy

    folder = out / "checkpoint"
    assert AutoModelForCausalLM.from_pretrained(folder).config.model_type == "llama"
    assert AutoTokenizer.from_pretrained(folder).chat_template
    reloaded = build_policy(str(folder))
    assert reloaded.version == summary["policy_version"]
