"""Wrap a framework's functions when the agent imports the framework, not before.

Under `opentelemetry-instrument` every installed instrumentor runs in every agent process; one
that imports its framework eagerly costs each process that never uses it the import (seconds for
some frameworks). These patches wait for the module's import (they apply at once if it happened).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from opentelemetry.instrumentation.utils import unwrap
from wrapt import register_post_import_hook, wrap_function_wrapper


@dataclass(frozen=True)
class Patch:
    module: str
    name: str  # "function" or "Class.method"
    wrapper: Callable[..., Any]


class LazyPatches:
    def __init__(self, patches: Sequence[Patch]) -> None:
        self.patches = list(patches)
        self._active = False

    def apply(self) -> None:
        self._active = True
        for module in dict.fromkeys(patch.module for patch in self.patches):
            register_post_import_hook(self._patch, module)

    def _patch(self, module: ModuleType) -> None:
        # wrapt cannot unregister a hook: one left from an earlier apply() finds itself inactive.
        if not self._active:
            return
        for patch in self.patches:
            if patch.module == module.__name__:
                wrap_function_wrapper(module, patch.name, patch.wrapper)

    def remove(self) -> None:
        self._active = False
        for patch in self.patches:
            module = sys.modules.get(patch.module)
            if module is None:
                continue
            owner_path, _, attribute = patch.name.rpartition(".")
            owner: Any = module
            for part in filter(None, owner_path.split(".")):
                owner = getattr(owner, part)
            unwrap(owner, attribute)
