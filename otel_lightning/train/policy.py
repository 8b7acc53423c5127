"""TorchPolicy: a causal LM that generates with exact token ids and logprobs, and a version number."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import torch

from otel_lightning.train.tokenizer import ByteChatTokenizer


@dataclass
class Generation:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" (eos) or "length"


class TorchPolicy:
    """The model being trained, shared by the policy server (generate) and the trainer (update).

    `lock` serialises generation and weight updates, so a response never mixes two versions.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: ByteChatTokenizer, name: str = "tiny-qwen2") -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.version = 0
        self.lock = threading.RLock()
        self.greedy = False  # evaluation mode: argmax instead of sampling

    @torch.no_grad()
    def generate(
        self, prompt_ids: list[int], max_new_tokens: int = 32, temperature: float = 1.0, seed: int | None = None
    ) -> tuple[Generation, int]:
        """Sample a completion; returns it with the policy version that produced it."""
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        with self.lock:
            self.model.eval()
            input_ids = torch.tensor([prompt_ids])
            past = None
            out_ids: list[int] = []
            logprobs: list[float] = []
            finish = "length"
            for _ in range(max_new_tokens):
                output = self.model(input_ids=input_ids, cache=past, use_cache=True)
                past = output.cache
                logits = output.logits[0, -1].float()
                log_probs = torch.log_softmax(logits, dim=-1)
                if self.greedy or temperature <= 0:
                    token = int(torch.argmax(logits))
                else:
                    probs = torch.softmax(logits / temperature, dim=-1)
                    token = int(torch.multinomial(probs, 1, generator=generator))
                out_ids.append(token)
                # The logprob under the policy itself (temperature 1), as the trainer recomputes it.
                logprobs.append(float(log_probs[token]))
                if token == self.tokenizer.eos_id:
                    finish = "stop"
                    break
                input_ids = torch.tensor([[token]])
            return Generation(out_ids, logprobs, finish), self.version
