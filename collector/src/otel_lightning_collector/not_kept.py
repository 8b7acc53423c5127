"""What the collector received and did not keep, with the reason: counted, logged at most once a minute.

Spans outside any rollout (no rollout in their trace, and no `--episodes`) are not training data;
they are still never dropped unseen: `otel-lightning status` shows the counts, and the log says why
and what to do.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger(__name__)

_LOG_EVERY_S = 60.0


class NotKept:
    def __init__(self, log_every_s: float = _LOG_EVERY_S) -> None:
        self.log_every_s = log_every_s
        self.spans: dict[str, int] = {}
        self._unlogged: dict[str, int] = {}
        self._logged_at = -log_every_s
        self._lock = threading.Lock()

    @property
    def total(self) -> int:
        return sum(self.spans.values())

    def note(self, reason: str, spans: int) -> None:
        if spans <= 0:
            return
        with self._lock:
            self.spans[reason] = self.spans.get(reason, 0) + spans
            self._unlogged[reason] = self._unlogged.get(reason, 0) + spans
            now = time.monotonic()
            if now - self._logged_at < self.log_every_s:
                return
            self._logged_at = now
            unlogged, self._unlogged = self._unlogged, {}
        for why, count in unlogged.items():
            logger.warning("%d span(s) not kept: %s", count, why)
