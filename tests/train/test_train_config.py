"""`otel-lightning train` refuses what cannot run with one line naming the key, exit status 2, before anything
starts; the config model reads YAML and TOML with `--set` overrides."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from otel_lightning.train.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]
RECEIPT = ROOT / "examples" / "receipt_agent"


def train(*args: str, cwd: Path = ROOT, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otel_lightning.cli", "train", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def write_user_folder(folder: Path, **changes: str) -> Path:
    """A user's folder: an agent, tasks, a reward, a config (each file replaceable by `changes`)."""
    files = {
        "agent.py": "import sys, json\nprint(json.load(sys.stdin)['question'])\n",
        "rewards.py": "def score(task_input, output):\n    return 1.0\n",
        "tasks.jsonl": json.dumps({"task_id": "t0", "input": {"question": "What is 2+2?"}}) + "\n",
        "eval.jsonl": json.dumps({"task_id": "e0", "input": {"question": "What is 3+3?"}}) + "\n",
        "train.yaml": "agent: {command: python agent.py}\ntasks: {train: tasks.jsonl, eval: eval.jsonl}\n"
        "reward: {function: rewards:score}\ngrpo: {steps: 1}\n",
    }
    files.update(changes)
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return folder / "train.yaml"


def refused(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr  # one clear line, no traceback
    assert "Traceback" not in result.stderr
    return lines[0]


def test_a_valid_user_folder_passes_the_dry_run(tmp_path):
    result = train(str(write_user_folder(tmp_path)), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "config is valid" in result.stdout and "1 train tasks" in result.stdout


def test_an_unknown_key_names_itself_and_the_file(tmp_path):
    config = write_user_folder(
        tmp_path, **{"train.yaml": "agent: {command: python agent.py}\ntasks: {train: tasks.jsonl}\ngrpo: {stepz: 3}\n"}
    )
    line = refused(train(str(config), "--dry-run"))
    assert str(config) in line and "grpo.stepz" in line and "unknown key" in line


def test_a_wrong_type_from_an_override_names_the_key(tmp_path):
    line = refused(train(str(write_user_folder(tmp_path)), "--set", "grpo.group_size=many", "--dry-run"))
    assert "grpo.group_size" in line and "integer" in line


def test_a_reward_module_that_does_not_import(tmp_path):
    config = write_user_folder(tmp_path, **{"rewards.py": "import no_such_module_here\n"})
    line = refused(train(str(config), "--dry-run"))
    assert "reward function" in line and "no_such_module_here" in line


def test_an_agent_script_that_is_not_there(tmp_path):
    config = write_user_folder(tmp_path)
    (tmp_path / "agent.py").unlink()
    line = refused(train(str(config), "--dry-run"))
    assert "agent.command" in line and "agent.py does not exist" in line


def test_an_agent_program_that_is_not_on_path(tmp_path):
    line = refused(train(str(write_user_folder(tmp_path)), "--set", "agent.command=no-such-runtime x.js", "--dry-run"))
    assert "no-such-runtime" in line and "not a program on PATH" in line


def test_an_eval_file_with_no_tasks(tmp_path):
    line = refused(train(str(write_user_folder(tmp_path, **{"eval.jsonl": "\n"})), "--dry-run"))
    assert "tasks.eval" in line and "no tasks" in line


def test_a_task_line_without_input_names_its_line(tmp_path):
    bad = json.dumps({"task_id": "a", "input": 1}) + "\n" + json.dumps({"task_id": "b"}) + "\n"
    line = refused(train(str(write_user_folder(tmp_path, **{"tasks.jsonl": bad})), "--dry-run"))
    assert "tasks.jsonl:2" in line and "'input'" in line


def test_a_model_folder_that_is_not_a_causal_lm(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path / "encoder"
    )
    line = refused(train(str(write_user_folder(tmp_path)), "--set", f"model.name={tmp_path / 'encoder'}", "--dry-run"))
    assert line.startswith("otel-lightning train: model.name:") and "causal" in line


def test_a_missing_config_file(tmp_path):
    line = refused(train(str(tmp_path / "nope.yaml")))
    assert "nope.yaml" in line and "cannot read" in line


def test_resume_from_a_folder_train_did_not_write(tmp_path):
    line = refused(train(str(write_user_folder(tmp_path)), "--resume", str(tmp_path / "elsewhere")))
    assert "--resume" in line and "progress.json" in line


def test_toml_and_overrides_give_the_same_config_as_yaml(tmp_path):
    (tmp_path / "train.toml").write_text(
        '[agent]\ncommand = ["python", "agent.py"]\n[tasks]\ntrain = "tasks.jsonl"\n[grpo]\nsteps = 3\n'
    )
    (tmp_path / "train.yaml").write_text("agent: {command: [python, agent.py]}\ntasks: {train: tasks.jsonl}\n")
    from_toml = load_config(tmp_path / "train.toml")
    from_yaml = load_config(tmp_path / "train.yaml", ["grpo.steps=3"])
    assert from_toml.model_dump() == from_yaml.model_dump()
    assert from_toml.stages == ["grpo"] and from_toml.grpo.steps == 3
    assert from_toml.path("tasks.jsonl") == tmp_path / "tasks.jsonl"  # relative to the file's folder


def test_stages_need_a_source_of_demonstrations(tmp_path):
    (tmp_path / "train.yaml").write_text("agent: {function: m:f}\ntasks: {train: t.jsonl}\nsft: {steps: 3}\n")
    with pytest.raises(ConfigError, match=r"give exactly one of sft\.demonstrations, sft\.teacher or sft\.episodes"):
        load_config(tmp_path / "train.yaml")


def test_the_receipt_example_is_valid():
    result = train(str(RECEIPT / "train.yaml"), "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "64 train tasks and 16 eval tasks" in result.stdout
