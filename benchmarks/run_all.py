"""`make bench`: run every benchmark, print one markdown table of figures, write it to a file.

Each script under benchmarks/ runs in its own process with `--json` (its last stdout line is a
JSON object of figures); the table names the machine, the commit and the date.

    python benchmarks/run_all.py [--out benchmarks/RESULTS.md] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Script, its arguments (full run), its arguments for --quick.
BENCHMARKS = (
    ("collector_ingest.py", [], ["--rollouts", "500"]),
    ("transition_latency.py", [], ["--seconds", "5", "--stored-rollouts", "500"]),
    ("dialect_assembly.py", [], ["--rounds", "200"]),
    ("openai_instrumentation_overhead.py", [], ["--rounds", "5"]),
    ("instrumentation_overhead.py", [], ["--rounds", "3", "--runs", "10"]),
    ("gateway_overhead.py", [], ["--calls", "100", "--seconds", "2"]),
    ("train_loop.py", [], ["--steps", "3"]),
    # `make demo` for three seeds (~5 minutes each); --quick runs one.
    ("demo_seeds.py", [], ["--seeds", "0"]),
    ("optimize_eval.py", [], ["--tasks", "4", "--rounds", "1"]),
    # The full 10-minute soak is `python benchmarks/soak.py`; the table takes a shorter one.
    ("soak.py", ["--minutes", "3"], ["--minutes", "1", "--fault-every", "15"]),
)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory_kb = next(
            int(line.split()[1])
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f", {memory_kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        memory = ""
    system = f"{platform.system()} {platform.release()}"
    return f"{cpu}, {os.cpu_count()} cores{memory}, {system}, Python {platform.python_version()}"


def run(script: str, arguments: list[str]) -> tuple[dict[str, Any] | None, float, str]:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *arguments, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - began
    for line in reversed(done.stdout.strip().splitlines()):
        try:
            return json.loads(line), elapsed, ""
        except ValueError:
            continue
    return None, elapsed, (done.stderr.strip().splitlines() or ["no output"])[-1]


def rows(script: str, found: dict[str, Any]) -> list[tuple[str, str]]:
    """(figure, value) pairs of one benchmark's output."""
    if script == "collector_ingest.py":
        return [
            ("bare OTLP receiver (decode only), spans/s", f"{found['bare_receiver_spans_per_s']:,}"),
            (
                "collector ingest (stored durably + acknowledged), spans/s",
                f"{found['collector_acked_spans_per_s']:,} ({found['acked_vs_bare']:.2f} of the bare rate)",
            ),
            (
                "collector into streamed transitions, spans/s",
                f"{found['collector_to_transitions_spans_per_s']:,} ({found['transitions_per_s']:,} transitions/s)",
            ),
        ]
    if script == "transition_latency.py":
        return [
            (
                f"root span end -> trainer at {found['offered_spans_per_s']:,} spans/s, p50 / p99",
                f"{found['latency_p50_ms']} ms / {found['latency_p99_ms']} ms (max {found['latency_max_ms']} ms)",
            ),
            (
                "stream to one consumer, events/s",
                f"{found['stream_events_per_s']:,} ({found['stream_mb_per_s']} MB/s)",
            ),
        ]
    if script == "openai_instrumentation_overhead.py":
        return [("OpenAI client, added per call (ours)", f"{found['added_per_call_us']:,.0f} us")]
    if script == "instrumentation_overhead.py":
        return [
            (
                f"{framework}, added per LLM call: otel-lightning / OpenInference",
                f"{configs.get('otel-lightning', 0):,} us / {configs.get('openinference', 0):,} us",
            )
            for framework, configs in found["added_per_llm_call_us"].items()
        ]
    if script == "train_loop.py":
        return [
            (
                f"demo training loop, rollouts/s ({found['rollouts_per_step']} rollouts per GRPO step)",
                f"{found['train_rollouts_per_s']:.1f} (trainer step {found['trainer_step_s_mean'] * 1000:.0f} ms,"
                f" waiting {found['trainer_wait_share']:.0%})",
            )
        ]
    if script == "demo_seeds.py":
        return [
            (
                f"make demo, seed {r['seed']}: held-out reward before -> after, wall time",
                f"{r['before']:.2f} -> {r['after']:.2f} ({r['rise']:+.2f}), {r['wall_s']:.0f} s",
            )
            for r in found["seeds"]
        ]
    if script == "gateway_overhead.py":
        rows = []
        for mode in ("plain", "streamed"):
            gateway, bare, direct = (found[mode][way] for way in ("gateway", "bare proxy", "direct"))
            rows.append(
                (
                    f"model gateway, {mode}: added p50 / p99, CPU per call (bare proxy), calls/s vs direct",
                    f"{gateway['added_p50_ms']} ms / {gateway['added_p99_ms']} ms, {gateway['cpu_ms_per_call']} ms"
                    f" ({bare['cpu_ms_per_call']} ms), {gateway['calls_per_s']:,} vs {direct['calls_per_s']:,}"
                    f" ({gateway['throughput_ratio']:.2f})",
                )
            )
        return rows
    if script == "soak.py":
        faults = ", ".join(f"{count} {name}" for name, count in sorted(found["faults"].items()))
        return [
            (
                f"soak, {found['minutes']:g} min with faults ({faults})",
                f"{found['rollouts_completed']:,} rollouts, {found['transitions_consumed']:,} transitions consumed,"
                f" lost {found['lost']}, duplicated {found['duplicated']},"
                f" collector peak RSS {found['collector_peak_rss_mb']} MB",
            )
        ]
    return [(key, str(value)) for key, value in found.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument("--quick", action="store_true", help="smaller runs (a smoke test, not figures to quote)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {machine()}  ",
        f"Commit {commit.stdout.strip() or '?'}, {datetime.date.today().isoformat()}"
        f"{' (--quick: smaller runs)' if args.quick else ''}. Made by `make bench` (benchmarks/run_all.py).",
        "",
        "| benchmark | figure | value |",
        "|---|---|---|",
    ]
    for script, full, quick in BENCHMARKS:
        print(f"running {script} ...", file=sys.stderr, flush=True)
        found, elapsed, error = run(script, quick if args.quick else full)
        if found is None:
            lines.append(f"| {script} | failed | {error} |")
            continue
        lines.extend(f"| {script} | {figure} | {value} |" for figure, value in rows(script, found))
        print(f"  {elapsed:.0f} s", file=sys.stderr, flush=True)
    table = "\n".join(lines) + "\n"
    Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
