"""GRPO functions against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from otel_lightning.train.grpo import (
    ADVANTAGE_ESTIMATORS,
    clipped_policy_loss,
    grpo_outcome_advantage,
    kl_penalty,
    sequence_with_mask,
)


def test_group_normalised_advantages():
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 0.5])
    groups = torch.tensor([0, 0, 0, 0, 1, 2])
    advantages = grpo_outcome_advantage(scores, groups, epsilon=0.0)
    std = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]
    assert advantages[:4].tolist() == pytest.approx([0.5 / std, -0.5 / std, -0.5 / std, 0.5 / std])
    # A group of one: mean 0, std 1, as verl does.
    assert advantages[4:].tolist() == pytest.approx([5.0, 0.5])
    assert ADVANTAGE_ESTIMATORS["grpo"] is grpo_outcome_advantage


def test_identical_scores_give_zero_advantage():
    assert grpo_outcome_advantage(torch.tensor([1.0, 1.0, 1.0]), torch.tensor([0, 0, 0])).tolist() == [0, 0, 0]


def test_clipped_loss_by_hand():
    logprobs = torch.log(torch.tensor([[0.5, 0.9, 0.1]]))
    old = torch.log(torch.tensor([[0.5, 0.5, 0.5]]))  # ratios 1.0, 1.8, 0.2
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the last token is not the model's
    loss, stats = clipped_policy_loss(logprobs, old, torch.tensor([2.0]), mask, clip_ratio=0.2)
    # A>0: per token max(-A r, -A clip(r)) = -A min(r, 1.2) -> -2*1.0, -2*1.2
    assert float(loss) == pytest.approx((-2.0 - 2.4) / 2)
    assert stats["clip_fraction"] == pytest.approx(0.5)


def test_loss_mask_excludes_tool_output_tokens():
    ids, mask = sequence_with_mask([1, 2, 3], [10, 11, 50, 51, 12], [True, True, False, False, True])
    assert ids == [1, 2, 3, 10, 11, 50, 51, 12]
    assert mask == [0, 0, 0, 1, 1, 0, 0, 1]
    logprobs = torch.zeros(1, 7, requires_grad=True)
    loss, _ = clipped_policy_loss(
        logprobs, logprobs.detach(), torch.tensor([1.0]), torch.tensor([mask[1:]], dtype=torch.float)
    )
    loss.backward()
    # Only tokens the model generated get a gradient.
    assert (logprobs.grad[0] != 0).tolist() == [bool(m) for m in mask[1:]]
    with pytest.raises(ValueError):
        sequence_with_mask([1], [2, 3], [True])


def test_kl_penalty_is_zero_at_the_reference_and_positive_elsewhere():
    mask = torch.ones(1, 2)
    same = torch.log(torch.tensor([[0.3, 0.6]]))
    assert float(kl_penalty(same, same, mask)) == pytest.approx(0.0)
    assert float(kl_penalty(same, torch.log(torch.tensor([[0.6, 0.3]])), mask)) > 0
