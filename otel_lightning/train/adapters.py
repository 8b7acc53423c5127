"""A policy per agent: one LoRA adapter (peft) per trained agent on a shared, frozen base model.

The policy server picks a request's adapter by agent name (`TorchPolicy.adapter_key`); the
trainer updates each adapter on its own agent's transitions only (`GRPOTrainer`, `policy_per_agent`).
Adapters are made when an agent is first trained (LoRA B starts at zero, so a new adapter answers
exactly as the base model did) or loaded from a folder `save_adapters` wrote.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from otel_lightning.train.policy import TorchPolicy

logger = logging.getLogger(__name__)

# Linear layers of Qwen2/Llama-style blocks (SmolLM2 too).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
AGENTS_FILE = "agents.json"  # agent name -> adapter folder, beside the folders save_adapters writes


@dataclass
class LoraSettings:
    rank: int = 8
    alpha: int = 16
    target_modules: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))

    def config(self) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=self.target_modules, lora_dropout=0.0)


def adapter_key(agent: str, taken: set[str]) -> str:
    """A module-safe, unique adapter name for an agent (peft keys cannot hold '.')."""
    base = "agent_" + (re.sub(r"[^0-9A-Za-z_]", "_", agent) or "_")
    key, index = base, 1
    while key in taken:
        index += 1
        key = f"{base}_{index}"
    return key


def add_adapter(policy: TorchPolicy, agent: str, settings: LoraSettings | None = None) -> str:
    """A new adapter for `agent` (a no-op when it has one); the base model's weights are frozen. Returns its key."""
    if agent in policy.adapters:
        return policy.adapters[agent]
    from peft import PeftModel, get_peft_model

    settings = settings or policy.lora_settings or LoraSettings()
    key = adapter_key(agent, set(policy.adapters.values()))
    with policy.lock:
        if isinstance(policy.model, PeftModel):
            policy.model.add_adapter(key, settings.config())
        else:
            policy.model = get_peft_model(policy.model, settings.config(), adapter_name=key)
        policy.model.eval()
        policy.lora_settings = settings
        policy.adapters[agent] = key
    logger.info("agent %r has its own LoRA adapter now (%s, rank %d)", agent, key, settings.rank)
    return key


def adapter_parameters(policy: TorchPolicy, agent: str) -> list[Any]:
    """The trainable tensors of one agent's adapter."""
    key = policy.adapters[agent]
    return [parameter for name, parameter in policy.model.named_parameters() if f".{key}." in name]


def adapter_weights(policy: TorchPolicy, agent: str) -> dict[str, Any]:
    """One agent's adapter tensors (peft's state dict of it), for a checkpoint."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(policy.model, adapter_name=policy.adapters[agent])


def set_adapter_weights(
    policy: TorchPolicy, agent: str, weights: dict[str, Any], settings: LoraSettings | None = None
) -> None:
    """Put checkpointed adapter tensors into `agent`'s adapter (made if missing); extra or missing keys are errors."""
    from peft import set_peft_model_state_dict

    add_adapter(policy, agent, settings)
    result = set_peft_model_state_dict(policy.model, weights, adapter_name=policy.adapters[agent])
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ValueError(f"adapter weights of agent {agent!r} do not fit the model: {unexpected[:3]}")


def save_adapters(policy: TorchPolicy, folder: str | Path) -> Path:
    """Each adapter in its own peft folder under `folder`, and `agents.json` naming them by agent."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with policy.lock:
        # peft writes each adapter not named "default" into a subfolder of its name: folder/KEY/.
        policy.model.save_pretrained(str(folder), selected_adapters=list(policy.adapters.values()))
    index = {"agents": dict(policy.adapters), "lora": asdict(policy.lora_settings or LoraSettings())}
    (folder / AGENTS_FILE).write_text(json.dumps(index, indent=2))
    return folder


def load_adapter(policy: TorchPolicy, agent: str, folder: str | Path) -> str:
    """Load an adapter peft saved (a folder with adapter_config.json and adapter_model.safetensors) for `agent`.
    A missing or damaged file is an error that names it."""
    from peft import PeftModel

    folder = Path(folder)
    config, weights = folder / "adapter_config.json", folder / "adapter_model.safetensors"
    for needed in (config, weights):
        if not needed.is_file():
            raise FileNotFoundError(
                f"adapter for agent {agent!r}: {needed} does not exist (give a folder peft's save_pretrained wrote)"
            )
    try:  # checked first, so that a damaged config is not reported as the weights file's fault below
        if not isinstance(json.loads(config.read_text()), dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        raise ValueError(
            f"cannot load the adapter for agent {agent!r}: {config} is not a LoRA config ({error})"
        ) from error
    key = policy.adapters.get(agent) or adapter_key(agent, set(policy.adapters.values()))
    try:
        with policy.lock:
            if isinstance(policy.model, PeftModel):
                if key in policy.model.peft_config:
                    policy.model.delete_adapter(key)
                policy.model.load_adapter(str(folder), adapter_name=key)
            else:
                policy.model = PeftModel.from_pretrained(policy.model, str(folder), adapter_name=key)
            policy.model.eval()
    except Exception as error:  # safetensors, json and shape errors: say which file
        raise ValueError(f"cannot load the adapter for agent {agent!r} from {weights}: {error}") from error
    policy.adapters[agent] = key
    return key


def load_adapters(policy: TorchPolicy, folder: str | Path) -> dict[str, str]:
    """Every adapter a `save_adapters` folder holds (agent -> key)."""
    index_file = Path(folder) / AGENTS_FILE
    try:
        index = json.loads(index_file.read_text())
        agents = dict(index["agents"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{index_file} is not an adapter index save_adapters wrote: {error}") from error
    policy.lora_settings = LoraSettings(**index.get("lora", {}))
    for agent, key in agents.items():
        load_adapter(policy, agent, Path(folder) / key)
    return dict(policy.adapters)
