"""Real OTLP peers around the collector, as in a user's pipeline:

- rotel (a Rust OpenTelemetry collector, from PyPI) as the user's existing collector in front of
  ours: agent -> rotel -> otel-lightning;
- Arize Phoenix as the user's trace backend behind --forward-to, the traces read back with
  Phoenix's own client (Phoenix lives in .venv-phoenix: its pins clash with ours; `make install`);
- Prometheus (Debian's package; `.ci/run` installs it) scraping --metrics-listen.

A missing peer fails the test with what to install: these tests are part of `make test`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path

import openai
import pytest

import otel_lightning as ol
from otel_lightning import semconv
from otel_lightning_collector import CollectorConfig, CollectorServer
from tests.collector.test_pipeline import exact_answer, tool_agent
from tests.support import ChildProcess, free_port, rollouts, transitions, wait_for_rollouts, wait_until

ROOT = Path(__file__).resolve().parents[2]
PHOENIX_VENV = ROOT / ".venv-phoenix"


def rotel_binary() -> Path:
    try:
        import rotel
    except ImportError:
        pytest.fail("rotel is not installed: run `make install` (it is in the dev extras)")
    binary = Path(rotel.__file__).parent / "rotel-agent"
    assert binary.exists(), f"the rotel package has no agent binary at {binary}"
    return binary


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def run_agent(openai_stub, count: int) -> list[str]:
    client = openai.OpenAI(base_url=openai_stub.base_url, api_key="unused")
    rollout_ids = []
    for index in range(count):
        with ol.rollout(task_id=f"peer-{index}") as info:
            exact_answer(tool_agent(client, "What is 17+25?"), "42")
        rollout_ids.append(info.rollout_id)
    return rollout_ids


def test_agent_to_rotel_to_otel_lightning(collector, route_spans, openai_stub, monkeypatch, tmp_path):
    monkeypatch.setenv(semconv.ENV_REQUEST_TOKEN_IDS, "true")
    receiver = free_port()
    rotel = ChildProcess(
        [
            *(str(rotel_binary()), "start", "--otlp-grpc-endpoint", f"127.0.0.1:{receiver}"),
            *("--otlp-http-endpoint", f"127.0.0.1:{free_port()}", "--pid-file", str(tmp_path / "rotel.pid")),
            *("--exporter", "otlp", "--otlp-exporter-endpoint", f"http://{collector.address}"),
            *("--otlp-exporter-protocol", "grpc", "--traces-batch-timeout", "200ms"),
        ]
    ).start()
    try:

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", receiver)) == 0

        assert wait_until(listening, timeout_s=30), "rotel did not start listening"
        processor = route_spans(f"127.0.0.1:{receiver}")
        rollout_ids = run_agent(openai_stub, 3)
        assert processor.force_flush(30_000)
        events = wait_for_rollouts(collector.address, 3, timeout_s=60)
    finally:
        rotel.stop()
    assert sorted(r.rollout_id for r in rollouts(events)) == sorted(rollout_ids)
    assert {r.status for r in rollouts(events)} == {"succeeded"}
    steps = transitions(events)
    assert len(steps) == 6 and {t.reward for t in steps if t.done} == {1.0}


PHOENIX_SPANS = """
import json, sys
from phoenix.client import Client
spans = Client(base_url=sys.argv[1]).spans.get_spans(project_identifier="default", limit=100000)
print(json.dumps([[s["context"]["trace_id"], s["context"]["span_id"], s["name"]] for s in spans]))
"""


def phoenix_spans(base_url: str) -> list[list[str]]:
    """Spans as Phoenix's own client returns them: [trace_id, span_id, name]."""
    result = subprocess.run(
        [str(PHOENIX_VENV / "bin" / "python"), "-c", PHOENIX_SPANS, base_url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


@pytest.mark.timeout(600)  # Phoenix takes a minute or more to start on a busy machine
def test_phoenix_behind_forward_to_sees_every_span(route_spans, openai_stub, monkeypatch, tmp_path):
    if not (PHOENIX_VENV / "bin" / "phoenix").exists():
        pytest.fail(f"Phoenix is not installed in {PHOENIX_VENV}: run `make install`")
    monkeypatch.setenv(semconv.ENV_REQUEST_TOKEN_IDS, "true")
    http_port, grpc_port = free_port(), free_port()
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(tmp_path / "phoenix"),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(http_port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    phoenix = ChildProcess([str(PHOENIX_VENV / "bin" / "phoenix"), "serve"], env=env).start()
    base_url = f"http://127.0.0.1:{http_port}"
    try:
        assert wait_until(lambda: http_ok(f"{base_url}/healthz"), timeout_s=240), "Phoenix did not start"
        config = CollectorConfig(
            listen="127.0.0.1:0", store_path=tmp_path / "c.db", forward_to=f"127.0.0.1:{grpc_port}"
        )
        with CollectorServer(config) as collector:
            processor = route_spans(collector.address)
            rollout_ids = run_agent(openai_stub, 2)
            assert processor.force_flush(30_000)
            wait_for_rollouts(collector.address, 2, timeout_s=60)
            assert collector.forwarder.flush(60)
            assert collector.flush()
            sent = {
                (trace_id, span_id)
                for trace_id, span_id in collector.store.reader().execute("SELECT trace_id, span_id FROM spans")
            }
        assert len(sent) >= 2 * 4  # per rollout: root, two LLM calls, a reward
        found: list[list[str]] = []

        def all_in_phoenix() -> bool:
            found[:] = phoenix_spans(base_url)
            return sent <= {(trace_id, span_id) for trace_id, span_id, _ in found}

        assert wait_until(all_in_phoenix, timeout_s=60), (len(sent), found[:5])
        assert len(found) == len(sent)  # each once
        assert len(rollout_ids) == 2
    finally:
        phoenix.stop()


def test_prometheus_scrapes_the_collector_metrics(tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed: apt-get install -y prometheus (.ci/run does)")
    metrics_port, prometheus_port = free_port(), free_port()
    config = CollectorConfig(
        listen="127.0.0.1:0", store_path=tmp_path / "c.db", metrics_listen=f"127.0.0.1:{metrics_port}"
    )
    scrape = tmp_path / "prometheus.yml"
    scrape.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n  - job_name: otel-lightning\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n"
    )
    with CollectorServer(config):
        prometheus = ChildProcess(
            [
                *(binary, f"--config.file={scrape}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"),
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ]
        ).start()
        try:
            api = f"http://127.0.0.1:{prometheus_port}/api/v1"

            def query(expression: str) -> list[dict]:
                url = f"{api}/query?query={urllib.parse.quote(expression)}"
                try:
                    with urllib.request.urlopen(url, timeout=5) as response:
                        return json.loads(response.read())["data"]["result"]
                except OSError:
                    return []

            assert wait_until(lambda: bool(query('up{job="otel-lightning"} == 1')), timeout_s=60)
            found: list[dict] = []

            def has_collector_metrics() -> bool:
                found[:] = query('{job="otel-lightning", __name__=~"lightning_collector_.*"}')
                return bool(found)

            assert wait_until(has_collector_metrics, timeout_s=60)
            names = {series["metric"]["__name__"] for series in found}
            assert any(name.startswith("lightning_collector_rollouts_open") for name in names), names
        finally:
            prometheus.stop()
