"""Every rollout ends with a status that says what went wrong, and faults of the infrastructure are retried."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from otel_lightning import semconv
from otel_lightning.task_client import TaskPoolClient
from otel_lightning.testing.openai_stub import StubOpenAIServer
from otel_lightning_collector import CollectorConfig, CollectorServer
from otel_lightning_collector.spans import key_value
from tests.collector.test_ingest_robustness import exporter
from tests.support import SpanFactory, export_request, free_port, rollouts, transitions, wait_for_rollouts, wait_until


def failed(span, error_type: str, message: str = "boom"):
    span.status.code = 2  # STATUS_CODE_ERROR
    span.status.message = message
    event = span.events.add(name="exception")
    event.attributes.append(key_value("exception.type", error_type))
    return span


def tool_span(spans: SpanFactory, error: bool):
    span = spans._span("execute_tool calculator", {semconv.SPAN_KIND: semconv.SPAN_KIND_TOOL}, parent=spans.root_id)
    return failed(span, "ValueError", "bad expression") if error else span


@pytest.mark.parametrize(
    ("name", "build", "status", "error_type"),
    [
        ("ok", lambda s: [s.llm("q", "a"), s.root()], "succeeded", ""),
        ("agent", lambda s: [s.llm("q", "a"), failed(s.root(), "KeyError")], "failed", "KeyError"),
        ("slow", lambda s: [s.llm("q", "a"), failed(s.root(), "TimeoutError")], "timeout", "TimeoutError"),
        (
            "model",
            lambda s: [failed(s.llm("q", "a"), "openai.APIConnectionError"), failed(s.root(), "APIConnectionError")],
            "llm_error",
            "openai.APIConnectionError",
        ),
        (
            "tool",
            lambda s: [s.llm("q", "a"), tool_span(s, True), failed(s.root(), "ValueError")],
            "tool_error",
            "ValueError",
        ),
        ("recovered", lambda s: [s.llm("q", "a"), tool_span(s, True), s.llm("q2", "a2"), s.root()], "succeeded", ""),
        ("silent", lambda s: [s.reward(1.0), s.root()], "malformed", ""),
    ],
)
def test_statuses(collector, name, build, status, error_type):
    spans = SpanFactory(rollout_id=f"r-{name}")
    exporter(collector.address)(export_request(*build(spans)))
    [done] = rollouts(wait_for_rollouts(collector.address, 1))
    assert (done.status, done.error_type) == (status, error_type)


def test_broken_token_ids_make_a_rollout_malformed_with_no_transition(collector):
    spans = SpanFactory(rollout_id="r-ids")
    good = spans.llm("q", "a", **{semconv.RESPONSE_TOKEN_IDS: [1, 2, 3]})
    broken = spans.llm("q2", "a2", **{semconv.RESPONSE_TOKEN_IDS: ["1", "x"]})
    exporter(collector.address)(export_request(good, broken, spans.reward(1.0), spans.root()))
    events = wait_for_rollouts(collector.address, 1)
    [done] = rollouts(events)
    assert done.status == "malformed" and semconv.RESPONSE_TOKEN_IDS in done.error_message
    assert done.error_span_id == broken.span_id.hex()
    assert transitions(events) == []  # not even the good step: the rollout is not trained on


def test_a_collector_that_requires_rewards_marks_rollouts_without_one_malformed(tmp_path):
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", require_reward=True)
    with CollectorServer(config) as collector:
        spans = SpanFactory(rollout_id="r-no-reward")
        exporter(collector.address)(export_request(spans.llm("q", "a"), spans.root()))
        [done] = rollouts(wait_for_rollouts(collector.address, 1))
    assert (done.status, done.has_reward) == ("malformed", False) and "requires" in done.error_message


def test_the_failing_span_is_named(collector):
    spans = SpanFactory(rollout_id="r-where")
    tool = tool_span(spans, True)
    exporter(collector.address)(export_request(spans.llm("q", "a"), tool, failed(spans.root(), "ValueError")))
    [done] = rollouts(wait_for_rollouts(collector.address, 1))
    assert (done.status, done.error_span_id, done.error_message) == ("tool_error", tool.span_id.hex(), "bad expression")


WORKER_AGENT = textwrap.dedent(
    """
    import os, time
    import openai
    import otel_lightning as ol

    def run(task):
        client = openai.OpenAI(max_retries=0, timeout=5)
        reply = client.chat.completions.create(model="stub", messages=[{"role": "user", "content": task["question"]}])
        if os.environ.get("HANG_AFTER_FIRST_CALL"):
            time.sleep(600)
        ol.emit_reward(1.0)
        return reply.choices[0].message.content
    """
)


def start_worker(collector: CollectorServer, directory, base_url: str, **env: str) -> subprocess.Popen:
    (directory / "hanging_agent.py").write_text(WORKER_AGENT)
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "otel_lightning.cli",
            "worker",
            "--collector",
            collector.address,
            "--concurrency",
            "1",
            "--lease",
            "1.5",
            "--openai-base-url",
            base_url,
            "hanging_agent:run",
        ],
        cwd=directory,
        env={**os.environ, "OPENAI_API_KEY": "unused", "OTEL_BSP_SCHEDULE_DELAY": "50", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_a_worker_killed_mid_rollout_leaves_it_abandoned_and_the_sample_runs_again(collector, openai_stub, tmp_path):
    pool = TaskPoolClient(collector.address)
    pool.submit([("t-kill", {"question": "What is 6 * 7?"})])
    doomed = start_worker(collector, tmp_path, openai_stub.base_url, HANG_AFTER_FIRST_CALL="1")
    try:
        # Killed once its model call is on record: mid-rollout, with spans already exported.
        assert wait_until(lambda: collector.indexer.counters.spans_stored >= 1, timeout_s=30)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(10)
        events = wait_for_rollouts(collector.address, 1, timeout_s=30)
        [abandoned] = rollouts(events)
        assert (abandoned.status, abandoned.error_type, abandoned.retried) == ("abandoned", "LeaseExpired", True)
        assert abandoned.span_count >= 1 and not transitions(events)  # never trained on
        healthy = start_worker(collector, tmp_path, openai_stub.base_url)
        try:
            events = wait_for_rollouts(collector.address, 2, timeout_s=60)
        finally:
            healthy.terminate()
            healthy.wait(10)
    finally:
        if doomed.poll() is None:
            doomed.kill()
    retried = [r for r in rollouts(events) if r.status == "succeeded"]
    assert len(retried) == 1 and retried[0].attempt == 1 and retried[0].task_id == "t-kill"
    assert [t.rollout_id for t in transitions(events)] == [retried[0].rollout_id]
    assert pool.sample_states("t-kill")[0].state == "done"


def test_a_model_server_that_is_down_gives_llm_error_and_the_sample_is_retried(tmp_path):
    port = free_port()
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", max_attempts=3)
    with CollectorServer(config) as collector:
        pool = TaskPoolClient(collector.address)
        pool.submit([("t-down", {"question": "What is 6 * 7?"})])
        worker = start_worker(collector, tmp_path, f"http://127.0.0.1:{port}/v1")
        try:
            [first] = rollouts(wait_for_rollouts(collector.address, 1, timeout_s=30))
            assert first.status == "llm_error" and first.retried
            # Through the worker's gateway the agent gets its 502, which names the failed connection.
            assert "Connection" in first.error_type or "could not be reached" in first.error_message
            # The server comes back; the pool gave the sample another attempt.
            with StubOpenAIServer(port=port):
                events = wait_for_rollouts(collector.address, 2, timeout_s=60)
                assert wait_until(lambda: pool.sample_states("t-down")[0].state == "done", timeout_s=30)
        finally:
            worker.terminate()
            worker.wait(10)
    statuses = [(r.status, r.attempt) for r in rollouts(events)]
    assert statuses[0] == ("llm_error", 0) and statuses[-1] == ("succeeded", statuses[-1][1])
    assert statuses[-1][1] >= 1


def test_a_sample_that_used_up_its_attempts_is_not_retried_and_fills_its_group(tmp_path):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", max_attempts=2)
    with CollectorServer(config) as collector:
        TaskPoolClient(collector.address).submit([("t-gone", {"question": "What is 6 * 7?"})])
        worker = start_worker(collector, tmp_path, dead)
        try:
            events = wait_for_rollouts(collector.address, 2, timeout_s=60)
        finally:
            worker.terminate()
            worker.wait(10)
        from otel_lightning.stream_client import TransitionStreamClient
        from otel_lightning.train.trainer import RolloutGroups

        groups = RolloutGroups(TransitionStreamClient(collector.address, consumer="trainer"))
        [record] = groups.collect({"t-gone": 1}, timeout_s=30)["t-gone"][-1:]
        groups.close()
    assert [(r.status, r.retried) for r in rollouts(events)] == [("llm_error", True), ("llm_error", False)]
    assert (record.status, record.retried) == ("llm_error", False)
