"""`Gateway`: the handler served by aiohttp on an event loop of its own, in a background thread (Python
API) or in the foreground (`otel-lightning gateway`)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import threading
import time
import urllib.parse
from collections.abc import Coroutine, Mapping
from typing import Any

from opentelemetry import trace

from otel_lightning.listen import check_listen
from otel_lightning_gateway.app import GatewayApp
from otel_lightning_gateway.config import GatewayConfig
from otel_lightning_gateway.http_server import HttpServer
from otel_lightning_gateway.routes import Rewrite, RolloutRoute, RouteTable
from otel_lightning_gateway.version import __version__

logger = logging.getLogger(__name__)

_SCOPE = "otel_lightning_gateway"


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run the gateway's loop to the end: uvloop's where it is installed (less CPU a call than asyncio's:
    ~30% for a bare aiohttp proxy in one measurement, a few % for the gateway), in this thread only,
    whatever loop the rest of the process uses."""
    try:
        import uvloop
    except ImportError:  # Windows
        asyncio.run(main)
        return
    uvloop.run(main)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    # proto=IPPROTO_TCP: asyncio turns Nagle's algorithm off only on sockets that say they are TCP (aiohttp
    # does too); left on, an answer written in two pieces waits ~40 ms for the caller's delayed ACK.
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
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    # --- serving ----------------------------------------------------------------------------------

    async def _serve(self, ready: threading.Event | None = None, on_signals: bool = False) -> None:
        """Serve on the bound socket until `_stopping` is set (by `stop`, or SIGINT/SIGTERM when
        `on_signals`); then close connections (streams still in flight get up to 5 s) and the upstream pool."""
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        if on_signals:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._loop.add_signal_handler(signum, self._stopping.set)
        await self.app.open()
        # A caller that goes away cancels its call at once (span: cancelled; the upstream request is
        # closed, so the model server stops generating).
        server = HttpServer(self.app, keepalive_timeout_s=30.0)
        try:
            assert self._socket is not None
            await server.start(self._socket)
            if ready is not None:
                ready.set()
            await self._stopping.wait()
        finally:
            await server.stop(grace_s=5.0)
            await self.app.close()

    def _bind(self) -> None:
        self._socket = _bind(self.host, self._requested_port)
        self._port = self._socket.getsockname()[1]

    def start(self, timeout_s: float = 10.0) -> Gateway:
        """Serve in a background thread; returns once the gateway accepts connections."""
        self._bind()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=run_loop, args=(self._serve(ready),), name="otel-lightning-gateway", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.01):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the gateway did not start on {self.host}:{self.port} (see the log above)")
        logger.info("gateway on %s -> %s", self.base_url, self.config.upstream)
        return self

    def serve_forever(self) -> None:
        """Serve in this (the main) thread until SIGINT or SIGTERM (the CLI)."""
        self._bind()
        try:
            run_loop(self._serve(on_signals=True))
        finally:
            self._close_socket()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            try:
                self._loop.call_soon_threadsafe(self._stopping.set)
            except RuntimeError:  # the loop has already ended
                pass
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self._close_socket()

    def _close_socket(self) -> None:
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
        return self._port

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
