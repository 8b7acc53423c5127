"""Soak: the whole loop for a bounded time with faults injected on a schedule; nothing may be lost or doubled.

A collector (its own process), two workers (`otel-lightning worker`, processes running the calc
agent against a stub policy server), a submitter keeping the task pool fed, and a trainer reading
the transition stream. Every `--fault-every` seconds the next fault in turn:

  kill -9 the collector (restarted at once on the same store), kill -9 a worker (restarted; its
  leases expire and the samples run again), stall the trainer (it stops reading for a while),
  take the policy server down (rollouts end llm_error and are retried).

At the end (submitting stops, everything drains) it prints: rollouts started and finished,
transitions produced (in the store) and consumed (by the trainer), lost (produced, never
consumed: must be 0), duplicated (consumed twice: must be 0), rollouts by status, and the
collector's peak RSS.

    python benchmarks/soak.py [--minutes 10] [--fault-every 30] [--json]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otel_lightning.stream_client import TransitionStreamClient  # noqa: E402
from otel_lightning.task_client import TaskPoolClient  # noqa: E402
from tests.support import ChildProcess, free_port  # noqa: E402

EVENT_TRANSITION, EVENT_ROLLOUT = 1, 2


def wait_for_port(port: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on port {port}")


class Trainer:
    """Follows the stream; counts each transition and completion, and any seen twice."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.transitions: collections.Counter[tuple[str, str, int]] = collections.Counter()
        self.completions: collections.Counter[str] = collections.Counter()
        self.statuses: collections.Counter[str] = collections.Counter()
        self.stalled = threading.Event()
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        client = TransitionStreamClient(self.address, consumer="trainer", reconnect_timeout_s=120, max_in_flight=512)
        for event in client:
            while self.stalled.is_set() and not self.stopped.is_set():
                time.sleep(0.05)
            if event.HasField("transition"):
                t = event.transition
                self.transitions[t.rollout_id, t.agent, t.step] += 1
            else:
                self.completions[event.rollout.rollout_id] += 1
                self.statuses[event.rollout.status] += 1
            client.ack(event.sequence)
            if self.stopped.is_set():
                break
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--fault-every", type=float, default=30.0, help="seconds between faults")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="soak-"))
    store = tmp / "soak.db"
    port, stub_port = free_port(), free_port()
    address = f"127.0.0.1:{port}"
    collector = ChildProcess(
        [
            *(sys.executable, "-m", "otel_lightning.cli", "collector", "--listen", address),
            *("--http-listen", "off", "--store", str(store), "--rollout-timeout", "20", "--max-attempts", "5"),
        ],
        cwd=ROOT,
    ).start()
    wait_for_port(port)
    env = {**os.environ, "OPENAI_API_KEY": "unused", "OTEL_BSP_SCHEDULE_DELAY": "100"}
    workers = [
        ChildProcess(
            [
                *(sys.executable, "-m", "otel_lightning.cli", "worker", "--collector", address, "--concurrency", "4"),
                *("--lease", "3", "--timeout", "30", "--openai-base-url", f"http://127.0.0.1:{stub_port}/v1"),
                "examples.calc_agent.agent:run",
            ],
            cwd=ROOT,
            env=env,
        ).start()
        for _ in range(args.workers)
    ]
    # The stub policy server in a process of its own, so that taking it down closes every connection.
    stub = ChildProcess(
        [sys.executable, "-m", "otel_lightning.testing.openai_stub", "--port", str(stub_port)], cwd=ROOT
    ).start()
    wait_for_port(stub_port)
    trainer = Trainer(address)
    trainer.thread.start()
    pool = TaskPoolClient(address)
    peak_rss = 0
    faults: collections.Counter[str] = collections.Counter()
    submitted = 0

    def sample_rss() -> None:
        nonlocal peak_rss
        try:
            peak_rss = max(peak_rss, psutil.Process(collector.process.pid).memory_info().rss)
        except psutil.Error:
            pass

    def call(function, *arguments):  # the collector may be down for a moment: retry
        deadline = time.monotonic() + 120
        while True:
            try:
                return function(*arguments)
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    began = time.monotonic()
    end = began + args.minutes * 60
    next_fault = began + args.fault_every
    schedule = ["collector", "worker", "trainer", "policy"]
    try:
        while time.monotonic() < end:
            stats = call(pool.stats)
            if stats["queued"] < 16:
                batch = [
                    (
                        f"s{submitted + i}",
                        {"question": f"What is {i % 9 + 2} * 7?", "answer": f"The answer is {(i % 9 + 2) * 7}."},
                    )
                    for i in range(16)
                ]
                submitted += call(pool.submit, batch)
            sample_rss()
            if time.monotonic() >= next_fault:
                fault = schedule[sum(faults.values()) % len(schedule)]
                faults[fault] += 1
                if fault == "collector":
                    collector.kill()
                    collector.start()
                    wait_for_port(port)
                elif fault == "worker":
                    victim = workers[faults[fault] % len(workers)]
                    victim.kill()
                    victim.start()
                elif fault == "trainer":
                    trainer.stalled.set()
                    threading.Timer(10, trainer.stalled.clear).start()
                else:
                    stub.kill()
                    time.sleep(3)
                    stub.start()
                    wait_for_port(stub_port)
                next_fault += args.fault_every
            time.sleep(0.5)
        # Drain: no new tasks; every sample done or failed, every completion consumed.
        trainer.stalled.clear()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            stats = call(pool.stats)
            sample_rss()
            if stats["queued"] == 0 and stats["leased"] == 0:
                break
            time.sleep(1)
        time.sleep(25)  # rollouts of killed workers: completed abandoned/incomplete by the collector
        produced_seq = 0
        while time.monotonic() < deadline:
            produced_seq = json.loads(
                subprocess.run(
                    [sys.executable, "-m", "otel_lightning.cli", "status", "--collector", address, "--json"],
                    capture_output=True,
                    text=True,
                    cwd=ROOT,
                ).stdout
                or "{}"
            ).get("lastSequence", "0")
            consumed = sum(trainer.transitions.values()) + sum(trainer.completions.values())
            if int(produced_seq) and consumed >= int(produced_seq):
                break
            time.sleep(1)
    finally:
        trainer.stopped.set()
        for worker in workers:
            worker.stop()
        stub.stop()
        collector.stop()

    db = sqlite3.connect(store)
    produced_transitions = {
        row for row in db.execute("SELECT rollout_id, sequence FROM events WHERE kind = ?", (EVENT_TRANSITION,))
    }
    produced_rollouts = {row[0] for row in db.execute("SELECT rollout_id FROM events WHERE kind = ?", (EVENT_ROLLOUT,))}
    samples = dict(db.execute("SELECT state, COUNT(*) FROM samples GROUP BY state").fetchall())
    attempts = db.execute("SELECT COALESCE(SUM(attempts), 0) FROM samples").fetchone()[0]
    open_rollouts = db.execute("SELECT COUNT(*) FROM rollouts WHERE state = 'open'").fetchone()[0]
    consumed_rollouts = set(trainer.completions)
    figures = {
        "minutes": args.minutes,
        "faults": dict(faults),
        "tasks_submitted": submitted,
        "rollouts_started": attempts,
        "samples_finished": samples.get("done", 0) + samples.get("failed", 0),
        "rollouts_completed": len(produced_rollouts),
        "rollouts_by_status": dict(trainer.statuses),
        "rollouts_open_at_end": open_rollouts,
        "transitions_produced": len(produced_transitions),
        "transitions_consumed": len(trainer.transitions),
        "lost": len(produced_rollouts - consumed_rollouts)
        + max(len(produced_transitions) - len(trainer.transitions), 0),
        "duplicated": sum(count - 1 for count in trainer.transitions.values() if count > 1)
        + sum(count - 1 for count in trainer.completions.values() if count > 1),
        "collector_peak_rss_mb": round(peak_rss / 1e6, 1),
    }
    if args.json:
        print(json.dumps(figures))
        return
    for name, value in figures.items():
        print(f"{name:>24}: {value}")


if __name__ == "__main__":
    main()
