"""VLLMServer: vLLM's OpenAI-compatible server as the policy server on GPU machines (a thin adapter).

    server = VLLMServer.launch("/ckpt/policy")            # `vllm serve /ckpt/policy` on a free port
    server = VLLMServer.attach("http://10.0.0.7:8000/v1")  # or one that runs already
    worker = SubprocessAgent([...], openai_base_url=server.base_url)
    ...                                                    # train; save the new weights into /ckpt/policy
    server.reload_weights()                                # vLLM serves them; server.version goes up

Token ids: vLLM returns prompt and completion token ids when a request asks (`return_token_ids`)
and logprobs with `logprobs`. Agents do not ask; the worker sets LIGHTNING_REQUEST_TOKEN_IDS for
the agents it points at a policy server, and our OpenAI instrumentor adds both options to each
chat completion, so transitions carry vLLM's ids and are never re-tokenised.

Weights: the launched server runs with VLLM_SERVER_DEV_MODE=1, which opens vLLM's
`/collective_rpc`; `reload_weights()` asks every worker to `reload_weights` from the served
directory, then drops the prefix cache (`/reset_prefix_cache`), so the next request uses the new
weights. vLLM does not report a policy version in its responses: `version` counts the reloads
here; submit tasks with `TaskPoolClient.submit(..., policy_version=str(server.version))` and their
rollouts' spans (and so the transitions) carry it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger(__name__)


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def vllm_command(model_dir: str, host: str, port: int, served_model_name: str, extra_args: Sequence[str]) -> list[str]:
    executable = shutil.which("vllm")
    base = [executable, "serve"] if executable else [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    model = [model_dir] if executable else ["--model", model_dir]
    return [*base, *model, "--host", host, "--port", str(port), "--served-model-name", served_model_name, *extra_args]


class VLLMServer:
    def __init__(self, base_url: str, process: subprocess.Popen | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        # vLLM's own routes (/health, /collective_rpc) live beside /v1.
        self.root_url = self.base_url.removesuffix("/v1")
        self.process = process
        self.version = 0

    @classmethod
    def attach(cls, base_url: str, timeout_s: float = 30.0) -> VLLMServer:
        """A vLLM server that is running already (started with VLLM_SERVER_DEV_MODE=1 to reload weights)."""
        server = cls(base_url)
        server.wait_healthy(timeout_s)
        return server

    @classmethod
    def launch(
        cls,
        model_dir: str,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        served_model_name: str = "policy",
        extra_args: Sequence[str] = (),
        command: Sequence[str] | None = None,
        startup_timeout_s: float = 900.0,
    ) -> VLLMServer:
        """Start `vllm serve model_dir` (or `command`, which must listen on host:port) and wait until it is healthy."""
        port = port or _free_port(host)
        argv = list(command) if command else vllm_command(model_dir, host, port, served_model_name, extra_args)
        env = {**os.environ, "VLLM_SERVER_DEV_MODE": "1"}
        process = subprocess.Popen(argv, env=env)
        server = cls(f"http://{host}:{port}/v1", process)
        try:
            server.wait_healthy(startup_timeout_s)
        except BaseException:
            server.close()
            raise
        return server

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None, timeout_s: float = 600.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.root_url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = response.read()
        return json.loads(payload) if payload.strip() else None

    def wait_healthy(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"the vLLM server exited with code {self.process.returncode}; see its log above")
            try:
                self._request("GET", "/health", timeout_s=5)
                return
            except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"vLLM at {self.root_url} not healthy after {timeout_s:g}s: {error}") from error
            time.sleep(0.5)

    def reload_weights(self) -> int:
        """Serve the weights now in the model directory; returns the new version."""
        try:
            self._request("POST", "/collective_rpc", {"method": "reload_weights"})
        except urllib.error.HTTPError as error:
            if error.code == 404:
                raise RuntimeError(
                    "vLLM has no /collective_rpc: start it with VLLM_SERVER_DEV_MODE=1 (launch() does)"
                ) from error
            raise
        self._request("POST", "/reset_prefix_cache")
        self.version += 1
        return self.version

    def close(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            logger.warning("vLLM did not stop within 30 s; killing it")
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> VLLMServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
