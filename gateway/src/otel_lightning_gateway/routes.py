"""Per-rollout routes: what a `/rollout/<id>/v1/...` URL means (identity, parent span, upstream, rewrite)."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.trace import SpanContext

# (endpoint path such as "/chat/completions", request body) -> the body to send upstream.
Rewrite = Callable[[str, dict[str, Any]], dict[str, Any]]

ROLLOUT_PREFIX = "/rollout/"


@dataclass(frozen=True)
class RolloutRoute:
    """What the gateway knows about one rollout's calls (registered by the worker before the agent starts)."""

    rollout_id: str
    task_id: str = ""
    attempt: int = 1
    # The rollout span: parent of each call's span when the request carries no `traceparent`.
    parent: SpanContext | None = None
    # Stamped on each call's span (e.g. lightning.candidate, lightning.policy.version).
    attributes: dict[str, Any] = field(default_factory=dict)
    # Per-rollout upstream (another candidate model server); None: the gateway's.
    upstream: str | None = None
    rewrite: Rewrite | None = None


class RouteTable:
    """Registered routes by rollout id; read on every call from the server thread, written from others.

    It also knows which rollouts have calls answered whose spans are not yet ended (the gateway answers
    first and ends the span right after): `unregister` waits for those, so a worker that ends a rollout
    as soon as its agent has the last answer still finds every span of it ended before its own."""

    def __init__(self) -> None:
        self._routes: dict[str, RolloutRoute] = {}
        self._recording: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._recorded = threading.Condition(self._lock)

    def register(self, route: RolloutRoute) -> None:
        with self._lock:
            self._routes[route.rollout_id] = route

    def unregister(self, rollout_id: str, wait_s: float = 2.0) -> RolloutRoute | None:
        with self._lock:
            self._recorded.wait_for(lambda: rollout_id not in self._recording, wait_s)
            return self._routes.pop(rollout_id, None)

    def answering(self, rollout_id: str | None) -> None:
        """A call of `rollout_id` is being answered; its span ends at `recorded`."""
        if rollout_id is not None:
            with self._lock:
                self._recording[rollout_id] += 1

    def recorded(self, rollout_id: str | None) -> None:
        if rollout_id is not None:
            with self._lock:
                self._recording[rollout_id] -= 1
                if self._recording[rollout_id] <= 0:
                    del self._recording[rollout_id]
                    self._recorded.notify_all()

    def get(self, rollout_id: str) -> RolloutRoute | None:
        return self._routes.get(rollout_id)  # a dict read is atomic: no lock on the hot path

    def __len__(self) -> int:
        return len(self._routes)


def split_rollout_path(path: str) -> tuple[str | None, str]:
    """("<id>", "/v1/...") for "/rollout/<id>/v1/...", (None, path) for any other path."""
    if not path.startswith(ROLLOUT_PREFIX):
        return None, path
    rest = path[len(ROLLOUT_PREFIX) :]
    rollout_id, slash, tail = rest.partition("/")
    return (rollout_id or None), (slash + tail if slash else "/")
