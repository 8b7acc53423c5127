"""`fit(config)`: from tasks to a better model in one call — what `otel-lightning train CONFIG` runs.

    from otel_lightning.train.fit import fit
    summary = fit("my_agent/train.yaml", overrides=["grpo.steps=20"])

It checks everything first (`ConfigError`), builds the policy, starts the collector (or attaches to one),
the policy server and the workers with their gateway, evaluates, runs the stages in order, evaluates
again, and writes the Hugging Face checkpoint, `summary.json` and the reward curve under `out`. What it
started is stopped on success, failure and Ctrl-C. `resume=OUT` continues a stopped run from its last
saved step, with the same figures as an unbroken run.
"""

from __future__ import annotations

import logging
import os
import platform
import signal
import time
from pathlib import Path
from typing import Any

from otel_lightning.train.config import ConfigError, TrainConfig, load_config
from otel_lightning.train.outputs import PROGRESS_FILE, STATE_FILE, plot_curve, read_progress, write_json
from otel_lightning.train.preflight import Prepared, prepare

logger = logging.getLogger(__name__)

GRPO_LR_TINY = 1e-3
# A policy per agent: a larger step for the adapters, held near the base by a KL pull (examples/calc_agent/README.md).
LORA_LR_TINY = 2e-3
GRPO_LR_PRETRAINED = 1e-6


def _grpo_lr(config: TrainConfig) -> float:
    assert config.grpo is not None
    if config.grpo.lr is not None:
        return config.grpo.lr
    if config.model.name != "tiny":
        return GRPO_LR_PRETRAINED
    return LORA_LR_TINY if config.model.policy_per_agent else GRPO_LR_TINY


def _build_policy(config: TrainConfig) -> Any:
    import torch

    from otel_lightning.train.policies import build_policy

    model = config.model
    tiny = model.name == "tiny"
    # The tiny model's matrices are too small to split across cores: one torch thread leaves the other core
    # to the collector, the policy server's HTTP side and the agents. A real model uses them all.
    torch.set_num_threads(model.torch_threads or (1 if tiny else max(os.cpu_count() or 1, 1)))
    name = model.name if model.name in ("tiny", "smollm2") else str(config.path(model.name))
    policy = build_policy(
        name, hidden=model.hidden, layers=model.layers, seed=config.seed, device=model.device, dtype=model.dtype
    )
    if model.lora is not None or model.policy_per_agent:
        from otel_lightning.train.adapters import LoraSettings

        policy.lora_settings = LoraSettings(rank=model.lora.rank, alpha=model.lora.alpha) if model.lora else None
    return policy


def _trainer(config: TrainConfig, policy: Any) -> Any:
    from otel_lightning.train.trainer import GRPOTrainer, TrainerConfig

    grpo = config.grpo
    assert grpo is not None
    trainer_config = TrainerConfig(
        lr=_grpo_lr(config),
        clip_ratio=grpo.clip_ratio,
        failed_rollouts=grpo.failed_rollouts,
        failure_penalty=grpo.failure_penalty,
        retokenize=grpo.retokenize,
        kl_to_base=grpo.kl_to_base if config.model.policy_per_agent else 0.0,
    )
    return GRPOTrainer(policy, trainer_config, policy_per_agent=config.model.policy_per_agent)


def _interrupt_exits_on_second() -> None:
    """While stopping after Ctrl-C, a second Ctrl-C exits at once."""

    def exit_now(*_: object) -> None:
        os._exit(130)

    try:
        signal.signal(signal.SIGINT, exit_now)
    except ValueError:  # not the main thread: nothing to install
        pass


class Run:
    """One training run: its config, policy, services, progress and figures."""

    def __init__(self, prepared: Prepared, resume: Path | None) -> None:
        self.prepared = prepared
        self.config = prepared.config
        self.out = Path(self.config.out)
        self.resume = resume
        self.progress: dict[str, Any] = {"stages_done": [], "grpo_steps_done": 0, "curve": [], "figures": {}}
        self.phases: dict[str, float] = {}
        self.trainer: Any = None

    def lap(self, name: str, started: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started

    def save_progress(self) -> None:
        self.trainer.save(self.out / STATE_FILE)
        write_json(self.out / PROGRESS_FILE, self.progress)

    def execute(self) -> dict[str, Any]:
        from otel_lightning.train.hf_checkpoint import save_hf_checkpoint
        from otel_lightning.train.model import parameter_count
        from otel_lightning.train.services import TrainingServices
        from otel_lightning.train.tracking import Tracker

        config = self.config
        started = time.perf_counter()
        self.out.mkdir(parents=True, exist_ok=True)
        mark = time.perf_counter()
        policy = _build_policy(config)
        self.trainer = _trainer(config, policy) if config.grpo is not None else _sft_only_trainer(policy)
        if self.resume is not None:
            self.progress = read_progress(self.resume)
            self.trainer.load(self.resume / STATE_FILE)
            print(
                f"resumed {self.resume}: stages done {self.progress['stages_done'] or 'none'},"
                f" {self.progress['grpo_steps_done']} GRPO steps, policy version {policy.version}",
                flush=True,
            )
        print(f"policy: {policy.name}, {parameter_count(policy.model):,} parameters", flush=True)
        self.lap("build_policy", mark)
        tracker = Tracker(
            config.loggers, self.out, run_name=f"{self.out.name}-seed{config.seed}", params=_tracked_params(config)
        )
        services = TrainingServices(
            config,
            policy,
            agent=self.prepared.agent_function,
            reward=self.prepared.reward_function,
            store_path=self.out / "collector.db",
        )
        failed = True
        try:
            mark = time.perf_counter()
            services.start()
            self.lap("start_services", mark)
            figures = self.progress["figures"]
            before_at = config.evaluation.before
            if before_at is True or before_at not in (config.stages or []):
                before_at = (config.stages or [None])[0] if before_at else None
            for stage in config.stages or []:
                # A grpo stage resumed with more steps than it ran goes on; any other stage done is done.
                more_steps = stage == "grpo" and self.progress["grpo_steps_done"] < config.grpo.steps
                if stage in self.progress["stages_done"] and not more_steps:
                    continue
                if stage == before_at and self.prepared.eval_tasks and "before" not in figures:
                    figures["before"] = self._evaluate(services, "before")
                    tracker.log({"heldout": figures["before"]}, step=0)
                    write_json(self.out / PROGRESS_FILE, self.progress)
                mark = time.perf_counter()
                if stage == "sft":
                    figures["sft"] = self._sft(services)
                else:
                    self._grpo(services, tracker)
                self.lap(stage, mark)
                if stage not in self.progress["stages_done"]:
                    self.progress["stages_done"].append(stage)
                self.save_progress()
            if config.evaluation.after and self.prepared.eval_tasks:
                figures["after"] = self._evaluate(services, "after")
                tracker.log({"heldout": figures["after"]}, step=self.progress["grpo_steps_done"])
            mark = time.perf_counter()
            save_hf_checkpoint(policy, self.out / "checkpoint")
            self.lap("save_checkpoint", mark)
            failed = False
        except KeyboardInterrupt:
            _interrupt_exits_on_second()
            print("\ninterrupted: stopping what the run started (Ctrl-C again exits at once)", flush=True)
            raise
        finally:
            services.close()
            tracker.close(failed=failed)
        summary = self._summary(policy, parameter_count(policy.model), time.perf_counter() - started)
        write_json(self.out / "summary.json", summary)
        curve = self.progress["curve"]
        if curve:
            before, after = (figures.get(key, {}).get("reward") for key in ("before", "after"))
            plot_curve(curve, before, after, self.out / "reward_curve.png", title=f"{self.out.name}: {policy.name}")
        return summary

    def _evaluate(self, services: Any, label: str) -> dict[str, Any]:
        from otel_lightning.train.stages import evaluate_phase

        mark = time.perf_counter()
        figures = evaluate_phase(services, self.config, self.prepared.eval_tasks, label)
        self.lap(f"evaluate_{label}", mark)
        low, high = figures["interval_95"]
        greedy = f", greedy {figures['greedy']:.2f}" if "greedy" in figures else ""
        print(f"held-out {label}: {figures['reward']:.2f} (95% {low:.2f}-{high:.2f}{greedy})", flush=True)
        return figures

    def _sft(self, services: Any) -> dict[str, Any]:
        from otel_lightning.train.stages import run_sft

        return run_sft(services, self.config, self.prepared.conversations, self.prepared.train_tasks)

    def _grpo(self, services: Any, tracker: Any) -> None:
        from tqdm import tqdm

        from otel_lightning.train.stages import run_grpo_step, step_tasks

        config = self.config
        grpo = config.grpo
        assert grpo is not None
        done = self.progress["grpo_steps_done"]
        bar = tqdm(total=grpo.steps, initial=done, desc="grpo", unit="step", mininterval=1.0)
        try:
            for step in range(done, grpo.steps):
                tasks = step_tasks(self.prepared.train_tasks, grpo, step, config.seed, config.tasks.shuffle)
                stats = run_grpo_step(services, self.trainer, config, tasks, step)
                point = {"step": step, **stats}
                every = config.evaluation.every
                if every and (step + 1) % every == 0 and step + 1 < grpo.steps and self.prepared.eval_tasks:
                    point["heldout"] = self._evaluate(services, f"step-{step + 1}")
                self.progress["curve"].append(point)
                self.progress["grpo_steps_done"] = step + 1
                tracker.log(stats, step=step + 1)
                statuses = " ".join(f"{name}={count}" for name, count in sorted(stats["statuses"].items()))
                bar.set_postfix_str(
                    f"reward={stats['mean_reward']:.2f} {statuses} rollouts/s={stats['rollouts_per_s']:.1f}"
                    f" v{services.policy.version}",
                    refresh=False,
                )
                bar.update(1)
                self.save_progress()
        finally:
            bar.close()

    def _summary(self, policy: Any, parameters: int, wall_s: float) -> dict[str, Any]:
        figures = self.progress["figures"]
        curve = self.progress["curve"]
        wait = sum(point.get("wait_s", 0.0) for point in curve)
        update = sum(point.get("update_s", 0.0) for point in curve)
        summary: dict[str, Any] = {
            "config": self.config.model_dump(mode="json"),
            "held_out_reward_before": figures.get("before", {}).get("reward"),
            "held_out_reward_after": figures.get("after", {}).get("reward"),
            "held_out_greedy_before": figures.get("before", {}).get("greedy"),
            "held_out_greedy_after": figures.get("after", {}).get("greedy"),
            "held_out": {key: figures[key] for key in ("before", "after") if key in figures},
            "held_out_tasks": len(self.prepared.eval_tasks),
            "sft": figures.get("sft"),
            "grpo_steps": self.progress["grpo_steps_done"],
            "policy": policy.name,
            "policy_parameters": parameters,
            "policy_version": policy.version,
            "per_agent": {key: figures[key].get("agents", {}) for key in ("before", "after") if key in figures},
            "train_rollouts_per_s": sum(p.get("rollouts", 0) for p in curve) / max(wait, 1e-9),
            "trainer_wait_share": wait / max(wait + update, 1e-9),
            "checkpoint": str(self.out / "checkpoint"),
            "wall_s": wall_s,
            "phases_s": {name: round(seconds, 2) for name, seconds in self.phases.items()},
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "curve": curve,
        }
        return summary


def _plan(prepared: Prepared) -> dict[str, Any]:
    config = prepared.config
    plan = {
        "stages": config.stages,
        "train_tasks": len(prepared.train_tasks),
        "eval_tasks": len(prepared.eval_tasks),
        "agent": config.agent.function or config.agent.command,
        "model": config.model.name,
        "out": config.out,
    }
    print(
        f"config is valid; would run {' -> '.join(config.stages or [])} on {plan['train_tasks']} train tasks"
        f" and {plan['eval_tasks']} eval tasks, writing {config.out}",
        flush=True,
    )
    return plan


def _sft_only_trainer(policy: Any) -> Any:
    """A run without a grpo stage still saves and resumes through the same trainer state."""
    from otel_lightning.train.trainer import GRPOTrainer

    return GRPOTrainer(policy)


def _tracked_params(config: TrainConfig) -> dict[str, Any]:
    """What an experiment tracker records about the run: the config, flattened to "section.key"."""
    return _flatten(config.model_dump(mode="json", exclude_none=True))


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, dict):
            flat.update(_flatten(item, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = item
    return flat


def fit(
    config: TrainConfig | str | Path,
    overrides: list[str] | None = None,
    *,
    resume: str | Path | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Train as the config says; returns the summary (also in `OUT/summary.json`). Raises `ConfigError`
    (one line naming the key) before anything starts when the config, its files or its code do not fit."""
    if not isinstance(config, TrainConfig):
        config = load_config(config, overrides or [])
    elif overrides:
        raise ConfigError("overrides go with a config file; change the TrainConfig object instead")
    resume_dir = Path(resume) if resume else None
    if resume_dir is not None:
        if not (resume_dir / PROGRESS_FILE).exists():
            raise ConfigError(f"--resume {resume_dir}: no {PROGRESS_FILE} there (not a folder `train` wrote)")
        config = config.model_copy(update={"out": str(resume_dir)})  # a resumed run goes on in its own folder
    prepared = prepare(config)
    if config.backend == "verl":
        from otel_lightning.train.verl_backend import run_verl

        return run_verl(prepared, dry_run=dry_run)
    if dry_run:  # checked, nothing started
        return _plan(prepared)
    summary = Run(prepared, resume_dir).execute()
    before, after = summary["held_out_reward_before"], summary["held_out_reward_after"]
    if before is not None and after is not None:
        print(f"held-out reward: before={before:.2f} after={after:.2f}", flush=True)
    print(f"checkpoint: {summary['checkpoint']}  summary: {Path(config.out) / 'summary.json'}", flush=True)
    return summary
