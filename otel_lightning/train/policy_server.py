"""An OpenAI-compatible `/v1/chat/completions` endpoint in front of the policy being trained.

Answers the way vLLM does with `return_token_ids`: `prompt_token_ids` beside the choices and
`token_ids` in each choice, logprobs on request, tool calls parsed from the model's `<call>` tokens,
and `policy_version` in every response so each transition records which weights produced it.
"""

from __future__ import annotations

import hmac
import inspect
import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import baggage
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from pydantic import BaseModel, ConfigDict, Field

from otel_lightning.listen import check_listen
from otel_lightning.semconv import BAGGAGE_AGENT_NAME
from otel_lightning.train.batching import BatchScheduler
from otel_lightning.train.policy import Generation, GenerationRequest, TorchPolicy
from otel_lightning.train.sample_seeds import SampleSeeds

# A chat request is a few KB to a few hundred; one larger than this is refused (413) before it is
# parsed. Within it, a prompt longer than the model's context is refused (400) before it is
# tokenized or batched with others: one oversized prompt failed every request batched with it.
DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024
_DEFAULT_CONTEXT = 4096
# Characters per token of any tokenizer we serve is at most this (bytes: 1; BPE: ~4): prompts with
# more characters than context x this cannot fit and are refused before tokenizing.
_MAX_CHARS_PER_TOKEN = 16


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = ""
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    temperature: float | None = Field(default=None, ge=0, le=100, allow_inf_nan=False)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None
    seed: int | None = None
    stream: bool | None = None


def _first_parameter(tool: dict[str, Any]) -> str:
    properties = ((tool.get("function") or {}).get("parameters") or {}).get("properties") or {}
    return next(iter(properties), "input")


def context_length(policy: TorchPolicy) -> int:
    """Prompt plus completion tokens the model can attend to (its position embeddings)."""
    config = getattr(policy.model, "config", None)
    return int(getattr(config, "max_position_embeddings", None) or _DEFAULT_CONTEXT)


class PromptTooLongError(ValueError):
    pass


def requested_agent(policy: TorchPolicy, model: str, headers: Mapping[str, str]) -> str | None:
    """Whose adapter answers, when the policy has one per agent: the agent named in the request's W3C
    baggage (`lightning.agent.name`, as a gateway that attributes calls to agents forwards it), else
    the model name asked for. A name with no adapter gets the base model (TorchPolicy.adapter_key logs it)."""
    if not policy.adapters:
        return None
    carried = baggage.get_baggage(BAGGAGE_AGENT_NAME, W3CBaggagePropagator().extract(headers)) if headers else None
    return str(carried) if carried else (model or None)


def chat_completion(
    policy: TorchPolicy,
    request: ChatRequest,
    generate: Callable[[GenerationRequest], tuple[Generation, int]],
    agent: str | None = None,
    seeds: SampleSeeds | None = None,
) -> dict[str, Any]:
    tokenizer = policy.tokenizer
    tools = {(t.get("function") or {}).get("name"): t for t in request.tools or []}
    default_tool = next(iter(tools), None)  # `<call>ARG</call>` is a call of the first tool offered
    context = context_length(policy)
    max_tokens = request.max_completion_tokens or request.max_tokens or 32
    if max_tokens >= context:
        raise PromptTooLongError(f"max_tokens {max_tokens} leaves no room for a prompt in the {context}-token context")
    characters = len(json.dumps(request.messages)) + len(json.dumps(request.tools or []))
    if characters > context * _MAX_CHARS_PER_TOKEN:
        raise PromptTooLongError(f"the prompt ({characters} characters) cannot fit the model's {context}-token context")
    prompt_ids = tokenizer.encode_prompt(request.messages, default_tool, request.tools)
    if len(prompt_ids) + max_tokens > context:
        raise PromptTooLongError(
            f"the prompt is {len(prompt_ids)} tokens; with max_tokens {max_tokens} it is over the model's"
            f" {context}-token context: shorten it or ask for fewer tokens"
        )
    temperature = 1.0 if request.temperature is None else request.temperature
    seed = request.seed
    if seed is None and seeds is not None:
        seed = seeds.next(policy.version, agent, temperature, prompt_ids)
    generation, version = generate(GenerationRequest(prompt_ids, max_tokens, temperature, seed, agent))
    text, calls = tokenizer.parse_completion(generation.token_ids, default_tool or "")
    tool_calls = [
        {
            "id": f"call_{uuid.uuid4().hex[:12]}",
            "type": "function",
            "function": {
                "name": call.name,
                "arguments": json.dumps(
                    call.arguments
                    if call.arguments is not None
                    else {_first_parameter(tools.get(call.name, {})): call.argument}
                ),
            },
        }
        for call in calls
    ]
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not tool_calls else None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    finish = "tool_calls" if tool_calls else generation.finish_reason
    choice: dict[str, Any] = {
        "index": 0,
        "message": message,
        "finish_reason": finish,
        "token_ids": generation.token_ids,
        "logprobs": None,
    }
    if request.logprobs:
        choice["logprobs"] = {
            "content": [
                {"token": tokenizer.decode([t]), "logprob": lp, "bytes": tokenizer.token_bytes(t), "top_logprobs": []}
                for t, lp in zip(generation.token_ids, generation.logprobs, strict=True)
            ]
        }
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.model or policy.name,
        "choices": [choice],
        "usage": {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(generation.token_ids),
            "total_tokens": len(prompt_ids) + len(generation.token_ids),
        },
        "prompt_token_ids": prompt_ids,
        "policy_version": str(version),
    }


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` (declared or, chunked, counted as it comes)
    is answered 413 before the app reads it; a Content-Length that is not a number gets 400."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                text = declared[:40].decode(errors="replace")
                return await _refuse(send, 400, f"Content-Length {text!r} is not a number")
            if int(declared) > self.max_bytes:
                return await _refuse(send, 413, self._too_large())
        # The body is read here, counted as it comes (chunked bodies declare no length), then
        # handed to the app: at most max_bytes are ever held.
        pieces, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            pieces.append(message.get("body", b""))
            size += len(pieces[-1])
            if size > self.max_bytes:
                return await _refuse(send, 413, self._too_large())
            more = message.get("more_body", False)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": b"".join(pieces), "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"the request body is over the policy server's {self.max_bytes}-byte limit"


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app(
    policy: TorchPolicy,
    scheduler: BatchScheduler,
    api_key: str | None = None,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
) -> FastAPI:
    # FastAPI's own telemetry (on by default in the pinned 0.165) traces each request into the caller's trace:
    # its server span ends after the response is sent, so after a quick agent's rollout span, and the collector
    # counted it late ("span(s) arrived after their rollout was completed"). Its four spans per call carry
    # nothing a trainer uses and cost the collector work; the agent's side records the call.
    quiet = {"tracing": False, "metrics": False, "logs": False}
    telemetry = {"telemetry": quiet} if "telemetry" in inspect.signature(FastAPI).parameters else {}
    app = FastAPI(title="otel-lightning policy server", **telemetry)
    seeds = SampleSeeds()  # requests without a seed sample the same tokens run after run
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)

    if api_key:
        # OpenAI clients send their api_key as a bearer token: the policy server can ask for one.
        @app.middleware("http")
        async def require_api_key(request: Request, call_next: Any) -> Any:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), api_key.encode()):
                message = "send this policy server's API key (OPENAI_API_KEY) as 'Authorization: Bearer <key>'"
                return JSONResponse({"error": {"message": message, "type": "invalid_api_key"}}, 401)
            return await call_next(request)

    # Errors in the OpenAI shape, so OpenAI clients show the reason.
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        return JSONResponse({"error": {"message": error.detail, "type": "invalid_request_error"}}, error.status_code)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": {"message": str(error.errors()), "type": "invalid_request_error"}}, 400)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        # With a policy per agent, each agent's adapter is a model of its own name.
        names = [policy.name, *policy.adapters]
        data = [{"id": name, "object": "model", "policy_version": policy.version} for name in names]
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def completions(request: ChatRequest, http_request: Request) -> dict[str, Any]:
        if request.stream:
            raise HTTPException(400, "streaming is not supported by the embedded policy server; use stream=false")
        if not request.messages:
            raise HTTPException(400, "messages must not be empty")
        try:
            agent = requested_agent(policy, request.model, http_request.headers)
            return await run_in_threadpool(chat_completion, policy, request, scheduler.generate, agent, seeds)
        except PromptTooLongError as error:
            raise HTTPException(400, str(error)) from None

    return app


class PolicyServer:
    """uvicorn in a background thread: `with PolicyServer(policy) as server: server.base_url`."""

    def __init__(
        self,
        policy: TorchPolicy,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        api_key: str | None = None,
        tls_cert_file: str | None = None,
        tls_key_file: str | None = None,
        allow_remote: bool = False,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    ) -> None:
        check_listen(host, allow_remote, "the policy server answers anyone who can reach it")
        self.scheduler = BatchScheduler(policy)
        app = create_app(policy, self.scheduler, api_key, max_request_bytes=max_request_bytes)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            ssl_certfile=tls_cert_file,
            ssl_keyfile=tls_key_file,
            # A slow or idle client does not hold a connection for ever; connections are bounded.
            timeout_keep_alive=10,
            limit_concurrency=512,
        )
        self.scheme = "https" if tls_cert_file else "http"
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="policy-server", daemon=True)
        self.host = host
        self.base_url = ""

    def start(self) -> PolicyServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the policy server did not start; see the log above")
            time.sleep(0.01)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"{self.scheme}://{self.host}:{port}/v1"
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self.scheduler.close()

    def __enter__(self) -> PolicyServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
