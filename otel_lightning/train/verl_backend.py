"""`backend: verl`: the same train config run as verl's GRPO (`python -m verl.trainer.main_ppo`) on GPUs.

verl's vLLM replicas serve the policy; the unmodified agent runs in an otel-lightning worker started here,
each rollout pointed at a replica by `LightningAgentLoop` (otel_lightning/verl/agent_loop.py), and the
transitions come back from the collector's stream. What examples/verl/run.sh does by hand, from the config:

    config key                  verl override
    model.name (a HF folder)    actor_rollout_ref.model.path
    model.lora.rank / alpha     actor_rollout_ref.model.lora_rank / lora_alpha
    grpo.lr                     actor_rollout_ref.actor.optim.lr (default: the embedded backend's 1e-6)
    grpo.tasks_per_step         data.train_batch_size, actor_rollout_ref.actor.ppo_mini_batch_size
    grpo.group_size             actor_rollout_ref.rollout.n
    grpo.steps                  trainer.total_training_steps, trainer.total_epochs, trainer.save_freq
    grpo.clip_ratio             actor_rollout_ref.actor.clip_ratio (and clip_ratio_low / clip_ratio_high)
    grpo.kl_to_base (if set)    actor_rollout_ref.actor.use_kl_loss, kl_loss_coef
    grpo.failed_rollouts, failure_penalty, retokenize, group_timeout_s: the agent loop's options
    tasks.train / tasks.eval    data.train_files / data.val_files (parquet written under OUT/verl_data)
    tasks.shuffle               data.shuffle
    evaluation.before / every / after, samples: trainer.val_before_train / test_freq, rollout.val_kwargs.n
    loggers                     trainer.logger (console when none)
    seed                        data.seed, actor_rollout_ref.actor.data_loader_seed, actor_rollout_ref.rollout.seed
    out                         trainer.default_local_dir (OUT/verl_checkpoints), trainer.experiment_name

verl runs GRPO only, with one policy, for an agent run as a command: an sft stage, a policy per agent or an
in-process agent function is a `ConfigError` naming the key. The agent must ask vLLM for the model by the
name it serves it under, its path: the agent's environment has it as LIGHTNING_POLICY_MODEL.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import io
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from otel_lightning.train.config import ConfigError, TrainConfig
from otel_lightning.train.preflight import Prepared
from otel_lightning.train.task_source import TaskRecord
from otel_lightning.worker import SubprocessAgent

AGENT_LOOP_NAME = "otel_lightning"
AGENT_LOOP_TARGET = "otel_lightning.verl.agent_loop.LightningAgentLoop"
ENV_POLICY_MODEL = "LIGHTNING_POLICY_MODEL"
# As the embedded backend's default for a pretrained model (otel_lightning/train/fit.py).
DEFAULT_LR = 1e-6
# The agent's whole conversation is one prompt to verl (left-truncated past this); the task text is short.
MAX_PROMPT_LENGTH = 4096
MAX_RESPONSE_LENGTH = 512  # per model call: verl pads (and cuts) each call's answer to this
# Set but meaningless to verl, which places and sizes the model itself: said once, not refused.
_IGNORED = {"model": ("device", "dtype", "hidden", "layers", "torch_threads"), "evaluation": ("greedy",)}


def _model_path(config: TrainConfig) -> str:
    name = config.model.name
    if name in ("tiny", "smollm2"):
        raise ConfigError(
            f"model.name: {name!r} is built in code; verl needs a Hugging Face model folder (or hub name):"
            " save one first, e.g. the OUT/checkpoint an embedded run writes, and give its path"
        )
    path = config.path(name)
    return str(path.resolve()) if path.exists() else name  # a hub name goes to verl as it is


def _refuse_what_verl_cannot_do(config: TrainConfig) -> None:
    if "sft" in (config.stages or []):
        raise ConfigError(
            "stages: verl runs grpo only; run the sft stage with backend: embedded first, then grpo with"
            " backend: verl from its OUT/checkpoint"
        )
    if config.agent.function:
        raise ConfigError(
            "agent.function: with verl each rollout gets its own vLLM replica, which only an agent command can be"
            " pointed at; run the agent as agent.command (e.g. [python, run_my_agent.py])"
        )
    if config.model.policy_per_agent:
        raise ConfigError(
            "model.policy_per_agent: verl trains one policy (with model.lora: one shared adapter); use backend:"
            " embedded for a policy per agent"
        )
    if config.grpo is not None and config.grpo.steps == 0:
        raise ConfigError("grpo.steps: 0 steps leave verl nothing to do (evaluate with backend: embedded)")


def verl_overrides(
    config: TrainConfig, data_dir: Path, extra: Sequence[str] = (), *, n_gpus: int | None = None
) -> list[str]:
    """Hydra overrides for `verl.trainer.main_ppo` from the config; `extra` (KEY=VALUE) go last and win.
    `data_dir` holds train.parquet, val.parquet and agent_loop.yaml (`write_verl_dataset`)."""
    _refuse_what_verl_cannot_do(config)
    grpo = config.grpo
    assert grpo is not None  # stages without sft: grpo (the config fills the section in)
    if n_gpus is None:
        import torch

        n_gpus = max(torch.cuda.device_count(), 1)  # the dry run on a machine without GPUs shows one
    data_dir = Path(data_dir).resolve()
    out = Path(config.out).resolve()
    evaluation = config.evaluation
    has_eval = config.tasks.eval is not None
    test_freq = (evaluation.every or (grpo.steps if evaluation.after else -1)) if has_eval else -1
    loggers = config.loggers or ["console"]
    values: dict[str, Any] = {
        "trainer.use_v1": True,
        "algorithm.adv_estimator": "grpo",
        "critic.enable": False,  # GRPO has none (said, so verl does not warn that it guessed)
        "data.train_files": data_dir / "train.parquet",
        "data.val_files": data_dir / "val.parquet",
        "data.train_batch_size": grpo.tasks_per_step,
        "data.max_prompt_length": MAX_PROMPT_LENGTH,
        "data.max_response_length": MAX_RESPONSE_LENGTH,
        "data.shuffle": config.tasks.shuffle,
        "data.seed": config.seed,
        "actor_rollout_ref.model.path": _model_path(config),
        "actor_rollout_ref.actor.optim.lr": grpo.lr or DEFAULT_LR,
        "actor_rollout_ref.actor.ppo_mini_batch_size": grpo.tasks_per_step,  # one update per step, as embedded
        "actor_rollout_ref.actor.use_dynamic_bsz": True,  # micro-batches by tokens: no per-GPU sizes to guess
        "actor_rollout_ref.actor.clip_ratio": grpo.clip_ratio,
        # verl's loss clips with these two, which do not follow clip_ratio.
        "actor_rollout_ref.actor.clip_ratio_low": grpo.clip_ratio,
        "actor_rollout_ref.actor.clip_ratio_high": grpo.clip_ratio,
        "actor_rollout_ref.actor.data_loader_seed": config.seed,
        "actor_rollout_ref.actor.checkpoint.save_contents": ["model", "optimizer", "extra", "hf_model"],
        "actor_rollout_ref.rollout.name": "vllm",
        "actor_rollout_ref.rollout.mode": "async",
        "actor_rollout_ref.rollout.n": grpo.group_size,
        "actor_rollout_ref.rollout.calculate_log_probs": True,
        "actor_rollout_ref.rollout.seed": config.seed,
        "actor_rollout_ref.rollout.val_kwargs.n": evaluation.samples,
        "actor_rollout_ref.rollout.agent.agent_loop_config_path": data_dir / "agent_loop.yaml",
        "actor_rollout_ref.rollout.agent.default_agent_loop": AGENT_LOOP_NAME,
        "trainer.n_gpus_per_node": n_gpus,
        "trainer.nnodes": 1,
        "trainer.total_training_steps": grpo.steps,
        "trainer.total_epochs": grpo.steps,  # a bound only: total_training_steps stops the run
        "trainer.save_freq": grpo.steps,  # a HF checkpoint at the end, as the embedded backend writes
        "trainer.test_freq": test_freq,
        "trainer.val_before_train": bool(evaluation.before) and has_eval,
        "trainer.logger": loggers,
        "trainer.project_name": "otel-lightning",
        "trainer.experiment_name": out.name,
        "trainer.default_local_dir": out / "verl_checkpoints",
    }
    if evaluation.samples > 1:  # verl samples n > 1 answers only with do_sample (and a temperature)
        values["actor_rollout_ref.rollout.val_kwargs.do_sample"] = True
        values["actor_rollout_ref.rollout.val_kwargs.temperature"] = 1.0
    if config.model.lora is not None:
        values["actor_rollout_ref.model.lora_rank"] = config.model.lora.rank
        values["actor_rollout_ref.model.lora_alpha"] = config.model.lora.alpha
    if "kl_to_base" in grpo.model_fields_set and grpo.kl_to_base > 0:  # the embedded default has no KL pull
        values["actor_rollout_ref.actor.use_kl_loss"] = True
        values["actor_rollout_ref.actor.kl_loss_coef"] = grpo.kl_to_base
    return [f"{key}={_hydra_value(value)}" for key, value in values.items()] + list(extra)


def _hydra_value(value: Any) -> str:
    if isinstance(value, bool | int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(item) for item in value) + "]"
    text = str(value)
    if re.fullmatch(r"[\w./:@+-]+", text):
        return text
    # Hydra's quoted string: a path with spaces or commas stays one value.
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ignored_settings(config: TrainConfig) -> list[str]:
    """Keys the user set that verl has no use for (it places and samples the model itself)."""
    return [
        f"{section}.{key}"
        for section, keys in _IGNORED.items()
        for key in keys
        if key in getattr(config, section).model_fields_set
    ]


def _row(index: int, split: str, record: TaskRecord) -> dict[str, Any]:
    """One row in the layout of examples/verl/make_dataset.py (the collector's `verl_row`). The task travels
    as JSON in `extra_info`, which the agent loop hands the worker: any input survives parquet's column types
    unchanged, and the worker gives the agent the task's own input and the reward function its record."""
    from otel_lightning_collector.dataset_formats import verl_row

    try:
        task_json = json.dumps(record.as_dict(), sort_keys=True)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"tasks.{split}: task {record.task_id!r} is not JSON ({error})") from None
    text = record.input if isinstance(record.input, str) else json.dumps(record.input)
    prompt = [{"role": "user", "content": text}]  # for verl's dataset; the agent builds its own prompts
    fields = {"split": split, "task_json": task_json}
    return verl_row(index, record.task_id, prompt, fields, data_source="otel_lightning", ability="agent")


def write_verl_dataset(prepared: Prepared, data_dir: Path) -> tuple[Path, Path]:
    """train.parquet and val.parquet of the prepared tasks (val: the train tasks' first ones when there are
    no eval tasks, verl wants the file; validation is then off)."""
    import pandas as pd

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    grpo = prepared.config.grpo
    if grpo is not None and len(prepared.train_tasks) < grpo.tasks_per_step:
        raise ConfigError(
            f"grpo.tasks_per_step: {grpo.tasks_per_step} is more than the {len(prepared.train_tasks)} train tasks;"
            " verl takes each step's tasks without repeats (lower it or add tasks)"
        )
    val_tasks = prepared.eval_tasks or prepared.train_tasks[:8]
    paths = data_dir / "train.parquet", data_dir / "val.parquet"
    for path, split, tasks in zip(paths, ("train", "val"), (prepared.train_tasks, val_tasks), strict=True):
        pd.DataFrame([_row(index, split, task) for index, task in enumerate(tasks)]).to_parquet(path)
    return paths


def write_agent_loop_config(config: TrainConfig, data_dir: Path) -> Path:
    """The agent loop verl runs (`default_agent_loop=otel_lightning`), with the config's GRPO options."""
    grpo = config.grpo
    assert grpo is not None
    entry = {
        "name": AGENT_LOOP_NAME,
        "_target_": AGENT_LOOP_TARGET,
        "collector": "${oc.env:LIGHTNING_COLLECTOR}",  # set for verl's process by run_verl
        "input_key": "extra_info",
        "outputs": "per_call",
        "failed_rollouts": "penalty" if grpo.failed_rollouts == "penalty" else "raise",  # raise: verl drops it
        "failure_penalty": grpo.failure_penalty,
        "timeout_s": grpo.group_timeout_s,
        "retokenize": grpo.retokenize,
    }
    path = Path(data_dir) / "agent_loop.yaml"
    path.write_text(yaml.safe_dump([entry], sort_keys=False))
    return path


def _one_line(error: BaseException) -> str:
    parts, seen = [], set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:  # hydra puts the reason in the cause
        seen.add(id(current))
        text = " ".join(line.strip() for line in str(current).splitlines() if line.strip())
        text = text.split(" full_key: ")[0]  # omegaconf's location lines: the message names the key already
        if text and not any(text in part for part in parts):
            parts.append(text)
        current = current.__cause__
    line = ": ".join(parts) or type(error).__name__
    return line if len(line) <= 400 else line[:397] + "..."


def _compose(overrides: Sequence[str]) -> Any:
    import verl
    from hydra import compose, initialize_config_dir

    # The config main_ppo's @hydra.main reads: verl/trainer/config/ppo_trainer.yaml.
    config_dir = str(Path(verl.__file__).parent / "trainer" / "config")
    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose("ppo_trainer", overrides=list(overrides))


# verl's YAML writes `temperature: 0` for a float field: a number default takes any number.
_KINDS: tuple[tuple[type | tuple[type, ...], str, Callable[[Any], bool]], ...] = (
    (bool, "true or false", lambda value: isinstance(value, bool)),
    ((int, float), "a number", lambda value: isinstance(value, int | float) and not isinstance(value, bool)),
)


def _check_types(overrides: Sequence[str], config: Any) -> None:
    """An override's value of another type than verl's default for the key (its dataclasses do not check)."""
    from omegaconf import OmegaConf

    defaults = _compose([])
    last = dict(override.partition("=")[::2] for override in overrides)  # as hydra: the last one wins
    for key, raw in last.items():
        if key.startswith(("+", "~")):
            continue  # an addition or a deletion: no default to compare with
        try:
            default = OmegaConf.select(defaults, key, throw_on_missing=False)
            value = OmegaConf.select(config, key, throw_on_missing=False)
        except Exception:  # an interpolation that cannot resolve yet: verl's own checks see it
            continue
        for kind, name, fits in _KINDS:
            if isinstance(default, kind) and value is not None:
                if not fits(value):
                    raise ConfigError(f"verl refused its config: {key}={raw}: verl expects {name} (default {default})")
                break


def _without_lora_unless_vllm(config: Any) -> Any:
    """verl's LoRA-rank check imports vLLM; where it is not installed (a CPU machine) the rest is checked."""
    import importlib.util

    from omegaconf import open_dict

    if importlib.util.find_spec("vllm") is not None or not config.actor_rollout_ref.model.get("lora_rank", 0):
        return config
    without_lora = copy.deepcopy(config)
    with open_dict(without_lora):
        without_lora.actor_rollout_ref.model.lora_rank = 0
        without_lora.actor_rollout_ref.model.lora.rank = 0
    return without_lora


def validate_verl_config(overrides: Sequence[str]) -> Any:
    """verl's own config with the overrides, checked by verl's own code as far as a CPU machine can: compose,
    `validate_config` (what main_ppo runs first), every interpolation resolved, the rollout, algorithm and
    model sections built as verl's workers build them (the tokenizer loads from the model folder), the agent
    loop file's entry imported, and both parquet files read by verl's RLHFDataset. Returns the DictConfig;
    any refusal is a one-line ConfigError."""
    stage = "composing"
    try:
        # verl prints its progress and platform warnings, `datasets` its bars: the error says what matters.
        with _quiet():
            config = _compose(overrides)
            from omegaconf import OmegaConf
            from verl.trainer.ppo.utils import create_rl_dataset, need_critic, need_reference_policy
            from verl.utils.config import omega_conf_to_dataclass, validate_config
            from verl.utils.device import auto_set_device

            _check_types(overrides, config)
            stage = "validating"
            auto_set_device(config)
            checked = _without_lora_unless_vllm(config)
            validate_config(
                checked, use_reference_policy=need_reference_policy(checked), use_critic=need_critic(checked)
            )
            OmegaConf.to_container(config, resolve=True)
            stage = "building"
            omega_conf_to_dataclass(config.algorithm)
            omega_conf_to_dataclass(config.actor_rollout_ref.rollout)
            model = omega_conf_to_dataclass(config.actor_rollout_ref.model)
            _check_agent_loop(config.actor_rollout_ref.rollout.agent)
            stage = "reading the data with"
            for files, is_train in ((config.data.train_files, True), (config.data.val_files, False)):
                dataset = create_rl_dataset(files, config.data, model.tokenizer, model.processor, is_train=is_train)
                _ = dataset[0]  # the row verl's loader hands the agent loop
    except ConfigError:
        raise
    except Exception as error:
        raise ConfigError(f"verl refused its config ({stage} it): {_one_line(error)}") from None
    return config


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    logging.disable(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def _check_agent_loop(agent: Any) -> None:
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    path, name = agent.agent_loop_config_path, agent.default_agent_loop
    entries = OmegaConf.load(path) if path else []
    entry = next((item for item in entries if item.get("name") == name), None)
    if entry is None:
        raise ConfigError(f"verl's agent loop {name!r} is not in {path}")
    get_class(entry["_target_"])


def _task_record(task_input: Any) -> dict[str, Any]:
    """The task record a verl row carries (its `extra_info`, as the agent loop submits it)."""
    if isinstance(task_input, dict) and "task_json" in task_input:
        return json.loads(task_input["task_json"])
    return {"input": task_input}


class _RowAgent(SubprocessAgent):
    """The user's command given the task's own input (the row carries it as JSON), its outcomes counted."""

    watch: Any = None  # a FailureWatch: the run stops after too many failures in a row

    def __call__(self, task_input: Any, openai_base_url: str | None = None, *, through_gateway: bool = False) -> str:
        task = _task_record(task_input)["input"]
        try:
            output = super().__call__(task, openai_base_url, through_gateway=through_gateway)
        except Exception as error:
            if self.watch is not None:
                self.watch.failed(error)
            raise
        return self.watch.succeeded(output) if self.watch is not None else output


def run_verl(prepared: Prepared, *, dry_run: bool, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Write the data, build and validate verl's config; on a dry run print the command and return it,
    else run it with a collector and a worker for the agent, stopping both when verl ends."""
    config = prepared.config
    _refuse_what_verl_cannot_do(config)
    out = Path(config.out).resolve()
    data_dir = out / "verl_data"
    train_path, val_path = write_verl_dataset(prepared, data_dir)
    write_agent_loop_config(config, data_dir)
    overrides = verl_overrides(config, data_dir, extra)
    validate_verl_config(overrides)
    command = [sys.executable, "-m", "verl.trainer.main_ppo", *overrides]
    env = _verl_env(config, out)
    plan = {
        "command": command,
        "env": env,
        "data": {"train": str(train_path), "val": str(val_path), "agent_loop": str(data_dir / "agent_loop.yaml")},
        "ignored": ignored_settings(config),
    }
    if dry_run:
        _print_plan(plan, config)
        return plan
    return _run(prepared, plan, _model_path(config))


def _verl_env(config: TrainConfig, out: Path) -> dict[str, str]:
    """verl's environment beyond ours (LIGHTNING_COLLECTOR: the config's, else set once the collector runs)."""
    env = {"LIGHTNING_COLLECTOR": config.collector} if config.collector else {}
    if "tensorboard" in config.loggers:
        env["TENSORBOARD_DIR"] = str(out / "tensorboard")
    if "mlflow" in config.loggers:  # as the embedded backend's tracker: a local store unless one is named
        env["MLFLOW_TRACKING_URI"] = os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{out / 'mlflow.db'}")
    return env


def _print_plan(plan: dict[str, Any], config: TrainConfig) -> None:
    env = {"LIGHTNING_COLLECTOR": "ADDRESS", **plan["env"]}  # ADDRESS: the collector started for the run
    program, *arguments = plan["command"]
    assignments = [f"{key}={shlex.quote(value)}" for key, value in env.items()]
    head = " ".join([*assignments, shlex.quote(program), *arguments[:2]])
    lines = [head, *(shlex.quote(argument) for argument in arguments[2:])]
    print("config is valid (verl accepted its config); would run:", flush=True)
    print(" \\\n  ".join(lines), flush=True)
    if plan["ignored"]:
        print(f"ignored with backend verl: {', '.join(plan['ignored'])}", flush=True)
    print(f"with a worker running {shlex.join(config.agent.command or [])} for the agent", flush=True)
    print(f"(the agent asks vLLM for the model {_model_path(config)}: in its environment as {ENV_POLICY_MODEL})")


def _reward(prepared: Prepared) -> Any:
    if prepared.reward_function is None:
        return None
    from otel_lightning.reward_function import RolloutRewardFunction

    function: Callable[..., Any] = prepared.reward_function
    wants_task = "task" in inspect.signature(function).parameters

    def scored(task_input: Any, output: Any) -> Any:  # as TaskRewards: the task's input, and its record if asked
        record = _task_record(task_input)
        if wants_task:
            return function(record["input"], output, task=record)
        return function(record["input"], output)

    return RolloutRewardFunction(scored, name=prepared.config.reward.function)


def _run(prepared: Prepared, plan: dict[str, Any], model_path: str) -> dict[str, Any]:
    """The non-dry path (needs GPUs and `verl[vllm]`; not run by the CPU tests)."""
    from otel_lightning.train.outputs import write_json
    from otel_lightning.train.stages import StageError

    config = prepared.config
    out = Path(config.out).resolve()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        address, watch = _start_services(stack, prepared, out, model_path)
        env = {**os.environ, **plan["env"], "LIGHTNING_COLLECTOR": address}
        # A session of its own: Ctrl-C reaches verl through _stop (its Ray cluster shut down cleanly).
        process = subprocess.Popen(plan["command"], env=env, start_new_session=True)
        stack.callback(_stop, process)
        while process.poll() is None:
            time.sleep(1.0)
            reason = watch.reason()
            if reason:
                raise StageError(reason)
    if process.returncode != 0:
        raise StageError(f"verl's trainer exited with code {process.returncode} (its log is above)")
    summary = {
        "backend": "verl",
        "command": plan["command"],
        "checkpoints": str(out / "verl_checkpoints"),  # global_step_N/actor/huggingface: the HF folder
        "wall_s": time.perf_counter() - started,
    }
    write_json(out / "summary.json", summary)
    print(f"verl finished; checkpoints: {summary['checkpoints']}", flush=True)
    return summary


def _start_services(stack: contextlib.ExitStack, prepared: Prepared, out: Path, model_path: str) -> tuple[str, Any]:
    """The collector (unless the config names one), tracing to it, the gateway and the worker: as
    examples/verl/run.sh's collector and `otel-lightning worker -- COMMAND`. Stopped by `stack`."""
    from otel_lightning.train.services import FailureWatch
    from otel_lightning.worker import Worker
    from otel_lightning.worker_gateway import WorkerGateway

    config = prepared.config
    grpo = config.grpo
    assert grpo is not None
    address = config.collector
    if not address:
        from otel_lightning_collector import CollectorConfig, CollectorServer

        for suffix in ("", "-wal", "-shm"):  # as the embedded backend: each run starts from an empty store
            Path(f"{out / 'collector.db'}{suffix}").unlink(missing_ok=True)
        collector = CollectorServer(
            CollectorConfig(
                listen="127.0.0.1:0",
                store_path=out / "collector.db",
                credit=grpo.credit,
                train_agents=tuple(grpo.train_agents),
            )
        ).start()
        stack.callback(collector.stop)
        address = collector.address
    provider = _trace_to(stack, address)
    watch = FailureWatch(config.agent.max_consecutive_failures)

    # No default model server: each rollout's route goes to the vLLM replica its task names.
    gateway = WorkerGateway(None, tracer_provider=provider)
    stack.callback(gateway.stop)
    agent = _RowAgent(
        list(config.agent.command or []),
        timeout_s=config.agent.timeout_s,
        collector=address,
        auto_instrument=config.agent.instrument,
        env={ENV_POLICY_MODEL: model_path, **config.agent.env},
        cwd=config.base_dir,
    )
    agent.watch = watch
    worker = Worker(
        address,
        agent,
        concurrency=config.agent.concurrency,
        lease_s=max(180.0, config.agent.timeout_s),
        task_timeout_s=config.agent.timeout_s,
        gateway=gateway,
        reward=_reward(prepared),
    )
    thread = worker.start_in_thread()
    stack.callback(thread.join, 30)
    stack.callback(worker.stop)
    return address, watch


def _trace_to(stack: contextlib.ExitStack, address: str) -> Any:
    """This process's spans (the worker's rollouts, rewards, the gateway's calls) to the collector."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://{address}", insecure=True))
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": "otel-lightning-train"}))
        trace.set_tracer_provider(provider)
    provider.add_span_processor(processor)
    stack.callback(processor.shutdown)
    return provider


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGINT first (verl shuts its Ray cluster down), then SIGTERM, then SIGKILL, to its whole session."""
    for sent, wait_s in ((signal.SIGINT, 60.0), (signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sent)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(wait_s)
