"""Retention soak: a steady load for a long time with retention on; the store must stay flat.

A collector (`otel-lightning collector --retain-hours ...`, its own process) takes a steady stream
of rollouts (6 spans each, ~2 KB prompts, over OTLP/gRPC) from this process. Two durable consumers
read the transition stream: a trainer acking at once and a laggard acking a minute late, so
retention must wait for the slowest. Every few seconds it samples the store's size on disk
(database + WAL), the collector's RSS and the ingest rate, and at the end draws them over time
(a PNG) and prints:

  the store's size after the first retention window and at the end (flat: their ratio), its peak;
  the collector's peak RSS; the mean ingest rate; rollouts exported, and received by each consumer
  (all of them, once: nothing a consumer had not acked was deleted).

    python benchmarks/retention_soak.py [--minutes 22] [--retain-minutes 2.5] [--rate 20] [--out runs/retention]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from otel_lightning.stream_client import TransitionStreamClient  # noqa: E402
from tests.support import ChildProcess, SpanFactory, export_request, free_port  # noqa: E402

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
SAMPLE_S = 5.0
PROMPT = "You are a careful assistant. Think step by step. " * 40  # ~2 KB


class Consumer:
    """A durable consumer; acks each event `ack_delay_s` after it arrived. Counts completions by rollout."""

    def __init__(self, address: str, name: str, ack_delay_s: float) -> None:
        self.completions: collections.Counter[str] = collections.Counter()
        self.error = ""
        self._stop = threading.Event()
        self._client = TransitionStreamClient(address, name, max_in_flight=1 << 20, reconnect_timeout_s=120)
        self._pending: collections.deque[tuple[float, int]] = collections.deque()
        self.ack_delay_s = ack_delay_s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        threading.Thread(target=self._ack, daemon=True).start()

    def _run(self) -> None:
        try:
            for event in self._client:
                if event.HasField("rollout"):
                    self.completions[event.rollout.rollout_id] += 1
                self._pending.append((time.monotonic(), event.sequence))
        except grpc.RpcError as error:  # OUT_OF_RANGE here would mean retention deleted what it had not acked
            self.error = f"{error.code().name}: {error.details()}"

    def _ack(self) -> None:
        while not self._stop.wait(0.2):
            last = None
            while self._pending and time.monotonic() - self._pending[0][0] >= self.ack_delay_s:
                last = self._pending.popleft()[1]
            if last is not None:
                self._client.ack(last)

    def close(self) -> None:
        self._stop.set()
        self._client.close()


def rollout_request(index: int) -> bytes:
    spans = SpanFactory(rollout_id=f"soak-{index:07d}", task_id=f"t{index % 50}")
    steps = [
        spans.llm(
            f"{PROMPT} question {index} step {step}",
            f"answer {step}",
            **{"lightning.llm.prompt_token_ids": list(range(100)), "lightning.llm.response_token_ids": [1, 2, 3]},
        )
        for step in range(4)
    ]
    return export_request(*steps, spans.reward(1.0), spans.root()).SerializeToString()


def file_mb(path: Path) -> float:
    return round(os.path.getsize(path) / 1e6, 2) if path.exists() else 0.0


def draw(samples: list[dict], retain_min: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t_s"] / 60 for s in samples]
    figure, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    panels = [
        ("store_mb", "store on disk (MB)"),
        ("rss_mb", "collector RSS (MB)"),
        ("spans_per_s", "ingest (spans/s)"),
    ]
    for axis, (key, label) in zip(axes, panels, strict=True):
        axis.plot(minutes, [s[key] for s in samples], label="database + WAL" if key == "store_mb" else None)
        if key == "store_mb":
            axis.plot(minutes, [s["db_mb"] for s in samples], label="database file", linewidth=0.8)
            axis.legend(loc="lower right")
        axis.set_ylabel(label)
        axis.set_ylim(bottom=0)
        axis.axvline(retain_min, color="grey", linestyle="--", linewidth=0.8)
        axis.grid(alpha=0.3)
    axes[0].set_title(f"retention soak: --retain-hours {retain_min / 60:.4f} ({retain_min:g} min, dashed)")
    axes[-1].set_xlabel("minutes")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=22.0)
    parser.add_argument("--retain-minutes", type=float, default=2.5)
    parser.add_argument("--rate", type=float, default=20.0, help="rollouts per second (6 spans each)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "retention_soak"))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="retention-soak-"))
    store = workdir / "store.db"
    port = free_port()
    address = f"127.0.0.1:{port}"
    collector = ChildProcess(
        [
            *(sys.executable, "-m", "otel_lightning.cli", "collector", "--listen", address, "--http-listen", "off"),
            *("--store", str(store), "--retain-hours", str(args.retain_minutes / 60)),
        ]
    ).start()
    channel = grpc.insecure_channel(address)
    grpc.channel_ready_future(channel).result(timeout=60)
    export = channel.unary_unary(EXPORT)
    trainer = Consumer(address, "trainer", ack_delay_s=0.0)
    laggard = Consumer(address, "laggard", ack_delay_s=60.0)
    process = psutil.Process(collector.process.pid)

    exported = 0
    spans_acked = 0
    stop = threading.Event()

    def load() -> None:
        nonlocal exported, spans_acked
        began = time.monotonic()
        with futures.ThreadPoolExecutor(2) as pool:
            while not stop.is_set():
                due = began + exported / args.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(min(delay, 0.5))
                    continue
                batch = [rollout_request(exported + i) for i in range(5)]  # 5 rollouts = 30 spans a request
                list(pool.map(lambda raw: export(raw, timeout=60), batch))
                exported += len(batch)
                spans_acked += 6 * len(batch)

    loader = threading.Thread(target=load, daemon=True)
    began = time.monotonic()
    loader.start()
    samples: list[dict] = []
    last_spans, last_t = 0, 0.0
    try:
        while (t := time.monotonic() - began) < args.minutes * 60:
            time.sleep(SAMPLE_S)
            t = time.monotonic() - began
            spans = spans_acked
            samples.append(
                {
                    "t_s": round(t, 1),
                    "store_mb": round(file_mb(store) + file_mb(Path(f"{store}-wal")), 2),
                    "db_mb": file_mb(store),
                    "wal_mb": file_mb(Path(f"{store}-wal")),
                    "rss_mb": round(process.memory_info().rss / 1e6, 1),
                    "spans_per_s": round((spans - last_spans) / (t - last_t), 1),
                }
            )
            last_spans, last_t = spans, t
            if len(samples) % 12 == 0:
                print(json.dumps(samples[-1]), file=sys.stderr, flush=True)
    finally:
        stop.set()
        loader.join(120)
    # Drain: the laggard acks a minute late; both must end with every rollout, once.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and (len(trainer.completions) < exported or len(laggard.completions) < exported):
        time.sleep(1)
    trainer.close()
    laggard.close()
    collector.stop()

    window_s = args.retain_minutes * 60
    settled = [s for s in samples if s["t_s"] >= 2 * window_s]  # one window to fill, one to start deleting
    first = next((s for s in samples if s["t_s"] >= 2 * window_s), samples[-1])
    sizes = [s["store_mb"] for s in settled] or [samples[-1]["store_mb"]]
    figures = {
        "minutes": args.minutes,
        "retain_minutes": args.retain_minutes,
        "rate_rollouts_per_s": args.rate,
        "rollouts_exported": exported,
        "trainer_received": len(trainer.completions),
        "laggard_received": len(laggard.completions),
        "duplicates": sum(c - 1 for consumer in (trainer, laggard) for c in consumer.completions.values()),
        "consumer_errors": [e for e in (trainer.error, laggard.error) if e],
        "store_mb_after_two_windows": first["store_mb"],
        "store_mb_end": samples[-1]["store_mb"],
        "store_mb_min_max_after_two_windows": [min(sizes), max(sizes)],
        "store_mb_peak": max(s["store_mb"] for s in samples),
        "db_mb_end": samples[-1]["db_mb"],
        "wal_mb_peak": max(s["wal_mb"] for s in samples),
        "rss_mb_peak": max(s["rss_mb"] for s in samples),
        "rss_mb_end": samples[-1]["rss_mb"],
        "ingest_spans_per_s_mean": round(spans_acked / (samples[-1]["t_s"] or 1), 1),
        "ingest_spans_per_s_min_sample": min(s["spans_per_s"] for s in samples[1:] or samples),
    }
    figures["nothing_unacked_lost"] = (
        figures["trainer_received"] == figures["laggard_received"] == exported and not figures["consumer_errors"]
    )
    png = out / "retention_soak.png"
    draw(samples, args.retain_minutes, png)
    (out / "retention_soak.json").write_text(json.dumps({"figures": figures, "samples": samples}, indent=1))
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name:40s} {value}")
        print(f"figure: {png}")
    sys.exit(0 if figures["nothing_unacked_lost"] and figures["duplicates"] == 0 else 1)


if __name__ == "__main__":
    main()
