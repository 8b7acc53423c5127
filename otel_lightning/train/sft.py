"""Supervised warm start: teacher-forced cross-entropy on the completion tokens of demonstrations."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import torch

from otel_lightning.train.policy import TorchPolicy

Example = tuple[list[int], list[int]]  # (prompt ids, completion ids)


def pad_batch(sequences: Sequence[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids [B, T], attention mask [B, T]) right-padded."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence)
        mask[row, : len(sequence)] = 1
    return ids, mask


def token_logprobs(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(ids[:, t] | ids[:, :t]) for t >= 1, shape [B, T-1], on the model's device (the inputs are moved there)."""
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)


def cosine_with_warmup(step: int, steps: int, warmup_steps: int) -> float:
    """Learning-rate factor at `step` of `steps`: linear warm-up, then a cosine from 1 to 0."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(steps - warmup_steps, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def warm_start(
    policy: TorchPolicy,
    examples: list[Example],
    *,
    steps: int = 300,
    batch_size: int = 32,
    lr: float = 3e-3,
    seed: int = 0,
    on_step: Callable[[int, float], None] | None = None,
    warmup_steps: int = 50,
) -> float:
    """Train on demonstrations; returns the last loss. Bumps the policy version once.

    The learning rate rises over `warmup_steps`, then decays to zero on a cosine: a tiny model
    learns to copy (a tool call's expression, the tool's result) far more exactly at the end of a
    decay than at a constant rate (calc agent, 1,500 steps: right answers after a tool call 0.25 -> 0.87).
    """
    rng = random.Random(seed)
    optimizer = torch.optim.AdamW(policy.model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_with_warmup(step, steps, warmup_steps))
    loss_value = float("nan")
    with policy.lock:
        policy.model.train()
        for step in range(steps):
            batch = rng.sample(examples, min(batch_size, len(examples)))
            ids, mask = pad_batch([p + c for p, c in batch], policy.tokenizer.pad_id)
            loss_mask = torch.zeros_like(ids, dtype=torch.float)
            for row, (prompt, completion) in enumerate(batch):
                loss_mask[row, len(prompt) : len(prompt) + len(completion)] = 1.0
            logprobs = token_logprobs(policy.model, ids, mask)
            loss_mask = loss_mask.to(logprobs.device)
            loss = -(logprobs * loss_mask[:, 1:]).sum() / loss_mask[:, 1:].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_value = loss.item()
            if on_step:
                on_step(step, loss_value)
        policy.model.eval()
        policy.version += 1
    return loss_value
