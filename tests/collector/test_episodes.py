"""Production traffic end to end: an app under `opentelemetry-instrument` (third-party instrumentation
only, real OTLP exporters for spans and logs) against `collector --episodes`; its evaluation log
record is the episode's reward, and later feedback reaches the stream as a reward_update."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_lightning.stream_client import TransitionStreamClient, event_to_dict
from otel_lightning_collector.server import CollectorConfig, CollectorServer
from tests.support import wait_until

AGENT = Path(__file__).with_name("production_agent.py")
BIN = Path(sys.executable).parent
OURS = ("otel_lightning_openai", "otel_lightning_rollout", "otel_lightning_langchain")


def _events(address: str) -> list[dict]:
    with TransitionStreamClient(address, follow=False, auto_ack=True, reward_updates=True) as client:
        return [event_to_dict(event) for event in client]


def _rollouts(address: str) -> list[dict]:
    return [e for e in _events(address) if e["type"] == "rollout"]


def _run_app(collector: CollectorServer, base_url: str, conversation_id: str, **env: str) -> str:
    """Run the app under opentelemetry-instrument, exporting spans and logs to the collector; its trace id."""
    environment = {
        **os.environ,
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{collector.address}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "none",
        # Ours off: only third-party instrumentation records the calls.
        "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": ",".join(OURS),
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true",
        **env,
    }
    environment.pop("LIGHTNING_REQUEST_TOKEN_IDS", None)
    done = subprocess.run(
        [str(BIN / "opentelemetry-instrument"), sys.executable, str(AGENT), base_url, conversation_id],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def episodes_collector(tmp_path: Path):
    config = CollectorConfig(
        listen="127.0.0.1:0", store_path=tmp_path / "collector.db", episodes=True, episode_idle_s=0.5
    )
    with CollectorServer(config) as server:
        yield server


def test_production_trace_becomes_an_episode_with_its_evaluation_and_late_feedback(episodes_collector, openai_stub):
    trace_id = _run_app(episodes_collector, openai_stub.base_url, "conv-42")
    assert wait_until(lambda: len(_rollouts(episodes_collector.address)) == 1, 20)
    events = _events(episodes_collector.address)
    (episode,) = [e for e in events if e["type"] == "rollout"]
    steps = [e for e in events if e["type"] == "transition"]
    assert episode["source"] == "episode"
    assert episode["rollout_id"] == f"episode-{trace_id}"
    assert episode["task_id"] == "conv-42"  # gen_ai.conversation.id
    assert episode["status"] == "succeeded", episode
    # Every instrumentor installed records each call (several spans per call): still one step per call.
    assert [s["step"] for s in steps] == [0, 1]
    first, second = steps
    assert first["state"]["messages"][-1] == {"role": "user", "content": "What is 17 * 23?"}
    assert first["action"]["tool_calls"][0]["function"]["name"] == "calculator"
    assert second["action"]["content"] == "The answer is 391."
    # No gateway and no instrumentor of ours: no token ids, and the rollout says so and why.
    assert all(s["token_ids_absent"] and not s["response_token_ids"] for s in steps)
    assert episode["steps_without_token_ids"] == 2
    assert "gateway" in episode["token_ids_note"]
    # The gen_ai.evaluation.result log record is the episode's reward.
    assert episode["has_reward"] and episode["total_reward"] == pytest.approx(0.75)
    status = subprocess.run(
        [str(BIN / "otel-lightning"), "status", "--collector", episodes_collector.address, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    counters = json.loads(status.stdout)["counters"]
    assert counters["assembly.steps_without_token_ids"] == "2" and counters["episodes.episodes"] == "1"

    feedback = subprocess.run(
        [
            str(BIN / "otel-lightning"),
            "feedback",
            "--collector",
            episodes_collector.address,
            "--trace-id",
            trace_id,
            "--score",
            "1",
            "--name",
            "thumbs_up",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert feedback.returncode == 0, feedback.stderr
    assert "reward_update" in feedback.stdout
    printed = subprocess.run(
        [str(BIN / "otel-lightning"), "transitions", "--collector", episodes_collector.address, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    updates = [json.loads(line) for line in printed.stdout.splitlines() if '"reward_update"' in line]
    assert [(u["type"], u["rollout_id"], u["name"], u["value"], u["origin"]) for u in updates] == [
        ("reward_update", episode["rollout_id"], "thumbs_up", 1.0, "feedback")
    ]
    # Consumers that did not ask for reward updates see only transitions and completions.
    plain = TransitionStreamClient(episodes_collector.address, follow=False, auto_ack=True)
    with plain:
        assert {e.WhichOneof("payload") for e in plain} == {"transition", "rollout", "caught_up"} - {"caught_up"}


def test_without_episodes_production_traffic_is_counted_not_kept(collector, openai_stub):
    _run_app(collector, openai_stub.base_url, "conv-7")
    counters = collector._counters()
    assert wait_until(lambda: collector._counters()["not_kept.spans"] >= 3, 10), counters
    assert _rollouts(collector.address) == []
    # Its log records have a trace id and are kept by trace (no rollout claims them; nothing is trained).
    assert collector._counters()["signals.evaluations_recorded"] == 1
