"""GRPO, as pure functions of tensors (the shapes are in the docstrings), registered by name."""

from __future__ import annotations

from collections.abc import Callable

import torch

ADVANTAGE_ESTIMATORS: dict[str, Callable[..., torch.Tensor]] = {}


def register_advantage(name: str) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    def add(function: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        ADVANTAGE_ESTIMATORS[name] = function
        return function

    return add


@register_advantage("grpo")
def grpo_outcome_advantage(
    scores: torch.Tensor, group_ids: torch.Tensor, epsilon: float = 1e-6, norm_by_std: bool = True
) -> torch.Tensor:
    """Group-normalised outcome advantage, one per rollout.

    scores: [N] rollout rewards; group_ids: [N] ints, rollouts of one task share an id.
    Returns [N]: (score - group mean) / (group std + epsilon), std unbiased; a group of one has
    mean 0 and std 1 (as verl's compute_grpo_outcome_advantage).
    """
    advantages = torch.empty_like(scores, dtype=torch.float32)
    for group in torch.unique(group_ids):
        members = group_ids == group
        values = scores[members].float()
        if values.numel() == 1:
            mean, std = torch.tensor(0.0), torch.tensor(1.0)
        else:
            mean, std = values.mean(), values.std()
        centred = values - mean
        advantages[members] = centred / (std + epsilon) if norm_by_std else centred
    return advantages


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    loss_mask: torch.Tensor,
    clip_ratio: float = 0.2,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip policy-gradient loss, token-mean over the mask.

    logprobs, old_logprobs, loss_mask: [B, T]; advantages: [B] (per sequence) or [B, T].
    Returns (scalar loss, stats with clip fraction and approximate KL to the old policy).
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_ratio, 1 + clip_ratio)
    per_token = torch.maximum(unclipped, clipped)
    tokens = loss_mask.sum().clamp(min=1)
    loss = (per_token * loss_mask).sum() / tokens
    with torch.no_grad():
        clip_fraction = ((clipped > unclipped).float() * loss_mask).sum() / tokens
        approx_kl = ((old_logprobs - logprobs) * loss_mask).sum() / tokens
    return loss, {"clip_fraction": float(clip_fraction), "approx_kl": float(approx_kl)}


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Low-variance KL estimate (k3) to a reference policy, token-mean over the mask; [B, T] inputs."""
    log_ratio = ref_logprobs - logprobs
    per_token = torch.exp(log_ratio) - log_ratio - 1
    return (per_token * loss_mask).sum() / loss_mask.sum().clamp(min=1)


def sequence_with_mask(prompt_ids: list[int], response_ids: list[int], model_generated: list[bool] | None = None):
    """(input ids, loss mask) of prompt + response; the mask is 1 on tokens the model generated.

    `model_generated` marks, per response token, whether the policy produced it; tokens it did
    not (tool outputs or user turns spliced into a multi-turn response) get 0. Default: all 1.
    """
    flags = model_generated if model_generated is not None else [True] * len(response_ids)
    if len(flags) != len(response_ids):
        raise ValueError("model_generated needs one flag per response token")
    return prompt_ids + response_ids, [0] * len(prompt_ids) + [int(flag) for flag in flags]
