"""ExportActivity: lets the collector's background work wait while exports are being acknowledged.

On a busy collector the exporters' acks come first: an SDK whose exports are slow to be
acknowledged fills its span queue and drops spans. Indexing and assembly are deferred while an
export is in flight, for a bounded time, so they never starve.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class ExportActivity:
    def __init__(self) -> None:
        self._in_flight = 0
        self._quiet = threading.Condition()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextlib.contextmanager
    def exporting(self) -> Iterator[None]:
        with self._quiet:
            self._in_flight += 1
        try:
            yield
        finally:
            with self._quiet:
                self._in_flight -= 1
                if not self._in_flight:
                    self._quiet.notify_all()

    def wait_quiet(self, max_wait_s: float) -> None:
        """Return once no export is in flight, or after `max_wait_s`."""
        with self._quiet:
            self._quiet.wait_for(lambda: not self._in_flight, timeout=max_wait_s)
