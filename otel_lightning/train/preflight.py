"""Everything a run needs, loaded and checked before anything starts: each problem one `ConfigError` line.

The tasks and demonstrations are read, the reward and agent functions imported, an agent command's
program and script looked up, the model checked (without loading its weights), the loggers named.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otel_lightning.loading import LoadError, load_callable
from otel_lightning.train.config import ConfigError, TrainConfig
from otel_lightning.train.task_source import TaskRecord, TaskSourceError, load_conversations, load_tasks

# Interpreters whose first argument is a script file that must exist.
_SCRIPT_RUNNERS = ("python", "python3", "node", "nodejs", "deno", "bun", "ruby", "php")


@dataclass
class Prepared:
    config: TrainConfig
    train_tasks: list[TaskRecord]
    eval_tasks: list[TaskRecord]
    agent_function: Callable[..., Any] | None
    reward_function: Callable[..., Any] | None
    conversations: list[dict[str, Any]] = field(default_factory=list)


def _load(spec: str, what: str, base_dir: Path) -> Callable[..., Any]:
    for folder in (str(base_dir.resolve()), str(Path.cwd())):
        if folder not in sys.path:  # the user's modules beside their config, or where they run the command
            sys.path.insert(0, folder)
    try:
        return load_callable(spec, what)
    except LoadError as error:
        raise ConfigError(str(error)) from None
    except Exception as error:  # the module imported but raised
        raise ConfigError(f"the {what} {spec!r} failed to import: {type(error).__name__}: {error}") from None


def check_command(command: list[str], base_dir: Path) -> None:
    """The program is on PATH (or a file), and an interpreter's script exists (relative to the config's folder)."""
    program = command[0]
    is_python = Path(program).name.startswith("python")
    if not is_python and shutil.which(program) is None and not (base_dir / program).exists():
        raise ConfigError(f"agent.command: {program!r} is not a program on PATH (nor a file beside the config)")
    if Path(program).name.removesuffix(".exe") in _SCRIPT_RUNNERS or is_python:
        script = next((part for part in command[1:] if not part.startswith("-")), None)
        if script is not None and script.endswith((".py", ".js", ".mjs", ".ts", ".rb", ".php")):
            path = Path(script) if Path(script).is_absolute() else base_dir / script
            if not path.exists():
                raise ConfigError(f"agent.command: the script {script} does not exist (looked in {base_dir.resolve()})")


def prepare(config: TrainConfig) -> Prepared:
    base_dir = Path(config.base_dir)
    try:
        train_tasks = load_tasks(config.tasks.train, base_dir, what="tasks.train", seed=config.seed)
        eval_tasks = (
            load_tasks(config.tasks.eval, base_dir, what="tasks.eval", seed=config.seed) if config.tasks.eval else []
        )
        conversations = []
        if "sft" in (config.stages or []) and config.sft is not None and config.sft.demonstrations:
            conversations = load_conversations(config.sft.demonstrations, base_dir, seed=config.seed)
    except TaskSourceError as error:
        raise ConfigError(str(error)) from None
    if config.tasks.eval_limit:
        eval_tasks = eval_tasks[: config.tasks.eval_limit]
    agent_function = None
    if config.agent.function:
        agent_function = _load(config.agent.function, "agent", base_dir)
    else:
        check_command(list(config.agent.command or []), base_dir)
    reward_function = _load(config.reward.function, "reward function", base_dir) if config.reward.function else None
    _check_model(config)
    if config.sft is not None and config.sft.episodes is not None and "sft" in (config.stages or []):
        store = config.path(config.sft.episodes.store)
        if not store.exists():
            raise ConfigError(f"sft.episodes.store: {store} does not exist")
    if config.sft is not None and config.sft.teacher is not None:
        if not config.sft.teacher.url.startswith(("http://", "https://")):
            raise ConfigError(f"sft.teacher.url: {config.sft.teacher.url!r} is not an http(s) URL")
    return Prepared(config, train_tasks, eval_tasks, agent_function, reward_function, conversations)


def _check_model(config: TrainConfig) -> None:
    from otel_lightning.train.policies import check_model_source

    name = config.model.name
    if name not in ("tiny", "smollm2"):
        name = str(config.path(name))
    try:
        check_model_source(name)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(f"model.name: {error}") from None
    if config.model.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("model.device: cuda was asked for, but torch sees no GPU (use cpu or auto)")
