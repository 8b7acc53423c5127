"""End to end: an agent with no tracing of its own calls the model through its rollout's gateway URL;
the gateway's spans go over real OTLP to a real collector and come out as transitions with the
upstream's exact token ids. And the `otel-lightning gateway` command serves."""

from __future__ import annotations

import sys

import httpx
from opentelemetry import trace

import otel_lightning as ol
from otel_lightning_gateway import Gateway, RolloutRoute
from otel_lightning_gateway.cli import tracer_provider_for
from tests.gateway.support import QUESTION, token_ids
from tests.support import ChildProcess, free_port, rollouts, transitions, wait_for_rollouts, wait_until


def test_gateway_spans_become_transitions_with_exact_token_ids(collector, otlp_export, vllm_stub):
    provider = tracer_provider_for(collector.address)  # what `otel-lightning gateway --collector` uses
    try:
        with Gateway(vllm_stub.base_url, tracer_provider=provider) as gateway:
            with ol.rollout(task_id="t-gw", attempt=1) as info:
                parent = trace.get_current_span().get_span_context()
                gateway.register_rollout(RolloutRoute(info.rollout_id, info.task_id, info.attempt, parent=parent))
                # The agent: plain HTTP to the URL the worker hands it, no OpenTelemetry, no token-id options.
                answer = httpx.post(
                    f"{gateway.rollout_base_url(info.rollout_id)}/chat/completions",
                    json={"model": "m", "messages": QUESTION},
                    timeout=10,
                ).json()
                assert answer["choices"][0]["message"]["content"] == "The answer is 42."
                assert provider.force_flush()
            otlp_export.flush()
    finally:
        provider.shutdown()
    events = wait_for_rollouts(collector.address, 1)
    (done,) = rollouts(events)
    (step,) = transitions(events)
    assert (done.status, step.rollout_id, step.task_id) == ("succeeded", info.rollout_id, "t-gw")
    assert list(step.prompt_token_ids) == token_ids("user: What is 6*7?")
    assert list(step.response_token_ids) == token_ids("The answer is 42.")


def test_the_gateway_command_proxies_and_records(vllm_stub):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "otel_lightning.cli",
        "gateway",
        "--listen",
        f"127.0.0.1:{port}",
        "--upstream",
        vllm_stub.base_url,
    ]
    process = ChildProcess(command).start()
    try:

        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        assert wait_until(answers, 20)
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions", json={"model": "m", "messages": QUESTION}, timeout=10
        )
        assert reply.json()["choices"][0]["message"]["content"] == "The answer is 42."
        assert vllm_stub.received[-1][1]["return_token_ids"] is True
    finally:
        process.stop()


def test_the_gateway_command_stays_on_loopback_unless_allowed(vllm_stub):
    import subprocess

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "otel_lightning.cli",
            "gateway",
            "--listen",
            "0.0.0.0:0",
            "--upstream",
            vllm_stub.base_url,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0 and "--allow-remote" in done.stderr
