"""Mean rewards with a 95% confidence interval, and whether the best candidate beats the runner-up.

Pure functions of lists of numbers, seeded: the same rewards give the same figures.

- `confidence_interval`: percentile bootstrap of the mean (no normality assumed: rewards are often 0/1).
- `paired_test`: the two candidates' mean reward per task, paired over the tasks both were scored on,
  and a sign-flip permutation test of the mean difference (exact up to 16 tasks, else 20,000 draws):
  tasks differ in difficulty far more than candidates do, and pairing takes that out.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def confidence_interval(
    values: list[float], *, level: float = 0.95, draws: int = 5000, seed: int = 0
) -> tuple[float, float] | None:
    """Bootstrap interval of the mean of `values` (None for no values; a point for one)."""
    if not values:
        return None
    data = np.asarray(values, dtype=float)
    if len(data) == 1 or np.all(data == data[0]):
        return float(data[0]), float(data[0])
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(draws, len(data)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


@dataclass(frozen=True)
class PairedResult:
    tasks: int  # tasks both candidates were scored on
    mean_difference: float  # best minus runner-up, averaged over those tasks
    p_value: float
    significant: bool  # p < ALPHA

    def describe(self, best: str, runner_up: str) -> str:
        verdict = "beats" if self.significant and self.mean_difference > 0 else "is not distinguishable from"
        return (
            f"{best} {verdict} {runner_up} (paired over {self.tasks} tasks: mean difference"
            f" {self.mean_difference:+.3f}, p={self.p_value:.3g})"
        )


def paired_test(
    first: dict[str, list[float]], second: dict[str, list[float]], *, draws: int = 20_000, seed: int = 0
) -> PairedResult | None:
    """Sign-flip permutation test over the tasks both were scored on (task -> rewards of its repeats).

    None when fewer than two tasks are shared: nothing to test.
    """
    shared = sorted(set(first) & set(second))
    differences = np.asarray(
        [np.mean(first[task]) - np.mean(second[task]) for task in shared if first[task] and second[task]], dtype=float
    )
    if len(differences) < 2:
        return None
    observed = abs(differences.mean())
    if len(differences) <= 16:
        signs = np.asarray(list(itertools.product((1.0, -1.0), repeat=len(differences))))
    else:
        signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(draws, len(differences)))
    permuted = np.abs((signs * differences).mean(axis=1))
    # The observed assignment counts as one of the permutations (never p = 0).
    p_value = float(
        (np.sum(permuted >= observed - 1e-12) + (0 if len(differences) <= 16 else 1))
        / (len(permuted) + (0 if len(differences) <= 16 else 1))
    )
    if math.isclose(observed, 0.0, abs_tol=1e-12):
        p_value = 1.0
    return PairedResult(len(differences), float(differences.mean()), p_value, p_value < ALPHA)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None
