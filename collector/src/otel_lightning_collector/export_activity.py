"""ExportActivity: lets the collector's background work wait while exports are being acknowledged.

On a busy collector the exporters' acks come first: an SDK whose exports are slow to be
acknowledged fills its span queue and drops spans. While a burst is being absorbed (the backlog
of acknowledged spans not yet indexed is over `busy_backlog`), indexing and assembly wait for a
quiet moment between exports, for a bounded time, so they never starve. At a steady rate the
backlog stays small and nothing waits: transitions are not delayed.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator

from otel_lightning_collector.export_tickets import ExportTicket, ExportTickets


class ExportActivity:
    def __init__(self, quiet_for_s: float = 0.005, busy_backlog: int = 1024) -> None:
        self.quiet_for_s = quiet_for_s
        self.busy_backlog = busy_backlog
        # Spans acknowledged and not yet indexed (the server wires in the indexer's count).
        self.backlog: Callable[[], int] = lambda: 0
        self._in_flight = 0
        self._last_change = 0.0
        self._quiet = threading.Condition()
        # Numbers every export, so a rollout's completion can wait for those in flight with its root.
        self.tickets = ExportTickets()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @contextlib.contextmanager
    def exporting(self, ticket: ExportTicket | None = None) -> Iterator[ExportTicket]:
        """Marks one export request in flight, for its whole handling (decoding included); `ticket`:
        the one opened when its call arrived, if any."""
        if ticket is None:
            ticket = self.tickets.open()
        else:
            self.tickets.start(ticket)
        with self._quiet:
            self._in_flight += 1
        try:
            yield ticket
        finally:
            self.tickets.end_request(ticket)
            with self._quiet:
                self._in_flight -= 1
                self._last_change = time.monotonic()
                if not self._in_flight:
                    self._quiet.notify_all()

    def wait_quiet(self, max_wait_s: float) -> None:
        """Return once no export has been in flight for `quiet_for_s` (exporters sending back to back
        leave gaps shorter than that between their requests), or after `max_wait_s`; at once when no
        burst is under way."""
        if self.backlog() < self.busy_backlog:
            return
        deadline = time.monotonic() + max_wait_s
        with self._quiet:
            while True:
                now = time.monotonic()
                if now >= deadline:
                    return
                if not self._in_flight:
                    quiet_until = self._last_change + self.quiet_for_s
                    if now >= quiet_until:
                        return
                    self._quiet.wait(min(quiet_until, deadline) - now)
                else:
                    self._quiet.wait(deadline - now)
