"""`module:function` names of user code (agents, reward functions), loaded with errors that say what to fix."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from typing import Any


class LoadError(ValueError):
    """The name does not lead to a callable; the message says which part did not resolve."""


def load_callable(spec: str, what: str = "function") -> Callable[..., Any]:
    """The callable named `module:attribute` (dotted attributes allowed), importable from the current directory.

    `what` names it in errors ("reward function", "agent").
    """
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise LoadError(f"expected MODULE:FUNCTION for the {what} (e.g. my_rewards:correct), got {spec!r}")
    if os.getcwd() not in sys.path:  # as `python -m` would: the user's module beside where they run the command
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise LoadError(f"cannot import module {module_name!r} for the {what} {spec!r}: {error}") from error
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise LoadError(f"module {module_name!r} has no {attribute!r} (the {what} {spec!r})")
        target = getattr(target, part)
    if not callable(target):
        raise LoadError(f"{spec!r} is a {type(target).__name__}, not a callable {what}")
    return target
