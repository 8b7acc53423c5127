"""ExportTickets: which export requests a rollout's completion must wait for.

Spans of one rollout may straddle export requests that are in flight together (an SDK's
exporters send several at once, and rollouts interleave), and the indexer may store the root's
request before the others. Every request gets a ticket, numbered in arrival order, when its
transport starts on it. When the request ends (acknowledged or refused), its `barrier` is the
highest ticket issued so far: every request acknowledged before it, or in flight with it. A ticket
closes once its request is indexed (or at once, when nothing was kept to index). A rollout whose
root came in ticket T is completed only after every ticket up to T's barrier is closed: exact, at
any settle time and any number of concurrent exports.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass
class ExportTicket:
    number: int
    # Set when the request ends: the highest ticket issued by then (None: still in flight).
    barrier: int | None = None
    # True once the request is committed for indexing: the indexer closes the ticket, not the transport.
    handed_over: bool = False


class ExportTickets:
    def __init__(self) -> None:
        self._issued = 0
        self._open: set[int] = set()
        # Tickets opened when a call arrived, whose handler has not started (its body is still coming):
        # number -> when to give up on it (a call cancelled before its handler ran never starts).
        self._unstarted: dict[int, float] = {}
        self._changed = threading.Condition()

    def open(self, unstarted_for_s: float | None = None) -> ExportTicket:
        """A new ticket; `unstarted_for_s`: opened at the call's arrival, `start`ed by its handler,
        or dropped if that has not happened within this time."""
        with self._changed:
            self._issued += 1
            self._open.add(self._issued)
            if unstarted_for_s is not None:
                self._unstarted[self._issued] = time.monotonic() + unstarted_for_s
            return ExportTicket(self._issued)

    def start(self, ticket: ExportTicket) -> None:
        with self._changed:
            self._unstarted.pop(ticket.number, None)

    def end_request(self, ticket: ExportTicket) -> None:
        """The request was answered: fix its barrier; close it unless the indexer owns it now."""
        with self._changed:
            ticket.barrier = self._issued
            if not ticket.handed_over:
                self._open.discard(ticket.number)
            self._changed.notify_all()

    def close(self, ticket: ExportTicket) -> None:
        """The indexer is done with this request (stored, or failed and left in the store)."""
        with self._changed:
            self._open.discard(ticket.number)
            self._changed.notify_all()

    def for_stored_request(self) -> ExportTicket:
        """The ticket of a request acknowledged by an earlier run, found in the store at start
        (`end_request` it once all of them have one: any may have been in flight together)."""
        with self._changed:
            self._issued += 1
            self._open.add(self._issued)
            return ExportTicket(self._issued, handed_over=True)

    def fence(self) -> ExportTicket:
        """A ticket standing for everything issued so far (rollouts found ready at start wait for
        the requests left unindexed by the previous run)."""
        with self._changed:
            return ExportTicket(self._issued, barrier=self._issued, handed_over=True)

    def unsettled(self) -> int:
        """Tickets still open (requests in flight or waiting to be indexed)."""
        with self._changed:
            return len(self._open)

    def _settled(self, tickets: list[ExportTicket]) -> bool:
        now = time.monotonic()
        for number, give_up_at in list(self._unstarted.items()):
            if now > give_up_at:
                del self._unstarted[number]
                self._open.discard(number)
        if any(ticket.barrier is None for ticket in tickets):
            return False
        barrier = max(ticket.barrier for ticket in tickets)  # type: ignore[type-var]
        return not self._open or min(self._open) > barrier

    def wait_settled(self, tickets: Iterable[ExportTicket], timeout_s: float) -> bool:
        """Wait until each ticket's request has ended and every ticket up to their barriers is closed."""
        tickets = list(tickets)
        if not tickets:
            return True
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not self._settled(tickets):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True
