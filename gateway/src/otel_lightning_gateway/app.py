"""The gateway's request handler: model calls recorded, everything else proxied as it is.

    POST [/rollout/<id>]/v1/chat/completions | /v1/completions | /v1/responses   -> one span per call
    GET /_gateway/stats                                                            -> the gateway's counters
    any other method or path                                                       -> passed through

Callers are served by a lean HTTP/1.1 server (http_server.py) and model calls go to the model server
through a lean keep-alive client (model_server_client.py), both parsing HTTP in C with httptools;
everything else goes through aiohttp's client. No router or middleware: the dispatch below is all there is.
"""

from __future__ import annotations

import logging
import urllib.parse

import aiohttp
import orjson
from opentelemetry import trace

from otel_lightning_gateway import attributes as attrs
from otel_lightning_gateway import upstream
from otel_lightning_gateway.config import GatewayConfig, GatewayStats
from otel_lightning_gateway.http_server import Reply, Request
from otel_lightning_gateway.model_call import ModelCalls, error_body, json_response
from otel_lightning_gateway.model_server_client import ModelServerPool
from otel_lightning_gateway.routes import RouteTable, split_rollout_path

logger = logging.getLogger(__name__)

# The gateway's own counters (JSON), the one path it answers itself.
STATS_PATH = "/_gateway/stats"
# Endpoint -> the API whose body shape it takes.
MODEL_ENDPOINTS = {
    "/v1/chat/completions": attrs.CHAT,
    "/v1/completions": attrs.COMPLETIONS,
    "/v1/responses": attrs.RESPONSES,
}


class GatewayApp:
    def __init__(self, config: GatewayConfig, routes: RouteTable, tracer: trace.Tracer) -> None:
        self.config = config
        self.routes = routes
        self.stats = GatewayStats()
        self.session: aiohttp.ClientSession | None = None  # everything but model calls
        self.model_calls = ModelCalls(config, routes, tracer, self.stats)

    async def open(self) -> None:
        """In the serving loop, before the first request: the upstream pools belong to that loop."""
        self.session = upstream.new_session(self.config.connect_timeout_s, self.config.read_timeout_s)
        self.model_calls.pool = ModelServerPool(self.config.connect_timeout_s, self.config.read_timeout_s)

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()
        if self.model_calls.pool is not None:
            await self.model_calls.pool.close()

    async def __call__(self, request: Request, reply: Reply) -> None:
        # The raw (still %-encoded) path: it goes upstream as the caller wrote it; only the rollout id is decoded.
        raw_path, _, query = request.raw_path.partition("?")
        rollout_id, path = split_rollout_path(raw_path)
        if rollout_id is not None:
            rollout_id = urllib.parse.unquote(rollout_id)
        api = MODEL_ENDPOINTS.get(path.rstrip("/")) if request.method == "POST" else None
        if api is not None:
            answer = await self.model_calls.handle(request, reply, api, rollout_id, path.rstrip("/"), query)
            if answer is not None:
                answer.send(reply)
        elif path == STATS_PATH and rollout_id is None:
            json_response(orjson.dumps(self.stats.as_dict())).send(reply)
        else:
            await self._proxy(request, reply, rollout_id, path, query)

    async def _proxy(self, request: Request, reply: Reply, rollout_id: str | None, path: str, query: str) -> None:
        """Any other call (/v1/models, /health, ...) passed through as it is, streamed both ways."""
        assert self.session is not None
        self.stats.count("proxied")
        route = self.routes.get(rollout_id) if rollout_id else None
        base = (route.upstream if route is not None and route.upstream else None) or self.config.upstream
        try:
            url = upstream.upstream_url(base, path, query)
            body = request.body if request.body or "Content-Length" in request.headers else None
            headers = upstream.forwarded_headers(request.headers, model_call=False)
            answer = await self.session.request(request.method, url, data=body, headers=headers)
        except upstream.UPSTREAM_ERRORS as error:
            self.stats.count("upstream_unavailable")
            message = f"the model server at {base} could not be reached: {type(error).__name__}: {error}"
            return json_response(error_body(message, "upstream_unavailable", 502), 502).send(reply)
        try:
            headers = upstream.returned_headers(answer.headers.items(), keep_encoding=True).items()
            await reply.start(answer.status, headers, answer.reason, answer.content_length)
            async for data in answer.content.iter_any():
                await reply.write(data)
            await reply.end()
        finally:
            answer.release()
