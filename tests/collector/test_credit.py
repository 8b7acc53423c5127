"""Credit-assignment rules against hand-computed values."""

from __future__ import annotations

import pytest

from otel_lightning_collector.credit import CREDIT_RULES, auto, credit_rule, final_to_all, per_step

# Three steps ending at t=10, 20, 30.
ENDS = [10, 20, 30]


def test_final_to_all_gives_every_step_the_total():
    assert final_to_all(ENDS, [(35, 1.0), (36, 0.5)]) == [1.5, 1.5, 1.5]
    assert final_to_all(ENDS, []) == [0.0, 0.0, 0.0]


def test_per_step_credits_the_last_step_before_each_reward():
    # 12 -> step 0 (ended at 10), 25 -> step 1, 31 -> step 2, 5 (before any step) -> step 0
    assert per_step(ENDS, [(12, 1.0), (25, 2.0), (31, 4.0), (5, 8.0)]) == [9.0, 2.0, 4.0]
    assert per_step(ENDS, [(20, 1.0)]) == [0.0, 1.0, 0.0]  # at the very end of step 1: step 1's
    assert per_step([], [(1, 1.0)]) == []


def test_auto_is_per_step_only_when_rewards_follow_steps():
    assert auto(ENDS, [(40, 1.0)]) == [1.0, 1.0, 1.0]
    assert auto(ENDS, [(15, 0.25), (40, 1.0)]) == [0.25, 0.0, 1.0]
    assert auto([10], [(5, 1.0)]) == [1.0]


def test_rules_are_registered_by_name_and_unknown_names_are_refused():
    assert {"auto", "final_to_all", "per_step"} <= set(CREDIT_RULES)
    assert credit_rule("per_step") is per_step
    with pytest.raises(ValueError, match="unknown credit rule 'nope'"):
        credit_rule("nope")
