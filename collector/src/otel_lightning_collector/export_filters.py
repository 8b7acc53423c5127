"""What `otel-lightning export` keeps, and the count of what it leaves out, by reason (nothing silent)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime

from otel_lightning_collector.export_store import StoredRollout
from otel_lightning_collector.transitions import STATUSES

# The filters' stages, in the order they apply and are reported in.
RETENTION, STATUS, TIME, REWARD, EMPTY, AGENT, LAYOUT, LIMIT = range(8)

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class ExportError(Exception):
    """A one-line error for the user (exit status 2)."""


def parse_time(value: str, now_s: float | None = None) -> int:
    """An ISO-8601 time (no zone: local time) or a duration before now (`24h`, `30m`, `7d`), in ns."""
    found = _DURATION.match(value.strip())
    if found:
        now_s = time.time() if now_s is None else now_s
        return int((now_s - float(found[1]) * _SECONDS[found[2]]) * 1e9)
    try:
        # Python 3.10's fromisoformat reads no "Z".
        return int(datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp() * 1e9)
    except ValueError:
        raise ExportError(
            f"bad time {value!r}: give an ISO-8601 time (2026-05-01T12:00:00Z) or a duration before now (24h, 30m, 7d)"
        ) from None


def parse_statuses(values: list[str]) -> frozenset[str] | None:
    """The statuses asked for (repeated flags, comma lists); None: any."""
    wanted = {part.strip() for value in values for part in value.split(",") if part.strip()}
    if "any" in wanted:
        return None
    unknown = sorted(wanted - set(STATUSES))
    if unknown:
        raise ExportError(f"unknown status {', '.join(unknown)}: one of {', '.join(STATUSES)}, or any")
    return frozenset(wanted)


def count(n: int, unit: str) -> str:
    return f"{n} {unit if n == 1 else unit + 's'}"


@dataclass
class LeftOut:
    """Counts of what was left out, by (stage, unit, reason)."""

    counts: dict[tuple[int, str, str], int] = field(default_factory=dict)

    def add(self, stage: int, unit: str, reason: str, n: int = 1) -> None:
        self.counts[(stage, unit, reason)] = self.counts.get((stage, unit, reason), 0) + n

    def __str__(self) -> str:
        if not self.counts:
            return "left out: none"
        ordered = sorted(self.counts.items(), key=lambda item: item[0][0])  # stable: first seen within a stage
        return "left out: " + ", ".join(f"{count(n, unit)} {reason}" for (_, unit, reason), n in ordered)


@dataclass
class Selection:
    """The rollout filters: status, completion time, reward, and having transitions at all."""

    statuses: frozenset[str] | None = frozenset({"succeeded"})
    min_reward: float | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    since_text: str = ""
    until_text: str = ""

    def reason_to_leave_out(self, rollout: StoredRollout) -> tuple[int, str] | None:
        """(stage, reason) of the first filter that leaves the rollout out; None if none does."""
        if self.statuses is not None and rollout.status not in self.statuses:
            shown = ",".join(sorted(self.statuses))
            return STATUS, f"status!={shown}" if len(self.statuses) == 1 else f"status not in {shown}"
        if self.since_ns is not None or self.until_ns is not None:
            if rollout.completed_ns is None:
                return TIME, "with no completion time (row removed by retention)"
            if self.since_ns is not None and rollout.completed_ns < self.since_ns:
                return TIME, f"completed before {self.since_text}"
            if self.until_ns is not None and rollout.completed_ns > self.until_ns:
                return TIME, f"completed after {self.until_text}"
        if self.min_reward is not None:
            if not rollout.has_reward:
                return REWARD, "without a reward"
            if rollout.reward < self.min_reward:
                return REWARD, f"reward<{self.min_reward:g}"
        if rollout.transition_count == 0:
            return EMPTY, "with no transition"
        return None
