"""Credit assignment: which step of a rollout each reward belongs to.

Each rule is a pure function registered by name:

    rule(step_ends_ns: list[int], rewards: list[tuple[int, float]]) -> list[float]

`step_ends_ns[i]` is when LLM step i ended (steps sorted by time), `rewards` are (time, value)
pairs of the rollout's reward spans. The result has one reward per step.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable

CreditRule = Callable[[list[int], list[tuple[int, float]]], list[float]]

CREDIT_RULES: dict[str, CreditRule] = {}


def register(name: str) -> Callable[[CreditRule], CreditRule]:
    def add(rule: CreditRule) -> CreditRule:
        CREDIT_RULES[name] = rule
        return rule

    return add


@register("final_to_all")
def final_to_all(step_ends_ns: list[int], rewards: list[tuple[int, float]]) -> list[float]:
    """Every step gets the rollout's total reward (outcome reward, as GRPO uses it)."""
    total = math.fsum(value for _, value in rewards)
    return [total] * len(step_ends_ns)


@register("per_step")
def per_step(step_ends_ns: list[int], rewards: list[tuple[int, float]]) -> list[float]:
    """Each reward goes to the last step that ended before it; rewards before any step go to step 0."""
    assigned = [0.0] * len(step_ends_ns)
    if not assigned:
        return assigned
    for at_ns, value in rewards:
        index = max(bisect.bisect_right(step_ends_ns, at_ns) - 1, 0)
        assigned[index] += value
    return assigned


@register("auto")
def auto(step_ends_ns: list[int], rewards: list[tuple[int, float]]) -> list[float]:
    """per_step when some reward comes before the last step (rewards follow steps), else final_to_all."""
    if len(step_ends_ns) > 1 and any(at_ns < step_ends_ns[-1] for at_ns, _ in rewards):
        return per_step(step_ends_ns, rewards)
    return final_to_all(step_ends_ns, rewards)


def credit_rule(name: str) -> CreditRule:
    try:
        return CREDIT_RULES[name]
    except KeyError:
        raise ValueError(f"unknown credit rule {name!r}; choose one of {sorted(CREDIT_RULES)}") from None
