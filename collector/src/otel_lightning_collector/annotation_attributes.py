"""OpenInference annotations carried on the span they rate (OpenInference `spec/annotations.md`).

A judge's result is flattened into span attributes, in annotation or evaluation terms (both equivalent):
`annotations.<i>.annotation.name`, `.score`, `.label`, ... or `evaluations.<i>.evaluation.name`, ....
Each result with a numeric score becomes a reward named by `name`, attached to the span's step like a
`gen_ai.evaluation.result` span event; a result with only a label or an explanation is not a reward (as
for the GenAI event). Pure functions.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from otel_lightning import semconv
from otel_lightning_collector.evaluations import Evaluation

_FIELD = re.compile(
    "^(?:"
    + "|".join(rf"{plural}\.(\d+)\.{singular}" for plural, singular in semconv.OPENINFERENCE_ANNOTATION_FORMS)
    + r")\.(\w+)$"
)


@dataclass(frozen=True)
class SpanAnnotation:
    name: str
    score: float | None
    label: str = ""
    identifier: str = ""


def span_annotations(attributes: dict[str, Any]) -> list[SpanAnnotation]:
    """The annotation objects in a span's attributes (annotation form first, each in index order); those
    without a name are skipped (the spec requires one). The same result given in both forms counts once."""
    objects: dict[tuple[int, int], dict[str, Any]] = {}
    for key, value in attributes.items():
        if not key.endswith(tuple(f".{field}" for field in ("name", "score", "label", "identifier"))):
            continue
        found = _FIELD.match(key)
        if found is None:
            continue
        groups = found.groups()
        form = next(index for index, group in enumerate(groups[:-1]) if group is not None)
        objects.setdefault((form, int(groups[form])), {})[groups[-1]] = value
    results: list[SpanAnnotation] = []
    for _position, fields in sorted(objects.items()):
        name = fields.get("name")
        if not isinstance(name, str) or not name:
            continue
        score = fields.get("score")
        numeric = isinstance(score, (int, float)) and not isinstance(score, bool) and math.isfinite(score)
        item = SpanAnnotation(
            name=name,
            score=float(score) if numeric else None,
            label=str(fields.get("label") or ""),
            identifier=str(fields.get("identifier") or ""),
        )
        if item not in results:
            results.append(item)
    return results


def annotation_rewards(attributes: dict[str, Any], time_ns: int, span_id: bytes) -> list[Evaluation]:
    """Rewards from the span's scored annotations, rating the span itself."""
    return [
        Evaluation(name=item.name, score=item.score, time_ns=time_ns, span_id=span_id)
        for item in span_annotations(attributes)
        if item.score is not None
    ]
