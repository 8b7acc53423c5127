"""Assembly throughput per span dialect: spans/s from stored spans to transitions (build_rollout).

The spans are recorded live from each real instrumentor, alone, running the two-call calculator
conversation against the local stub (tests/collector/dialect_recorder.py), plus the rollout's root
span. Each dialect's rollout is built `--rounds` times. "before" is the assembler as it was before
the dialects (commit 95d4a31's transitions.py, loaded from git), timed on our own spans in the same
run: the only spans it could read.

    python benchmarks/dialect_assembly.py [--rounds 2000] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import Span  # noqa: E402

from otel_lightning import semconv  # noqa: E402
from otel_lightning.testing.openai_stub import StubOpenAIServer  # noqa: E402
from otel_lightning_collector.credit import credit_rule  # noqa: E402
from otel_lightning_collector.spans import key_value  # noqa: E402
from otel_lightning_collector.transitions import build_rollout  # noqa: E402

DIALECTS = ("ours", "openinference", "openllmetry", "genai", "openinference-langchain", "openinference-pydantic-ai")
BEFORE_COMMIT = "95d4a31"
TRANSITIONS_PATH = "collector/src/otel_lightning_collector/transitions.py"


def record(dialect: str, base_url: str, folder: Path) -> tuple[list[bytes], list]:
    """The dialect's spans (plus a rollout root over them) and its log records, serialized."""
    out = folder / f"{dialect}.otlp"
    subprocess.run(
        [sys.executable, str(ROOT / "tests/collector/dialect_recorder.py"), dialect, base_url, str(out)],
        check=True,
        timeout=300,
    )
    request = ExportTraceServiceRequest.FromString(out.read_bytes())
    spans = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
    top = next(span for span in spans if span.name == "agent run")
    root = Span(
        trace_id=top.trace_id,
        span_id=os.urandom(8),
        name=semconv.ROLLOUT_SPAN_NAME,
        start_time_unix_nano=top.start_time_unix_nano - 1,
        end_time_unix_nano=top.end_time_unix_nano + 1,
    )
    root.attributes.append(key_value(semconv.SPAN_KIND, semconv.SPAN_KIND_ROLLOUT))
    top.parent_span_id = root.span_id
    logs = ExportLogsServiceRequest.FromString(Path(f"{out}.logs").read_bytes())
    records = [r for rl in logs.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    return [span.SerializeToString() for span in [root, *spans]], records


def load_before() -> object:
    """The assembler before the dialects, from git, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{BEFORE_COMMIT}:{TRANSITIONS_PATH}"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    path = Path(tempfile.mkdtemp()) / "transitions_before.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("transitions_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def spans_per_s(build, bodies: list[bytes], rounds: int, **kwargs) -> tuple[float, int]:
    credit = credit_rule("auto")
    transitions = len(build("r", "t", 0, bodies, credit, **kwargs).transitions)
    began = time.perf_counter()
    for _ in range(rounds):
        build("r", "t", 0, bodies, credit, **kwargs)
    return rounds * len(bodies) / (time.perf_counter() - began), transitions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    with StubOpenAIServer() as stub:
        recorded = {dialect: record(dialect, stub.base_url, folder) for dialect in DIALECTS}
    figures: dict[str, float] = {}
    rows = []
    before = load_before()
    bodies, _ = recorded["ours"]
    rate, transitions = spans_per_s(before.build_rollout, bodies, args.rounds)
    figures["before_ours_spans_per_s"] = round(rate)
    rows.append(("ours (before the dialects)", len(bodies), transitions, rate))
    for dialect, (bodies, logs) in recorded.items():
        rate, transitions = spans_per_s(build_rollout, bodies, args.rounds, logs=logs)
        figures[f"{dialect}_spans_per_s"] = round(rate)
        rows.append((dialect, len(bodies), transitions, rate))
    print(f"{'dialect':<32} {'spans':>5} {'transitions':>11} {'spans/s':>10}")
    for name, spans, transitions, rate in rows:
        print(f"{name:<32} {spans:>5} {transitions:>11} {rate:>10,.0f}")
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
