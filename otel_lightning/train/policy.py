"""TorchPolicy: a causal LM that generates with exact token ids and logprobs, and a version number."""

from __future__ import annotations

import inspect
import logging
import threading
from dataclasses import dataclass
from typing import Any

import torch

from otel_lightning.train.tokenizer import ChatTokenizer

logger = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """A dtype by name; None is float32 (what training expects), "auto" bf16 on a CUDA device that has it."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        return torch.float32
    if dtype == "auto":
        cuda = torch.device(device).type == "cuda" and torch.cuda.is_available()
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)} or auto")
    return DTYPES[dtype]


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (eos) or "length"


@dataclass
class GenerationRequest:
    prompt_ids: list[int]
    max_new_tokens: int = 32
    temperature: float = 1.0
    seed: int | None = None
    agent: str | None = None  # whose adapter answers, when the policy has one per agent (else the base model)


class TorchPolicy:
    """The model being trained, shared by the policy server (generate) and the trainer (update).

    `lock` serialises generation and weight updates, so a response never mixes two versions.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: ChatTokenizer, name: str = "tiny-qwen2") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.version = 0
        self.lock = threading.RLock()
        self.greedy = False  # evaluation mode: argmax instead of sampling
        # A policy per agent (otel_lightning.train.adapters): agent name -> LoRA adapter key in `model`.
        self.adapters: dict[str, str] = {}
        self.lora_settings: Any = None
        self._unadapted: set[str] = set()
        # transformers renamed `past_key_values` to `cache` (argument and output) in 5.11.
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        parameters = inspect.signature(base.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"

    @property
    def device(self) -> torch.device:
        """Where the model's weights are: inputs are made there."""
        return next(self.model.parameters()).device

    def to(self, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None) -> TorchPolicy:
        """Move the model (with its adapters) to `device`, cast to `dtype` when one is given; returns self."""
        with self.lock:
            if dtype is None:
                self.model.to(device)
            else:
                self.model.to(device=device, dtype=resolve_dtype(dtype, device))
        return self

    def adapter_key(self, agent: str | None) -> str:
        """The adapter that answers `agent`; "__base__" (peft's name for the base model) when it has none."""
        key = self.adapters.get(agent or "")
        if key is None and agent and self.adapters and agent not in self._unadapted:
            self._unadapted.add(agent)  # said once per name: the base model answers it
            logger.warning("no adapter for agent %r (has: %s): the base model answers", agent, sorted(self.adapters))
        return key or "__base__"

    @torch.no_grad()
    def generate_batch(self, requests: list[GenerationRequest]) -> tuple[list[Generation], int]:
        """Sample completions of several prompts in one batch (left-padded, one KV cache).

        Each row keeps its own temperature, seed and token budget, and gets the same tokens and
        logprobs as it would alone (up to float rounding). Returns them with the policy version.
        """
        pad = self.tokenizer.pad_id
        width = max(len(r.prompt_ids) for r in requests)
        ids = torch.full((len(requests), width), pad, dtype=torch.long)
        mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, request in enumerate(requests):
            ids[row, width - len(request.prompt_ids) :] = torch.tensor(request.prompt_ids)
            mask[row, width - len(request.prompt_ids) :] = 1
        device = self.device
        ids, mask = ids.to(device), mask.to(device)
        # Sampling runs on the CPU (one [B, V] copy a step): seeded generators give the same tokens on any device.
        generators = [torch.Generator().manual_seed(r.seed) if r.seed is not None else None for r in requests]
        outputs = [Generation([], [], "length") for _ in requests]
        active = [True] * len(requests)
        with self.lock:
            self.model.eval()
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            # Rows of different agents run in one batch, each through its own adapter (peft's mixed batches).
            routing = {"adapter_names": [self.adapter_key(r.agent) for r in requests]} if self.adapters else {}
            cache = None
            step_ids = ids
            for step in range(max(r.max_new_tokens for r in requests)):
                output = self.model(
                    input_ids=step_ids,
                    attention_mask=mask,
                    position_ids=positions,
                    use_cache=True,
                    **{self._cache_argument: cache},
                    **routing,
                )
                cache = getattr(output, self._cache_argument)
                logits = output.logits[:, -1].float().cpu()
                log_probs = torch.log_softmax(logits, dim=-1)
                next_ids = torch.full((len(requests), 1), pad, dtype=torch.long)
                for row, request in enumerate(requests):
                    if not active[row]:
                        continue
                    token = self._pick(logits[row], request.temperature, generators[row])
                    outputs[row].token_ids.append(token)
                    outputs[row].logprobs.append(float(log_probs[row, token]))
                    next_ids[row, 0] = token
                    if token == self.tokenizer.eos_id:
                        outputs[row].finish_reason, active[row] = "stop", False
                    elif step + 1 >= request.max_new_tokens:
                        active[row] = False
                if not any(active):
                    break
                step_ids = next_ids.to(device)
                mask = torch.cat([mask, torch.ones((len(requests), 1), dtype=torch.long, device=device)], dim=1)
                positions = positions[:, -1:] + 1
            return outputs, self.version

    def _pick(self, logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> int:
        if self.greedy or temperature <= 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=generator))

    def generate(
        self, prompt_ids: list[int], max_new_tokens: int = 32, temperature: float = 1.0, seed: int | None = None
    ) -> tuple[Generation, int]:
        """Sample one completion; returns it with the policy version that produced it."""
        generations, version = self.generate_batch([GenerationRequest(prompt_ids, max_new_tokens, temperature, seed)])
        return generations[0], version
