"""Rewards as spans: `@reward` on a scoring function, or `emit_reward(...)` inline."""

from __future__ import annotations

import functools
import inspect
import json
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, overload

from opentelemetry import trace

from otel_lightning import semconv
from otel_lightning.version import __version__

RewardValue = float | Mapping[str, float]
F = TypeVar("F", bound=Callable[..., Any])


def _check_number(value: object, what: str) -> float:
    # bool is an int subclass, but True as a reward is almost always a bug in the scorer.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__}: {value!r}")
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        raise ValueError(f"{what} must be finite, got {number}")
    return number


def normalize_reward(value: object) -> tuple[float, dict[str, float] | None]:
    """Check a reward and return (total, components). A dict's total is the sum of its values."""
    if isinstance(value, Mapping):
        if not value:
            raise ValueError("a reward dict needs at least one named component")
        components = {}
        for name, component in value.items():
            if not isinstance(name, str):
                raise TypeError(f"reward component names must be strings, got {name!r}")
            components[name] = _check_number(component, f"reward component {name!r}")
        return math.fsum(components.values()), components
    return _check_number(value, "reward"), None


def emit_reward(value: RewardValue, name: str | None = None) -> float:
    """Record a reward for the current rollout as a `lightning.reward` span; returns the total.

    `value` is a number or a dict of named numbers (recorded separately, summed into the total).
    Raises TypeError for non-numbers and ValueError for NaN/inf, before anything is recorded.
    """
    total, components = normalize_reward(value)
    attributes: dict[str, Any] = {
        semconv.SPAN_KIND: semconv.SPAN_KIND_REWARD,
        semconv.REWARD_VALUE: total,
    }
    if name:
        attributes[semconv.REWARD_NAME] = name
    if components is not None:
        attributes[semconv.REWARD_COMPONENTS] = json.dumps(components, sort_keys=True)
    tracer = trace.get_tracer("otel_lightning", __version__)
    tracer.start_span(semconv.REWARD_SPAN_NAME, attributes=attributes).end()
    return total


@overload
def reward(func: F) -> F: ...
@overload
def reward(*, name: str | None = None) -> Callable[[F], F]: ...


def reward(func: F | None = None, *, name: str | None = None) -> Any:
    """Decorate a (sync or async) scoring function; each call's return value is emitted as a reward.

        @reward
        def correct(answer: str, expected: str) -> float:
            return float(answer.strip() == expected)

    The function's own return value is passed through unchanged.
    """

    def decorate(scorer: F) -> F:
        reward_name = name or scorer.__name__
        if inspect.iscoroutinefunction(scorer):

            @functools.wraps(scorer)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                value = await scorer(*args, **kwargs)
                emit_reward(value, name=reward_name)
                return value

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(scorer)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            value = scorer(*args, **kwargs)
            emit_reward(value, name=reward_name)
            return value

        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate
