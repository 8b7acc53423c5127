"""One model call through the gateway: the request made ready (translated, rewritten, asking for token
ids), sent upstream on a kept-alive connection, the answer given back as the caller would have had it,
and the call's span ended. The caller waits for as little of the span as can be: for a whole answer,
the span is started (its start time from before) and ended right after the caller has it (a rollout's
end waits for it: `RouteTable.unregister`); a stream's starts once the caller has its first tokens and
ends before its last bytes go.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.context import Context

from otel_lightning import semconv
from otel_lightning_gateway import attributes as attrs
from otel_lightning_gateway import one_piece, responses_translation, upstream
from otel_lightning_gateway import relay as relays
from otel_lightning_gateway.config import GatewayConfig, GatewayStats
from otel_lightning_gateway.http_server import CallerGoneError, Reply, Request
from otel_lightning_gateway.model_server_client import ModelServerPool, ModelServerResponse
from otel_lightning_gateway.recording import CallSpan, identity_attributes, parent_context, trace_headers
from otel_lightning_gateway.routes import RolloutRoute, RouteTable
from otel_lightning_gateway.span_ids import ChosenSpanIds
from otel_lightning_gateway.token_options import Asked, ask_for_tokens, strip

logger = logging.getLogger(__name__)

JSON = "application/json"
SSE = "text/event-stream"
# What a model call always says to the model server: a JSON body, and an answer the gateway can read.
_MODEL_CALL_HEADERS = (("Content-Type", JSON), ("Accept-Encoding", "identity"))


def error_body(message: str, kind: str, code: int) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": kind, "code": code}})


@dataclass
class Answer:
    """A whole answer for the caller (streamed ones are written as they come instead)."""

    status: int
    body: bytes
    headers: list[tuple[str, str]]
    reason: str | None = None

    def send(self, reply: Reply) -> None:
        reply.send(self.status, self.body, self.headers, self.reason)


def json_response(content: bytes, status: int = 200, kind: str = JSON) -> Answer:
    return Answer(status, content, [("Content-Type", kind)])


def _text(content: bytes, limit: int = 2000) -> str:
    return content[:limit].decode("utf-8", "replace")


class ModelCalls:
    """Serves POST /v1/chat/completions, /v1/completions and /v1/responses (under /rollout/<id> or not)."""

    def __init__(self, config: GatewayConfig, routes: RouteTable, tracer: trace.Tracer, stats: GatewayStats) -> None:
        self.config = config
        self.routes = routes
        self.tracer = tracer
        self.ids = ChosenSpanIds.install(tracer)
        self.stats = stats
        self.pool: ModelServerPool | None = None  # set in the serving loop
        self.content = attrs.ContentCapture.from_env()  # LIGHTNING_CAPTURE_CONTENT & co, read once
        self._warned_unknown: set[str] = set()

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

    def _span(self, api: str, body: dict[str, Any], context: Context, extra: dict[str, Any]) -> CallSpan:
        return CallSpan(self.tracer, api, body, context, extra, self.content, self.stats.count, self.ids)

    def _refuse(self, call: CallSpan, status: int, message: str, kind: str) -> Answer:
        call.fail(kind, message)
        return json_response(error_body(message, kind, status), status)

    async def handle(
        self, request: Request, reply: Reply, api: str, rollout_id: str | None, endpoint: str, query: str
    ) -> Answer | None:
        """The call's answer, or None when it was streamed to the caller already."""
        self.stats.count("calls")
        route, unknown = self._route(rollout_id)
        context = parent_context(request.headers, route)
        # Gateway-wide attributes first: the rollout's own (baggage, URL, route) are more specific.
        extra = {**self.config.span_attributes, **identity_attributes(context, rollout_id, route, unknown)}
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError as error:
            body = error
        if not isinstance(body, dict):
            reason = f" ({body})" if isinstance(body, Exception) else ""
            call = self._span(api, {}, context, extra)
            return self._refuse(call, 400, f"the request body is not a JSON object{reason}", "invalid_request_error")

        via_chat = api == attrs.RESPONSES and self.config.responses_via_chat
        responses_body = body
        if via_chat:
            extra[semconv.LLM_API] = attrs.RESPONSES
            extra[semconv.GATEWAY_RESPONSES_VIA_CHAT] = True
            try:
                body = responses_translation.chat_request(body)
            except responses_translation.TranslationError as error:
                call = self._span(api, responses_body, context, extra)
                return self._refuse(call, 400, str(error), "invalid_request_error")
            api, endpoint = attrs.CHAT, "/v1/chat/completions"
        rewrite = (route.rewrite if route is not None else None) or self.config.rewrite
        if rewrite is not None:
            try:
                body = rewrite(endpoint[3:], body)
                if not isinstance(body, dict):
                    raise TypeError(f"it returned {type(body).__name__}, not the request body (a dict)")
            except Exception as error:
                logger.exception("the request rewrite for %s failed", endpoint)
                call = self._span(api, responses_body if via_chat else {}, context, extra)
                return self._refuse(call, 500, f"the gateway's request rewrite failed: {error!r}", "rewrite_error")
        asked = ask_for_tokens(api, body) if self.config.request_token_ids and api != attrs.RESPONSES else None
        call = self._span(api, body, context, extra)
        try:
            base = (route.upstream if route is not None and route.upstream else None) or self.config.upstream
            registered = rollout_id if route is not None else None
            via = responses_body if via_chat else None
            return await self._forward(call, request, reply, base, endpoint, query, body, asked, via, registered)
        except (asyncio.CancelledError, CallerGoneError):  # the caller went away before its answer
            call.cancel()
            raise
        except Exception as error:  # a bug of ours: the span says so, the caller gets a 500
            logger.exception("the gateway failed on a %s call", api)
            call.fail("gateway_error", f"{type(error).__name__}: {error}")
            raise

    async def _forward(
        self,
        call: CallSpan,
        request: Request,
        reply: Reply,
        base: str,
        endpoint: str,
        query: str,
        body: dict[str, Any],
        asked: Asked | None,
        responses_body: dict[str, Any] | None,
        rollout_id: str | None,
    ) -> Answer | None:
        """The call sent upstream and answered: None once written to the caller, or the error to write."""
        assert self.pool is not None
        headers = upstream.forwarded_headers(request.headers, model_call=True)
        headers += _MODEL_CALL_HEADERS
        # The call's span as the upstream's parent (the caller's baggage header, if any, went on as it was).
        headers += trace_headers(call.span_context)
        streamed = bool(body.get("stream"))
        sent = body
        if streamed and not self.config.upstream_streams:  # asked in one piece, streamed to the caller from it
            sent = {key: value for key, value in body.items() if key not in ("stream", "stream_options")}
        try:
            url = upstream.upstream_url(base, endpoint, query)
            answer = await self.pool.post(url, headers, orjson.dumps(sent))
        except upstream.UPSTREAM_ERRORS as error:
            self.stats.count("upstream_unavailable")
            message = f"the model server at {base} could not be reached: {type(error).__name__}: {error}"
            return self._refuse(call, 502, message, "upstream_unavailable")
        if answer.status < 400 and streamed and SSE in answer.headers.get("Content-Type", ""):
            if responses_body is not None:
                handler: Any = relays.ResponsesFromChatRelay(call, responses_body, asked)
            elif call.api == attrs.RESPONSES:
                handler = relays.ResponsesRelay(call)
            else:
                handler = relays.ChunkRelay(call, asked, chat=call.api == attrs.CHAT)
            await relays.relay(handler, answer, reply)
            return None
        try:
            content = await answer.read()
        except upstream.UPSTREAM_ERRORS as error:
            answer.close()
            return self._refuse(call, 502, f"the model server's answer broke off: {error}", "upstream_error")
        finally:
            answer.release()
        return self._whole_answer(call, answer, content, asked, responses_body, streamed, reply, rollout_id)

    def _whole_answer(
        self,
        call: CallSpan,
        answer: ModelServerResponse,
        content: bytes,
        asked: Asked | None,
        responses_body: dict[str, Any] | None,
        streamed: bool,
        reply: Reply,
        rollout_id: str | None,
    ) -> Answer | None:
        """A non-streamed answer (or an error, or a server that answered a stream request in one piece):
        sent (None), or the error to send."""
        if answer.status >= 400:
            call.fail(str(answer.status), f"the model server answered {answer.status}: {_text(content)}")
            return _upstream_response(content, answer)
        try:
            data = orjson.loads(content)
            if not isinstance(data, dict):
                raise orjson.JSONDecodeError("not a JSON object", "", 0)
        except orjson.JSONDecodeError:
            call.fail("invalid_upstream_answer", f"the model server's answer is not JSON: {_text(content)}")
            return _upstream_response(content, answer)
        status, kind = answer.status, JSON
        if responses_body is not None:
            asked_ids = asked is not None and asked.token_ids
            if streamed:  # the model server would not stream: the caller still gets events
                content, kind = one_piece.responses_events(responses_body, data, asked), SSE
            else:
                content = orjson.dumps(responses_translation.response_from_chat(responses_body, data, asked_ids))
        elif streamed and call.api != attrs.RESPONSES:  # e.g. our policy server, which cannot stream
            content, kind = one_piece.chunks(data, asked, chat=call.api == attrs.CHAT), SSE
        elif asked is not None and not asked.everything:
            kept, changed = strip(data, asked)
            if changed:
                content = orjson.dumps(kept)
        # The caller first, the span right after. An agent may exit on this answer and its worker end
        # the rollout at once: the worker's unregister_rollout waits for spans of answered calls.
        self.routes.answering(rollout_id)
        try:
            reply.send(status, content, [("Content-Type", kind)])
        except CallerGoneError:
            call.cancel(data)
            raise
        else:
            call.finish(data)
        finally:
            self.routes.recorded(rollout_id)
        return None


def _upstream_response(content: bytes, answer: ModelServerResponse) -> Answer:
    """The model server's own answer (an error), status, body and headers as it sent them."""
    headers = list(upstream.returned_headers(answer.headers.items()).items())
    return Answer(answer.status, content, headers, answer.reason)
