"""Confidence intervals and the paired test, against values worked out by hand."""

from __future__ import annotations

from otel_lightning.optimize.statistics import confidence_interval, mean, paired_test


def test_interval_contains_the_mean_and_narrows_with_more_data():
    few = [0.0, 1.0] * 5
    many = [0.0, 1.0] * 200
    low, high = confidence_interval(few)
    assert low < 0.5 < high
    low_many, high_many = confidence_interval(many)
    assert low < low_many < 0.5 < high_many < high
    assert confidence_interval([]) is None and confidence_interval([0.3]) == (0.3, 0.3)
    assert mean([]) is None and mean([1.0, 0.0]) == 0.5


def test_paired_test_exact_p_value():
    # Five tasks, the first candidate better on every one by 1: of 2^5 sign flips only the two
    # all-same ones reach |mean| = 1, so p = 2/32.
    first = {f"t{i}": [1.0] for i in range(5)}
    second = {f"t{i}": [0.0] for i in range(5)}
    result = paired_test(first, second)
    assert result.tasks == 5 and result.mean_difference == 1.0
    assert abs(result.p_value - 2 / 32) < 1e-12 and not result.significant  # 0.0625 is not < 0.05
    six = paired_test({f"t{i}": [1.0] for i in range(6)}, {f"t{i}": [0.0] for i in range(6)})
    assert abs(six.p_value - 2 / 64) < 1e-12 and six.significant


def test_paired_test_sees_no_difference_where_there_is_none_and_pairs_only_shared_tasks():
    same = {f"t{i}": [float(i % 2)] for i in range(30)}
    assert paired_test(same, dict(same)).p_value == 1.0
    assert paired_test({"a": [1.0]}, {"a": [0.0]}) is None
    partial = paired_test({"a": [1.0], "b": [1.0], "c": [1.0]}, {"a": [0.0], "b": [0.0], "z": [0.0]})
    assert partial.tasks == 2


def test_paired_test_large_sample_is_significant_for_a_real_gap():
    first = {f"t{i}": [1.0, 1.0] for i in range(40)}
    second = {f"t{i}": [1.0 if i % 4 == 0 else 0.0, 0.0] for i in range(40)}
    result = paired_test(first, second)
    assert result.significant and result.p_value < 0.001 and result.mean_difference > 0.8
