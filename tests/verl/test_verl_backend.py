"""`backend: verl` on CPU: the config mapped to verl's overrides, accepted by verl's own config code, the
parquet rows verl reads, the refusals, and the worker side a verl run starts (no GPU: verl's trainer is not run)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import hydra
import pandas as pd
import pytest
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import DictConfigWrap

from otel_lightning.train.config import ConfigError, LoraConfig, TrainConfig, validate
from otel_lightning.train.preflight import prepare
from otel_lightning.train.stages import StageError
from otel_lightning.train.verl_backend import (
    ENV_POLICY_MODEL,
    _run,
    _start_services,
    run_verl,
    validate_verl_config,
    verl_overrides,
)
from otel_lightning.verl.rollout_waiter import RolloutWaiter
from tests.verl.support import close_the_loop_verl_took, padding_tokenizer

ROOT = Path(__file__).parents[2]

# An unmodified agent: the task's own input on stdin, one model call, its answer on stdout.
AGENT = textwrap.dedent(
    """
    import json, os, sys
    import openai

    task = json.load(sys.stdin)
    client = openai.OpenAI(max_retries=0)
    model = os.environ.get("LIGHTNING_POLICY_MODEL", "missing")
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": task["question"]}], max_tokens=4
    )
    print(json.dumps({"question": task["question"], "model": model}))
    """
)

REWARDS = textwrap.dedent(
    """
    import json

    def score(task_input, output, task):
        said = json.loads(output)
        return task["weight"] if said["question"] == task_input["question"] else 0.0
    """
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Hugging Face causal LM with a tokenizer and a chat template, as verl loads one."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    folder = tmp_path_factory.mktemp("model")
    config = Qwen2Config(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    vocab = {f"w{index}": index for index in range(60)} | {"<unk>": 60, "<s>": 61, "</s>": 62, "<pad>": 63}
    words = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    tokenizer.chat_template = "{% for m in messages %}<s>{{ m['content'] }}</s>{% endfor %}"
    tokenizer.save_pretrained(folder)
    return folder


def write_project(folder: Path, tasks: int = 4) -> None:
    (folder / "agent.py").write_text(AGENT)
    (folder / "rewards.py").write_text(REWARDS)
    lines = [
        {
            "task_id": f"t{index}",
            "input": {"question": f"w{index} w1"} | ({"hint": "w2"} if index % 2 else {}),
            "weight": 0.5 + index,
        }
        for index in range(tasks)
    ]
    (folder / "tasks.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    (folder / "eval.jsonl").write_text(json.dumps({"task_id": "e0", "input": "w3 w4", "weight": 1}))


def settings(folder: Path, model: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "backend": "verl",
        "agent": {"command": ["python", "agent.py"], "concurrency": 2},
        "tasks": {"train": "tasks.jsonl", "eval": "eval.jsonl"},
        "reward": {"function": "rewards:score"},
        "model": {"name": str(model)},
        "grpo": {"steps": 3, "tasks_per_step": 2, "group_size": 4, "lr": 2e-6, "clip_ratio": 0.25},
        "evaluation": {"every": 2, "samples": 3},
        "loggers": ["console", "tensorboard"],
        "seed": 7,
        "out": str(folder / "out"),
    }
    for key, value in changes.items():
        section, _, name = key.partition("__")
        if name:
            data.setdefault(section, {})[name] = value
        else:
            data[section] = value
    return data


def config_for(folder: Path, model: Path, **changes: Any) -> TrainConfig:
    write_project(folder)
    return validate(settings(folder, model, **changes), "test", base_dir=folder)


def as_dict(overrides: list[str]) -> dict[str, str]:
    return dict(override.split("=", 1) for override in overrides)


def test_the_config_maps_to_verl_overrides_that_verls_own_config_code_accepts(tmp_path, model_dir, capsys):
    plan = run_verl(prepare(config_for(tmp_path, model_dir)), dry_run=True)
    command = plan["command"]
    assert command[:3] == [sys.executable, "-m", "verl.trainer.main_ppo"]
    overrides = as_dict(command[3:])
    data = tmp_path / "out" / "verl_data"
    assert overrides["actor_rollout_ref.model.path"] == str(model_dir.resolve())
    assert overrides["actor_rollout_ref.actor.optim.lr"] == "2e-06"
    assert overrides["data.train_batch_size"] == overrides["actor_rollout_ref.actor.ppo_mini_batch_size"] == "2"
    assert overrides["actor_rollout_ref.rollout.n"] == "4"
    assert overrides["trainer.total_training_steps"] == "3"
    for key in ("clip_ratio", "clip_ratio_low", "clip_ratio_high"):
        assert overrides[f"actor_rollout_ref.actor.{key}"] == "0.25"
    assert "actor_rollout_ref.model.lora_rank" not in overrides  # full weights
    assert overrides["trainer.test_freq"] == "2" and overrides["trainer.val_before_train"] == "True"
    assert overrides["actor_rollout_ref.rollout.val_kwargs.n"] == "3"
    assert overrides["trainer.logger"] == "[console,tensorboard]"
    assert overrides["data.seed"] == overrides["actor_rollout_ref.rollout.seed"] == "7"
    assert overrides["trainer.default_local_dir"] == str(tmp_path / "out" / "verl_checkpoints")
    assert overrides["data.train_files"] == str(data / "train.parquet")
    assert overrides["actor_rollout_ref.rollout.agent.agent_loop_config_path"] == str(data / "agent_loop.yaml")
    assert overrides["actor_rollout_ref.rollout.agent.default_agent_loop"] == "otel_lightning"
    assert int(overrides["trainer.n_gpus_per_node"]) >= 1
    assert "use_kl_loss" not in " ".join(overrides)  # the embedded default: no KL pull for one policy
    assert plan["env"]["TENSORBOARD_DIR"] == str(tmp_path / "out" / "tensorboard")

    # verl's composed config holds the mapped values, typed as verl reads them.
    composed = validate_verl_config(command[3:])
    assert composed.actor_rollout_ref.rollout.n == 4 and composed.data.train_batch_size == 2
    assert composed.actor_rollout_ref.actor.optim.lr == pytest.approx(2e-6)
    assert list(composed.trainer.logger) == ["console", "tensorboard"]

    # The printed command is the one returned, one override per line, and runs as a shell line.
    printed = capsys.readouterr().out
    assert "verl accepted its config" in printed
    shell = printed.split("would run:\n", 1)[1].split("\nwith a worker", 1)[0]
    assert shell.count("\\\n") == len(command) - 3
    words = shlex.split(shell.replace("\\\n", " "))
    assert words[0] == "LIGHTNING_COLLECTOR=ADDRESS" and words[-len(command) :] == command

    # The agent loop file verl will read: our loop, the config's GRPO options.
    (entry,) = OmegaConf.load(data / "agent_loop.yaml")
    assert entry["_target_"] == "otel_lightning.verl.agent_loop.LightningAgentLoop"
    assert (entry["failed_rollouts"], entry["retokenize"], entry["outputs"]) == ("raise", False, "per_call")


def test_lora_becomes_verls_one_shared_adapter(tmp_path, model_dir):
    config = config_for(tmp_path, model_dir)
    # config.py takes model.lora only with policy_per_agent (the embedded trainer's adapters are per agent),
    # which verl cannot do; the mapping is ready for a config that lets verl have one shared adapter.
    config = config.model_copy(update={"model": config.model.model_copy(update={"lora": LoraConfig(rank=8, alpha=32)})})
    plan = run_verl(prepare(config), dry_run=True)  # verl's checks, bar vLLM's LoRA-rank one without vLLM
    overrides = as_dict(plan["command"][3:])
    assert overrides["actor_rollout_ref.model.lora_rank"] == "8"
    assert overrides["actor_rollout_ref.model.lora_alpha"] == "32"


def test_the_parquet_rows_carry_each_task_whole(tmp_path, model_dir):
    plan = run_verl(prepare(config_for(tmp_path, model_dir)), dry_run=True)
    train, val = pd.read_parquet(plan["data"]["train"]), pd.read_parquet(plan["data"]["val"])
    assert len(train) == 4 and len(val) == 1
    row = train.iloc[1].to_dict()
    assert row["agent_name"] == "otel_lightning" and row["prompt"][0]["role"] == "user"
    # Inputs of different shapes (a hint in some) come back exactly, whatever parquet made of the columns.
    record = json.loads(row["extra_info"]["task_json"])
    assert record == {"task_id": "t1", "input": {"question": "w1 w1", "hint": "w2"}, "weight": 1.5}
    assert json.loads(val.iloc[0]["extra_info"]["task_json"])["input"] == "w3 w4"


def test_without_eval_tasks_verl_gets_a_val_file_but_does_not_validate(tmp_path, model_dir):
    config = config_for(tmp_path, model_dir, tasks={"train": "tasks.jsonl"})
    overrides = as_dict(verl_overrides(config, tmp_path / "data", n_gpus=1))
    assert overrides["trainer.test_freq"] == "-1" and overrides["trainer.val_before_train"] == "False"
    plan = run_verl(prepare(config), dry_run=True)
    assert len(pd.read_parquet(plan["data"]["val"])) == 4


def test_extra_overrides_go_last_and_win(tmp_path, model_dir):
    config = config_for(tmp_path, model_dir)
    overrides = verl_overrides(config, tmp_path / "data", ["data.max_prompt_length=1024"], n_gpus=2)
    assert overrides[-1] == "data.max_prompt_length=1024" and "trainer.n_gpus_per_node=2" in overrides


def test_a_path_with_spaces_reaches_verl_as_one_value(tmp_path, model_dir):
    config = config_for(tmp_path, model_dir, out=str(tmp_path / "my runs" / "first, try"))
    plan = run_verl(prepare(config), dry_run=True)
    composed = validate_verl_config(plan["command"][3:])
    assert composed.trainer.default_local_dir == str(tmp_path / "my runs" / "first, try" / "verl_checkpoints")
    assert Path(composed.data.train_files).is_file()


def test_an_explicit_kl_to_base_becomes_verls_kl_loss(tmp_path, model_dir):
    config = config_for(tmp_path, model_dir, grpo={"steps": 2, "tasks_per_step": 2, "kl_to_base": 0.05})
    overrides = as_dict(verl_overrides(config, tmp_path / "data", n_gpus=1))
    assert overrides["actor_rollout_ref.actor.use_kl_loss"] == "True"
    assert overrides["actor_rollout_ref.actor.kl_loss_coef"] == "0.05"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"stages": ["sft", "grpo"], "sft": {"demonstrations": "demos.jsonl"}}, "stages"),
        ({"model__name": "tiny"}, "model.name"),
        ({"agent": {"function": "agent_function:run"}}, "agent.function"),
        ({"model__policy_per_agent": True}, "model.policy_per_agent"),
        ({"grpo": {"tasks_per_step": 16}}, "grpo.tasks_per_step"),
    ],
)
def test_what_verl_cannot_do_is_a_config_error_naming_the_key(tmp_path, model_dir, changes, key):
    write_project(tmp_path)
    (tmp_path / "demos.jsonl").write_text(json.dumps({"messages": [{"role": "assistant", "content": "w1"}]}))
    (tmp_path / "agent_function.py").write_text("def run(task):\n    return task\n")
    config = validate(settings(tmp_path, model_dir, **changes), "test", base_dir=tmp_path)
    with pytest.raises(ConfigError, match=f"^{key}: "):
        run_verl(prepare(config), dry_run=True)


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["trainer.no_such_key=1"], "trainer.no_such_key"),
        (["actor_rollout_ref.actor.clip_ratio=wide"], "clip_ratio"),
        (["actor_rollout_ref.actor.use_dynamic_bsz=False"], "ppo_micro_batch_size"),  # verl's own check
    ],
)
def test_an_override_verl_refuses_is_a_one_line_config_error(tmp_path, model_dir, extra, said):
    with pytest.raises(ConfigError, match="verl refused its config") as raised:
        run_verl(prepare(config_for(tmp_path, model_dir)), dry_run=True, extra=extra)
    assert "\n" not in str(raised.value) and said in str(raised.value)


def test_the_cli_dry_run_prints_the_verl_command(tmp_path, model_dir):
    write_project(tmp_path)
    config = settings(tmp_path, model_dir)
    config["out"] = "out"  # relative, as users write it: verl is given absolute paths
    (tmp_path / "train.yaml").write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "otel_lightning.cli", "train", str(tmp_path / "train.yaml"), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "-m verl.trainer.main_ppo" in done.stdout
    assert f"actor_rollout_ref.model.path={model_dir.resolve()}" in done.stdout
    assert f"trainer.default_local_dir={tmp_path.resolve() / 'out' / 'verl_checkpoints'}" in done.stdout
    assert (tmp_path / "out" / "verl_data" / "train.parquet").is_file()


def test_a_rows_task_runs_through_the_worker_a_verl_run_starts(tmp_path, model_dir, policy_server, monkeypatch):
    """verl's side stood in for: our agent loop, from the file written for verl, on a row read back from the
    parquet, with the policy server as the replica. The worker started as for verl gives the agent the
    task's own input and the reward function the task's record."""
    prepared = prepare(config_for(tmp_path, model_dir))
    plan = run_verl(prepared, dry_run=True)
    row = pd.read_parquet(plan["data"]["train"]).iloc[2].to_dict()
    with contextlib.ExitStack() as stack:
        address, _ = _start_services(stack, prepared, tmp_path / "out", "/models/the-policy")
        stack.callback(lambda: RolloutWaiter.shared(address).close())
        monkeypatch.setenv("LIGHTNING_COLLECTOR", address)
        (entry,) = OmegaConf.load(plan["data"]["agent_loop"])
        loop = hydra.utils.instantiate(
            entry,
            openai_base_url=policy_server.base_url,
            trainer_config=DictConfigWrap(
                OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 256, "response_length": 16}}})
            ),
            server_manager=None,
            tokenizer=padding_tokenizer(),
            processor=None,
            dataset_cls=None,
            data_config=DictConfigWrap(OmegaConf.create({})),
        )
        stack.callback(close_the_loop_verl_took, loop)
        output = asyncio.run(loop.run({"temperature": 1.0}, uid="u1", **row))
    assert output.reward_score == pytest.approx(2.5)  # the reward function saw the record's weight
    assert output.response_ids and output.response_mask == [1] * len(output.response_ids)
    assert ENV_POLICY_MODEL == "LIGHTNING_POLICY_MODEL"


def test_the_run_stops_what_it_started_and_says_how_verl_ended(tmp_path, model_dir):
    prepared = prepare(config_for(tmp_path, model_dir))
    fake_verl = [sys.executable, "-c", "import os, sys; sys.exit(int(os.environ['EXIT']))"]
    summary = _run(prepared, {"command": fake_verl, "env": {"EXIT": "0"}}, str(model_dir))
    assert summary["backend"] == "verl"
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["command"] == fake_verl
    with pytest.raises(StageError, match="exited with code 3"):
        _run(prepared, {"command": fake_verl, "env": {"EXIT": "3"}}, str(model_dir))
