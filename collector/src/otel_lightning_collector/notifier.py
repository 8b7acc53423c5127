"""Wakes stream subscribers when new events are committed."""

from __future__ import annotations

import threading


class Notifier:
    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    @property
    def generation(self) -> int:
        return self._generation

    def wait(self, seen_generation: int, timeout: float) -> int:
        """Block until notified after `seen_generation` (or timeout); returns the current generation."""
        with self._condition:
            self._condition.wait_for(lambda: self._generation != seen_generation, timeout=timeout)
            return self._generation
