"""Sampling seeds for requests that bring none, so that the same run samples the same tokens.

Concurrent rollouts reach the policy server in whatever order the machine's timing gives; drawn from
torch's one global generator, each sample depended on that order, and two runs of the demo with the
same seed ended at different rewards. Here a request without a seed gets one from what it asks
(policy version, agent, temperature, prompt tokens) and how many times the same thing was asked
before: a group's four answers to one question are the same four samples whatever order its
requests arrive in, and still four different ones.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence


class SampleSeeds:
    def __init__(self) -> None:
        self._asked: dict[bytes, int] = {}
        self._version: int | None = None
        self._lock = threading.Lock()

    def next(self, version: int, agent: str | None, temperature: float, prompt_ids: Sequence[int]) -> int:
        key = f"{agent}|{temperature!r}|{','.join(map(str, prompt_ids))}".encode()
        with self._lock:
            if version != self._version:  # a new policy: earlier prompts are not asked of it again
                self._asked.clear()
                self._version = version
            count = self._asked.get(key, 0)
            self._asked[key] = count + 1
        return (zlib.crc32(key) * 1_000_003 + count * 7_919 + version * 104_729) % 2**63
