"""Rewards from the GenAI conventions' feedback construct: the `gen_ai.evaluation.result` event.

It comes as an OTLP log record (event name `gen_ai.evaluation.result`, in the trace and span it
rates) or as a span event on the rated span. Its score (`gen_ai.evaluation.score.value`) becomes a
reward named by `gen_ai.evaluation.name`, attached to the evaluated step: the span it sits on or
refers to (its parent), else the step whose `gen_ai.response.id` it names; else it rates the whole
rollout. An evaluation with only a label (no numeric score) is not a reward.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EVENT_NAME = "gen_ai.evaluation.result"
NAME = "gen_ai.evaluation.name"
SCORE_VALUE = "gen_ai.evaluation.score.value"
SCORE_LABEL = "gen_ai.evaluation.score.label"
RESPONSE_ID = "gen_ai.response.id"


@dataclass(frozen=True)
class Evaluation:
    name: str
    score: float
    time_ns: int
    span_id: bytes = b""  # the rated span, if known
    response_id: str = ""


def is_evaluation(event_name: str, attributes: dict[str, Any]) -> bool:
    return (event_name or attributes.get("event.name")) == EVENT_NAME


def evaluation(attributes: dict[str, Any], time_ns: int, span_id: bytes = b"") -> Evaluation | None:
    """The reward an evaluation event gives; None when it has no numeric score."""
    score = attributes.get(SCORE_VALUE)
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        return None
    return Evaluation(
        name=str(attributes.get(NAME) or ""),
        score=float(score),
        time_ns=time_ns,
        span_id=span_id,
        response_id=str(attributes.get(RESPONSE_ID) or ""),
    )
