from __future__ import annotations

import asyncio
import json
import math

import pytest

import otel_lightning as ol
from otel_lightning import semconv


def reward_spans(exporter):
    return [s for s in exporter.get_finished_spans() if s.name == semconv.REWARD_SPAN_NAME]


def test_reward_decorator_records_the_return_value_and_passes_it_through(memory_exporter):
    @ol.reward
    def correct(answer: str) -> float:
        return 1.0 if answer == "4" else 0.0

    with ol.rollout(task_id="r") as info:
        assert correct("4") == 1.0
    [span] = reward_spans(memory_exporter)
    assert span.attributes[semconv.REWARD_VALUE] == 1.0
    assert span.attributes[semconv.REWARD_NAME] == "correct"
    assert span.attributes[semconv.SPAN_KIND] == semconv.SPAN_KIND_REWARD
    assert span.attributes[semconv.ROLLOUT_ID] == info.rollout_id


def test_async_reward_with_named_components_records_their_sum(memory_exporter):
    @ol.reward(name="graded")
    async def grade() -> dict:
        return {"format": 0.25, "correct": 1}

    with ol.rollout(task_id="r"):
        assert asyncio.run(grade()) == {"format": 0.25, "correct": 1}
    [span] = reward_spans(memory_exporter)
    assert span.attributes[semconv.REWARD_VALUE] == 1.25
    assert span.attributes[semconv.REWARD_NAME] == "graded"
    assert json.loads(span.attributes[semconv.REWARD_COMPONENTS]) == {"correct": 1.0, "format": 0.25}


def test_emit_reward_inline(memory_exporter):
    with ol.rollout(task_id="r"):
        assert ol.emit_reward(3, name="bonus") == 3.0
    [span] = reward_spans(memory_exporter)
    assert (span.attributes[semconv.REWARD_VALUE], span.attributes[semconv.REWARD_NAME]) == (3.0, "bonus")


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("1.0", TypeError),
        (None, TypeError),
        (True, TypeError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ({"a": "x"}, TypeError),
        ({}, ValueError),
        ({"a": math.nan}, ValueError),
    ],
)
def test_bad_rewards_raise_clear_errors_and_record_nothing(memory_exporter, value, error):
    @ol.reward
    def scorer():
        return value

    with pytest.raises(error, match="reward"):
        scorer()
    with pytest.raises(error, match="reward"):
        ol.emit_reward(value)
    assert reward_spans(memory_exporter) == []
