"""The vLLM adapter's lifecycle and weight-reload calls, against the local stub that answers vLLM's
routes (vLLM itself needs a GPU; the verl agent-loop test covers the token-id path)."""

from __future__ import annotations

import sys

import pytest

from otel_lightning.testing.openai_stub import StubOpenAIServer
from otel_lightning.train.vllm_server import VLLMServer, _free_port, vllm_command


def test_reload_weights_asks_every_worker_then_drops_the_prefix_cache():
    with StubOpenAIServer() as stub:
        server = VLLMServer.attach(stub.base_url)
        assert server.reload_weights() == 1 and server.reload_weights() == 2
        posted = [(path, body) for path, body in stub.received]
    assert posted == [("/collective_rpc", {"method": "reload_weights"}), ("/reset_prefix_cache", {})] * 2


def test_launch_waits_for_health_and_close_stops_the_process():
    port = _free_port("127.0.0.1")
    command = [sys.executable, "-m", "otel_lightning.testing.openai_stub", "--port", str(port)]
    with VLLMServer.launch("unused", port=port, command=command, startup_timeout_s=60) as server:
        assert server.base_url == f"http://127.0.0.1:{port}/v1"
        assert server.process.poll() is None
    assert server.process.poll() is not None


def test_a_server_that_dies_at_startup_is_reported():
    with pytest.raises(RuntimeError, match="exited with code 3"):
        VLLMServer.launch("unused", command=[sys.executable, "-c", "raise SystemExit(3)"], startup_timeout_s=30)


def test_the_vllm_command_serves_the_model_under_the_policy_name():
    command = vllm_command("/ckpt/policy", "127.0.0.1", 8123, "policy", ["--max-model-len", "4096"])
    assert command[-8:] == [
        *("--host", "127.0.0.1", "--port", "8123", "--served-model-name", "policy"),
        *("--max-model-len", "4096"),
    ]
    assert "/ckpt/policy" in command
