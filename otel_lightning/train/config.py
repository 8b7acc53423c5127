"""The configuration of `otel-lightning train`: one YAML or TOML file, validated before anything starts.

    agent:   {command: [python, my_agent.py]}     # or {function: my_agent:run}
    tasks:   {train: tasks.jsonl, eval: eval.jsonl}
    reward:  {function: my_rewards:score}          # optional: rewards the agent emits count too
    model:   {name: tiny}                          # tiny | smollm2 | a local Hugging Face folder
    sft:     {steps: 200, demonstrations: demos.jsonl}
    grpo:    {steps: 12, tasks_per_step: 16, group_size: 4}
    stages:  [sft, grpo]                           # default: the sections given, in this order

Every field is also an override: `--set grpo.steps=20` (the value is read as YAML). A wrong key or type
is a `ConfigError` naming the key and the file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

STAGE_NAMES = ("sft", "grpo")


class ConfigError(ValueError):
    """A configuration that cannot run; the message is one line naming the file and the key."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentConfig(_Section):
    """The user's agent, unchanged: a command run per task (any language) or an in-process function."""

    command: list[str] | None = None
    function: str | None = None  # module:function, called with the task's input
    concurrency: int = Field(8, ge=1)
    timeout_s: float = Field(300.0, gt=0)
    # Under `opentelemetry-instrument` (Python commands): the agent's own spans (agent names, tools). The
    # gateway records every model call without it.
    instrument: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    # Stop the run when this many rollouts in a row failed (the agent's last stderr is shown); 0: never.
    max_consecutive_failures: int = Field(8, ge=0)

    @field_validator("env", mode="before")
    @classmethod
    def _env_as_text(cls, value: Any) -> Any:
        # `RECEIPT_MAX_TOKENS: 16` in YAML is a number; the environment holds text.
        if isinstance(value, dict):
            return {key: item if isinstance(item, str) else json.dumps(item) for key, item in value.items()}
        return value

    @field_validator("command", mode="before")
    @classmethod
    def _split_command(cls, value: Any) -> Any:
        if isinstance(value, str):
            import shlex

            return shlex.split(value)
        return value

    @model_validator(mode="after")
    def _one_kind(self) -> AgentConfig:
        if bool(self.command) == bool(self.function):
            raise ValueError("give exactly one of agent.command (a command line) or agent.function (module:function)")
        return self


class TasksConfig(_Section):
    """JSONL files (`task_id`, `input`, anything else kept for the reward) or `module:function` yielding them."""

    train: str
    eval: str | None = None
    # GRPO steps take the train tasks in a seeded shuffle per pass (false: in the file's order).
    shuffle: bool = True
    # Held-out tasks evaluated (the first N); 0: all.
    eval_limit: int = Field(0, ge=0)


class RewardConfig(_Section):
    """A worker-side reward `module:function(task_input, output)`; rewards the agent emits itself count too."""

    function: str | None = None


class LoraConfig(_Section):
    rank: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)


class ModelConfig(_Section):
    name: str = "tiny"  # tiny, smollm2, or a local Hugging Face causal-LM folder
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    hidden: int = Field(64, ge=8)  # the tiny model's size
    layers: int = Field(2, ge=1)
    lora: LoraConfig | None = None  # LoRA instead of full fine-tuning (one adapter per agent with policy_per_agent)
    policy_per_agent: bool = False
    torch_threads: int = Field(0, ge=0)  # 0: 1 for the tiny model, every core otherwise

    @model_validator(mode="after")
    def _lora_is_per_agent(self) -> ModelConfig:
        # The trainer's LoRA path is one adapter per agent; a single shared adapter is not built yet.
        if self.lora is not None and not self.policy_per_agent:
            raise ValueError("lora needs policy_per_agent: true (one adapter per agent); without it, full weights")
        return self


class TeacherConfig(_Section):
    """Rejection-sampling distillation: the agent runs on the train tasks against the teacher, and the
    rollouts whose reward reaches `min_reward` are re-encoded with the student's chat template."""

    url: str  # any OpenAI-compatible base URL (through the gateway)
    model: str | None = None  # the model name the agent should ask for (set as LIGHTNING_TEACHER_MODEL)
    tasks: int = Field(0, ge=0)  # train tasks to run (0: all)
    samples: int = Field(1, ge=1)  # rollouts per task
    min_reward: float = 1.0


class EpisodesConfig(_Section):
    """Production traffic: the episodes a collector store kept, whose evaluation or feedback passes a threshold."""

    store: str
    min_reward: float = 1.0


class SFTConfig(_Section):
    steps: int = Field(200, ge=0)
    lr: float = Field(3e-3, gt=0)
    batch_size: int = Field(32, ge=1)
    warmup_steps: int = Field(50, ge=0)
    # Exactly one source of demonstrations.
    demonstrations: str | None = None  # a JSONL of conversations, or module:function yielding them
    teacher: TeacherConfig | None = None
    episodes: EpisodesConfig | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SFTConfig:
        given = [name for name in ("demonstrations", "teacher", "episodes") if getattr(self, name) is not None]
        if len(given) != 1:
            got = ", ".join(given) or "none"
            raise ValueError(f"give exactly one of sft.demonstrations, sft.teacher or sft.episodes (got {got})")
        return self


class GRPOConfig(_Section):
    steps: int = Field(12, ge=0)
    lr: float | None = Field(None, gt=0)  # default: 1e-3 for tiny (2e-3 with a policy per agent), 1e-6 otherwise
    tasks_per_step: int = Field(16, ge=1)
    group_size: int = Field(4, ge=1)
    clip_ratio: float = Field(0.2, gt=0)
    failed_rollouts: Literal["drop", "penalty"] = "drop"
    failure_penalty: float = 0.0
    credit: str = "final_to_all"  # how the collector places rewards on steps
    kl_to_base: float = Field(0.1, ge=0)  # with a policy per agent
    train_agents: list[str] = Field(default_factory=list)  # glob patterns; empty: every agent
    retokenize: bool = False
    group_timeout_s: float = Field(300.0, gt=0)


class EvaluationConfig(_Section):
    samples: int = Field(2, ge=1)  # answers sampled per eval task (the headline figure)
    greedy: bool = True  # also one greedy answer per task
    # Evaluate at the start (true), or right before a stage ("grpo": the lift of RL alone, after a warm start).
    before: bool | Literal["sft", "grpo"] = True
    after: bool = True
    every: int = Field(0, ge=0)  # also every N GRPO steps; 0: never


class TrainConfig(_Section):
    agent: AgentConfig
    tasks: TasksConfig
    reward: RewardConfig = Field(default_factory=RewardConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    sft: SFTConfig | None = None
    grpo: GRPOConfig | None = None
    stages: list[Literal["sft", "grpo"]] | None = None
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    backend: Literal["embedded", "verl"] = "embedded"
    collector: str | None = None  # HOST:PORT of a running collector; default: one started for the run
    out: str = "runs/train"
    loggers: list[Literal["console", "tensorboard", "mlflow"]] = Field(default_factory=list)
    seed: int = 0
    # Where this file was read from: relative paths in it are relative to that folder.
    base_dir: str = Field(".", exclude=True)

    @model_validator(mode="after")
    def _stages_have_sections(self) -> TrainConfig:
        if self.stages is None:
            self.stages = [name for name in STAGE_NAMES if getattr(self, name) is not None]
        for name in self.stages:
            if getattr(self, name) is None:
                setattr(self, name, SFTConfig.model_validate({}) if name == "sft" else GRPOConfig())
        if not self.stages:
            raise ValueError("no stage to run: add an sft or grpo section (or stages: [...])")
        return self

    def path(self, value: str) -> Path:
        """A path from the file, relative to the file's folder."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else Path(self.base_dir) / path


def _read_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the config: {error.strerror or error}") from None
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(
            f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: {error}".replace("\n", " ")
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a mapping of sections, not a {type(data).__name__}")
    return data


def apply_override(data: dict[str, Any], assignment: str, source: str = "--set") -> None:
    """`a.b.c=value` into `data` (the value read as YAML: `20`, `1e-3`, `[a, b]`, `true`)."""
    key, separator, raw = assignment.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"{source} {assignment!r}: expected KEY=VALUE, e.g. grpo.steps=20")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    target = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = target.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source} {assignment!r}: {part} is not a section")
        target = node
    target[parts[-1]] = value


def _location(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"] if not str(part).startswith("function-")) or "(top level)"


def validate(data: dict[str, Any], source: str, base_dir: str | Path = ".") -> TrainConfig:
    """The config model of `data`; the first problem as one `ConfigError` line naming the key and `source`."""
    try:
        return TrainConfig.model_validate({**data, "base_dir": str(base_dir)})
    except ValidationError as error:
        first = error.errors()[0]
        problem = "unknown key" if first["type"] == "extra_forbidden" else first["msg"].removeprefix("Value error, ")
        more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
        raise ConfigError(f"{source}: {_location(first)}: {problem}{more}") from None


def load_config(
    path: str | Path | None, overrides: Sequence[str] = (), *, extra: dict[str, Any] | None = None
) -> TrainConfig:
    """The file's config with `--set` overrides applied (and `extra`, a dict from Python, merged on top)."""
    data: dict[str, Any] = {}
    source = "the config"
    base_dir: Path = Path(".")
    if path is not None:
        path = Path(path)
        data = _read_file(path)
        source, base_dir = str(path), path.parent
    for assignment in overrides:
        apply_override(data, assignment)
    for key, value in (extra or {}).items():
        data[key] = value
    return validate(data, source, base_dir)
