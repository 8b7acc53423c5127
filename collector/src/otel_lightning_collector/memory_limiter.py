"""MemoryLimiter: admission by memory, like the OpenTelemetry Collector's memory_limiter processor.

Above a soft limit on the process's resident memory, exports are refused with a retryable error
until what the collector holds in memory (acknowledged spans not yet indexed) has drained; the
exporters back off and send again. RSS is read at most every `check_interval_s` (one /proc read).
A Python process rarely gives freed memory back to the system, so RSS may stay above the limit
with nothing held: refusing then would only starve the pipeline, so exports are accepted again and
a warning says the limit is below the process's resting size.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import psutil

logger = logging.getLogger(__name__)

_WARN_EVERY_S = 10.0


class MemoryLimiter:
    def __init__(
        self,
        limit_bytes: int,
        held: Callable[[], int],
        *,
        check_interval_s: float = 0.1,
        rss: Callable[[], int] | None = None,
    ) -> None:
        """`held`: what the collector holds that drains by itself (acknowledged spans not yet indexed)."""
        self.limit_bytes = limit_bytes
        self.held = held
        self.check_interval_s = check_interval_s
        self._process = psutil.Process()
        self._rss = rss or (lambda: self._process.memory_info().rss)
        self._lock = threading.Lock()
        self._last_check = 0.0
        self._last_rss = 0
        self._last_warning = 0.0

    def rss(self) -> int:
        """The process's resident memory, at most `check_interval_s` old."""
        now = time.monotonic()
        with self._lock:
            if now - self._last_check >= self.check_interval_s:
                self._last_rss = self._rss()
                self._last_check = now
            return self._last_rss

    def refusal(self) -> str | None:
        """Why an export must be refused now, or None to accept it."""
        rss = self.rss()
        if rss <= self.limit_bytes:
            return None
        held = self.held()
        if held == 0:
            now = time.monotonic()
            if now - self._last_warning >= _WARN_EVERY_S:
                self._last_warning = now
                logger.warning(
                    "collector RSS %.0f MB is over its soft memory limit %.0f MB with nothing held in memory;"
                    " accepting exports (raise --memory-limit-mb: the limit is below this process's resting size)",
                    rss / 2**20,
                    self.limit_bytes / 2**20,
                )
            return None
        return (
            f"collector memory {rss / 2**20:.0f} MB is over its soft limit {self.limit_bytes / 2**20:.0f} MB"
            f" ({held} acknowledged spans are being indexed); retry later"
        )
