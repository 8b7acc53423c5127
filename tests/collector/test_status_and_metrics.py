"""`otel-lightning status` and the collector's own metrics say what happened, from the same report."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request

from otel_lightning_collector import CollectorConfig, CollectorServer
from otel_lightning_collector.status_cli import fetch, render
from tests.collector.test_ingest_robustness import exporter
from tests.collector.test_rollout_statuses import failed
from tests.support import SpanFactory, export_request, read_all, wait_for_rollouts


def run_some_rollouts(address: str) -> None:
    export = exporter(address)
    for index in range(3):
        spans = SpanFactory(rollout_id=f"ok-{index}", task_id="t-ok")
        export(export_request(spans.llm("q", "a"), spans.reward(1.0), spans.root()))
    for index in range(2):
        spans = SpanFactory(rollout_id=f"boom-{index}", task_id="t-boom")
        export(export_request(spans.llm("q", "a"), failed(spans.root(), "KeyError", f"missing key {index}")))
    spans = SpanFactory(rollout_id="slow", task_id="t-slow")
    export(export_request(spans.llm("q", "a"), failed(spans.root(), "TimeoutError")))
    wait_for_rollouts(address, 6)


def test_status_counts_errors_and_lag(collector):
    run_some_rollouts(collector.address)
    read_all(collector.address, consumer="trainer")  # a consumer that read (and acked) everything
    report = fetch(collector.address)
    by_status = {c.status: (c.total, c.recent) for c in report.statuses}
    assert by_status["succeeded"] == (3, 3) and by_status["failed"] == (2, 2) and by_status["timeout"] == (1, 1)
    assert by_status["abandoned"] == (0, 0)  # every status is listed
    [top, second] = report.top_errors
    assert (top.status, top.error_type, top.count) == ("failed", "KeyError", 2)
    assert top.example_task_id == "t-boom" and "missing key" in top.example_message
    assert (second.status, second.error_type) == ("timeout", "TimeoutError")
    assert report.rollouts_per_s == 6 / 60
    assert report.counters["intake.spans_accepted"] == 15 and report.counters["index.spans_stored"] == 15
    [trainer] = report.consumers
    assert (trainer.consumer, trainer.lag) == ("trainer", 0) and trainer.acked_sequence == report.last_sequence
    # The live view renders it (rich), and the CLI's --json prints the same report.
    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(render(report, collector.address))
    shown = console.export_text()
    assert "KeyError" in shown and "succeeded" in shown and "consumer 'trainer' lag" in shown
    done = subprocess.run(
        [sys.executable, "-m", "otel_lightning.cli", "status", "--collector", collector.address, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    snapshot = json.loads(done.stdout)
    assert {s["status"]: int(s["total"]) for s in snapshot["statuses"]}["failed"] == 2


def test_metrics_on_a_prometheus_endpoint(tmp_path):
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", metrics_listen="127.0.0.1:0")
    with CollectorServer(config) as collector:
        run_some_rollouts(collector.address)
        url = f"http://127.0.0.1:{collector.metrics.prometheus_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
    from prometheus_client.parser import text_string_to_metric_families

    samples = {
        (sample.name, sample.labels.get("status") or sample.labels.get("state") or sample.labels.get("counter")): (
            sample.value
        )
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    assert samples["lightning_collector_rollouts_total", "failed"] == 2
    assert samples["lightning_collector_rollouts_total", "succeeded"] == 3
    assert samples["lightning_collector_rollouts_total", "timeout"] == 1
    assert samples["lightning_collector_pool_samples", "queued"] == 0
    assert samples["lightning_collector_events_total", "intake.spans_accepted"] == 15
