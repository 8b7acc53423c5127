"""The gateway's ASGI application: model calls recorded, everything else proxied as it is.

    POST [/rollout/<id>]/v1/chat/completions | /v1/completions | /v1/responses   -> one span per call
    GET /_gateway/stats                                                            -> the gateway's counters
    any other method or path                                                       -> passed through

A plain ASGI callable (Starlette's request and response types inside): the hot path is a body parse,
one upstream call on a pooled connection and a span, nothing more.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from otel_lightning import semconv
from otel_lightning.content import capture_content_enabled
from otel_lightning_gateway import attributes as attrs
from otel_lightning_gateway import one_piece, responses_translation, upstream
from otel_lightning_gateway import relay as relays
from otel_lightning_gateway.config import GatewayConfig, GatewayStats
from otel_lightning_gateway.recording import PROPAGATOR, CallSpan, identity_attributes, parent_context
from otel_lightning_gateway.routes import RolloutRoute, RouteTable, split_rollout_path
from otel_lightning_gateway.token_options import Asked, ask_for_tokens, strip
from otel_lightning_gateway.version import __version__

logger = logging.getLogger(__name__)

# The gateway's own counters (JSON), the one path it answers itself.
STATS_PATH = "/_gateway/stats"
# Endpoint (under /v1) -> the API whose body shape it takes.
MODEL_ENDPOINTS = {
    "/v1/chat/completions": attrs.CHAT,
    "/v1/completions": attrs.COMPLETIONS,
    "/v1/responses": attrs.RESPONSES,
}


def _error_body(message: str, kind: str, code: int) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "code": code}})


def _json(content: bytes, status: int = 200) -> Response:
    return Response(content, status_code=status, media_type="application/json")


class GatewayApp:
    def __init__(self, config: GatewayConfig, routes: RouteTable, tracer: trace.Tracer) -> None:
        self.config = config
        self.routes = routes
        self.tracer = tracer
        self.stats = GatewayStats()
        self.client: httpx.AsyncClient | None = None
        self._warned_unknown: set[str] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            return await self._lifespan(receive, send)
        if scope["type"] != "http":
            return  # websockets: nothing of ours
        request = Request(scope, receive)
        rollout_id, path = split_rollout_path(scope["path"])
        api = MODEL_ENDPOINTS.get(path.rstrip("/")) if scope["method"] == "POST" else None
        if path == STATS_PATH and rollout_id is None:
            response: Response | None = _json(orjson.dumps(self.stats.as_dict()))
        elif api is None:
            response = await self._proxy(request, rollout_id, path)
        else:
            response = await self._model_call(request, api, rollout_id, path, receive, send)
        if response is not None:
            await response(scope, receive, send)

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Made inside the serving loop: the client's pool belongs to it.
                self.client = upstream.new_client(self.config.connect_timeout_s, self.config.read_timeout_s)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.client is not None:
                    await self.client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # --- routing --------------------------------------------------------------------------------

    def _route(self, rollout_id: str | None) -> tuple[RolloutRoute | None, bool]:
        """(the registered route, whether the id was unknown) for a /rollout/<id> URL."""
        if rollout_id is None:
            return None, False
        route = self.routes.get(rollout_id)
        if route is None:
            self.stats.count("unknown_rollouts")
            if rollout_id not in self._warned_unknown and len(self._warned_unknown) < 10_000:
                self._warned_unknown.add(rollout_id)
                logger.warning(
                    "calls for rollout %s, which is not registered with this gateway: proxied to the default upstream"
                    " and attributed to it by its URL only (no task id, no parent span)",
                    rollout_id,
                )
        return route, route is None

    def _upstream_base(self, route: RolloutRoute | None) -> str:
        return (route.upstream if route is not None and route.upstream else None) or self.config.upstream

    # --- model calls ------------------------------------------------------------------------------

    async def _model_call(
        self, request: Request, api: str, rollout_id: str | None, path: str, receive: Any, send: Any
    ) -> Response | None:
        assert self.client is not None
        self.stats.count("calls")
        route, unknown = self._route(rollout_id)
        headers = request.headers
        context = parent_context(headers, route)
        # Gateway-wide attributes first: the rollout's own (baggage, URL, route) are more specific.
        extra = {**self.config.span_attributes, **identity_attributes(context, rollout_id, route, unknown)}
        capture = capture_content_enabled()
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as error:
            body = error
        if not isinstance(body, dict):
            reason = (
                f"the request body is not a JSON object ({body})"
                if isinstance(body, Exception)
                else ("the request body is not a JSON object")
            )
            call = CallSpan(self.tracer, api, {}, context, extra, capture)
            return self._refuse(call, 400, reason, "invalid_request_error")

        via_chat = api == attrs.RESPONSES and self.config.responses_via_chat
        responses_body = body
        if via_chat:
            extra[semconv.LLM_API] = attrs.RESPONSES
            extra[semconv.GATEWAY_RESPONSES_VIA_CHAT] = True
            try:
                body = responses_translation.chat_request(body)
            except responses_translation.TranslationError as error:
                call = CallSpan(self.tracer, api, responses_body, context, extra, capture)
                return self._refuse(call, 400, str(error), "invalid_request_error")
            api, endpoint = attrs.CHAT, "/v1/chat/completions"
        else:
            endpoint = path.rstrip("/")
        rewrite = (route.rewrite if route is not None else None) or self.config.rewrite
        if rewrite is not None:
            try:
                body = rewrite(endpoint[3:], body)
                if not isinstance(body, dict):
                    raise TypeError(f"it returned {type(body).__name__}, not the request body (a dict)")
            except Exception as error:
                logger.exception("the request rewrite for %s failed", endpoint)
                call = CallSpan(self.tracer, api, responses_body if via_chat else {}, context, extra, capture)
                return self._refuse(call, 500, f"the gateway's request rewrite failed: {error!r}", "rewrite_error")
        asked = ask_for_tokens(api, body) if self.config.request_token_ids and api != attrs.RESPONSES else None
        call = CallSpan(self.tracer, api, body, context, extra, capture)
        try:
            return await self._forward(
                call, request, api, body, asked, route, endpoint, via_chat, responses_body, receive, send
            )
        except Exception as error:  # a bug of ours: the span says so, the caller gets uvicorn's 500
            logger.exception("the gateway failed on a %s call", api)
            call.fail("gateway_error", f"{type(error).__name__}: {error}")
            raise

    async def _forward(
        self,
        call: CallSpan,
        request: Request,
        api: str,
        body: dict[str, Any],
        asked: Asked | None,
        route: RolloutRoute | None,
        endpoint: str,
        via_chat: bool,
        responses_body: dict[str, Any],
        receive: Any,
        send: Any,
    ) -> Response | None:
        assert self.client is not None
        url = upstream.upstream_url(self._upstream_base(route), endpoint, request.scope["query_string"])
        out_headers = upstream.forwarded_headers(request.headers.raw, model_call=True)
        out_headers.append((b"accept-encoding", b"identity"))
        carrier: dict[str, str] = {}
        PROPAGATOR.inject(carrier, context=trace.set_span_in_context(call.span, Context()))
        out_headers.extend((name.encode(), value.encode()) for name, value in carrier.items())
        streamed = bool(body.get("stream"))
        sent = body
        if streamed and not self.config.upstream_streams:  # asked in one piece, streamed to the caller from it
            sent = {key: value for key, value in body.items() if key not in ("stream", "stream_options")}
        try:
            upstream_request = self.client.build_request("POST", url, content=orjson.dumps(sent), headers=out_headers)
            answer = await self.client.send(upstream_request, stream=sent is body and streamed)
        except (httpx.TransportError, httpx.InvalidURL) as error:
            self.stats.count("upstream_unavailable")
            return self._refuse(
                call,
                502,
                f"the model server at {url} could not be reached: {type(error).__name__}: {error}",
                "upstream_unavailable",
            )
        if (
            answer.status_code >= 400
            or not streamed
            or "text/event-stream" not in answer.headers.get("content-type", "")
        ):
            if streamed:
                try:
                    await answer.aread()
                except httpx.TransportError as error:
                    await answer.aclose()
                    return self._refuse(call, 502, f"the model server's answer broke off: {error}", "upstream_error")
            return self._whole_answer(call, answer, asked, responses_body if via_chat else None, streamed)
        if via_chat:
            handler: Any = relays.ResponsesFromChatRelay(call, responses_body, asked)
        elif api == attrs.RESPONSES:
            handler = relays.ResponsesRelay(call)
        else:
            handler = relays.ChunkRelay(call, asked, chat=api == attrs.CHAT)
        await relays.relay(handler, answer, receive, send)
        self._count_end(call)
        return None

    def _whole_answer(
        self, call: CallSpan, answer: httpx.Response, asked: Asked | None, responses_body: dict | None, streamed: bool
    ) -> Response:
        """A non-streamed answer (or an error, or a server that answered a stream request in one piece)."""
        content = answer.content
        if answer.status_code >= 400:
            self.stats.count("failed")
            call.fail(str(answer.status_code), f"the model server answered {answer.status_code}: {_text(content)}")
            return _upstream_response(content, answer)
        try:
            data = orjson.loads(content)
            if not isinstance(data, dict):
                raise orjson.JSONDecodeError("not a JSON object", "", 0)
        except orjson.JSONDecodeError:
            self.stats.count("failed")
            call.fail("invalid_upstream_answer", f"the model server's answer is not JSON: {_text(content)}")
            return _upstream_response(content, answer)
        call.finish(data)
        if responses_body is not None:
            if streamed:  # the model server would not stream: the caller still gets events
                return one_piece.responses_events(responses_body, data, asked)
            asked_ids = asked is not None and asked.token_ids
            return _json(orjson.dumps(responses_translation.response_from_chat(responses_body, data, asked_ids)))
        if streamed and call.api != attrs.RESPONSES:  # e.g. our policy server, which cannot stream
            return one_piece.chunks(data, asked, chat=call.api == attrs.CHAT)
        if asked is None or asked.everything:
            return _json(content, answer.status_code)
        return _json(orjson.dumps(strip(data, asked)), answer.status_code)

    def _refuse(self, call: CallSpan, status: int, message: str, kind: str) -> Response:
        self.stats.count("failed")
        call.fail(kind, message)
        return _json(_error_body(message, kind, status), status)

    def _count_end(self, call: CallSpan) -> None:
        attributes = getattr(call.span, "attributes", None) or {}
        if attributes.get(semconv.LLM_CANCELLED):
            self.stats.count("cancelled")
        elif not call.span.status.is_ok:
            self.stats.count("failed")

    # --- everything else --------------------------------------------------------------------------

    async def _proxy(self, request: Request, rollout_id: str | None, path: str) -> Response:
        """Any other call (/v1/models, /health, ...) passed through as it is, streamed both ways."""
        assert self.client is not None
        self.stats.count("proxied")
        route = self.routes.get(rollout_id) if rollout_id else None
        url = upstream.upstream_url(self._upstream_base(route), path, request.scope["query_string"])
        headers = upstream.forwarded_headers(request.headers.raw, model_call=False)
        try:
            upstream_request = self.client.build_request(request.method, url, content=request.stream(), headers=headers)
            answer = await self.client.send(upstream_request, stream=True)
        except (httpx.TransportError, httpx.InvalidURL) as error:
            self.stats.count("upstream_unavailable")
            message = f"the model server at {url} could not be reached: {type(error).__name__}: {error}"
            return _json(_error_body(message, "upstream_unavailable", 502), 502)
        response = StreamingResponse(
            answer.aiter_raw(), status_code=answer.status_code, background=BackgroundTask(answer.aclose)
        )
        response.raw_headers = upstream.returned_headers(answer, keep_encoding=True)
        return response


def _upstream_response(content: bytes, answer: httpx.Response) -> Response:
    """The model server's own answer (an error), status, body and headers as it sent them."""
    response = Response(content, status_code=answer.status_code)
    response.raw_headers = [
        *upstream.returned_headers(answer),
        (b"content-length", str(len(content)).encode()),
    ]
    return response


def _text(content: bytes, limit: int = 2000) -> str:
    return content[:limit].decode("utf-8", "replace")


__all__ = ["GatewayApp", "GatewayConfig", "GatewayStats", "__version__"]
