"""`Gateway`: the application served by uvicorn, in a background thread (Python API) or in the
foreground (`otel-lightning gateway`)."""

from __future__ import annotations

import logging
import socket
import threading
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

import uvicorn
from opentelemetry import trace

from otel_lightning.listen import check_listen
from otel_lightning_gateway.app import GatewayApp
from otel_lightning_gateway.config import GatewayConfig
from otel_lightning_gateway.routes import Rewrite, RolloutRoute, RouteTable
from otel_lightning_gateway.version import __version__

logger = logging.getLogger(__name__)

_SCOPE = "otel_lightning_gateway"


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio turns Nagle's algorithm off only on sockets that say they are TCP
    # (left on, a response's headers and body written apart wait ~40 ms for the caller's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.set_inheritable(True)
    return sock


class Gateway:
    """An OpenAI-compatible proxy in front of `upstream` that records one span per model call.

    gateway = Gateway(upstream="http://127.0.0.1:8000/v1").start()
    client = openai.OpenAI(base_url=gateway.base_url)          # or gateway.rollout_base_url(rollout_id)
    ...
    gateway.stop()
    """

    def __init__(
        self,
        upstream: str,
        tracer_provider: trace.TracerProvider | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        rewrite: Rewrite | None = None,
        span_attributes: Mapping[str, Any] | None = None,
        *,
        responses_via_chat: bool = True,
        request_token_ids: bool = True,
        upstream_streams: bool = True,
        connect_timeout_s: float = 3.0,
        read_timeout_s: float | None = 600.0,
        allow_remote: bool = False,
    ) -> None:
        check_listen(host, allow_remote, "the gateway passes model calls (with their API keys) to the model server")
        self.host = host
        self._requested_port = port
        self.routes = RouteTable()
        self.config = GatewayConfig(
            upstream=upstream,
            rewrite=rewrite,
            span_attributes=dict(span_attributes or {}),
            responses_via_chat=responses_via_chat,
            request_token_ids=request_token_ids,
            upstream_streams=upstream_streams,
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
        )
        tracer = (
            tracer_provider.get_tracer(_SCOPE, __version__)
            if tracer_provider is not None
            else trace.get_tracer(_SCOPE, __version__)  # the global provider, even one set later
        )
        self.app = GatewayApp(self.config, self.routes, tracer)
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    # --- serving ----------------------------------------------------------------------------------

    def _prepare(self) -> uvicorn.Server:
        self._socket = _bind(self.host, self._requested_port)
        config = uvicorn.Config(
            self.app,
            lifespan="on",
            log_level="warning",
            access_log=False,
            # Long generations stream for minutes; an idle keep-alive connection from an agent is cheap.
            timeout_keep_alive=30,
            # stop() does not wait for ever on a stream still in flight.
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        return self._server

    def start(self, timeout_s: float = 10.0) -> Gateway:
        """Serve in a background thread; returns once the gateway accepts connections."""
        server = self._prepare()
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [self._socket]}, name="otel-lightning-gateway", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not start on {self.host}:{self.port} (see the log above)")
            time.sleep(0.005)
        logger.info("gateway on %s -> %s", self.base_url, self.config.upstream)
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (the CLI)."""
        server = self._prepare()
        server.run(sockets=[self._socket])

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- addresses and routes ---------------------------------------------------------------------

    @property
    def port(self) -> int:
        return self._socket.getsockname()[1] if self._socket is not None else self._requested_port

    @property
    def address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.address}/v1"

    def rollout_base_url(self, rollout_id: str) -> str:
        return f"http://{self.address}/rollout/{urllib.parse.quote(rollout_id, safe='')}/v1"

    def register_rollout(self, route: RolloutRoute) -> None:
        self.routes.register(route)

    def unregister_rollout(self, rollout_id: str) -> None:
        self.routes.unregister(rollout_id)

    @property
    def stats(self) -> dict[str, int]:
        """Calls recorded, failed, cancelled; upstream unreachable; calls for unknown rollouts; other proxied."""
        return self.app.stats.as_dict()
