"""An OpenAI-compatible `/v1/chat/completions` endpoint in front of the policy being trained.

Answers the way vLLM does with `return_token_ids`: `prompt_token_ids` beside the choices and
`token_ids` in each choice, logprobs on request, tool calls parsed from the model's `<call>` tokens,
and `policy_version` in every response so each transition records which weights produced it.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from otel_lightning.listen import check_listen
from otel_lightning.train.batching import BatchScheduler
from otel_lightning.train.policy import Generation, GenerationRequest, TorchPolicy


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = ""
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    seed: int | None = None
    stream: bool | None = None


def _first_parameter(tool: dict[str, Any]) -> str:
    properties = ((tool.get("function") or {}).get("parameters") or {}).get("properties") or {}
    return next(iter(properties), "input")


def chat_completion(
    policy: TorchPolicy, request: ChatRequest, generate: Callable[[GenerationRequest], tuple[Generation, int]]
) -> dict[str, Any]:
    tokenizer = policy.tokenizer
    tools = {(t.get("function") or {}).get("name"): t for t in request.tools or []}
    default_tool = next(iter(tools), None)  # `<call>ARG</call>` is a call of the first tool offered
    prompt_ids = tokenizer.encode_prompt(request.messages, default_tool, request.tools)
    max_tokens = request.max_completion_tokens or request.max_tokens or 32
    temperature = 1.0 if request.temperature is None else request.temperature
    generation, version = generate(GenerationRequest(prompt_ids, max_tokens, temperature, request.seed))
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


def create_app(policy: TorchPolicy, scheduler: BatchScheduler, api_key: str | None = None) -> FastAPI:
    app = FastAPI(title="otel-lightning policy server")

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
        return {"object": "list", "data": [{"id": policy.name, "object": "model", "policy_version": policy.version}]}

    @app.post("/v1/chat/completions")
    async def completions(request: ChatRequest) -> dict[str, Any]:
        if request.stream:
            raise HTTPException(400, "streaming is not supported by the embedded policy server; use stream=false")
        if not request.messages:
            raise HTTPException(400, "messages must not be empty")
        return await run_in_threadpool(chat_completion, policy, request, scheduler.generate)

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
    ) -> None:
        check_listen(host, allow_remote, "the policy server answers anyone who can reach it")
        self.scheduler = BatchScheduler(policy)
        app = create_app(policy, self.scheduler, api_key)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
            ssl_certfile=tls_cert_file,
            ssl_keyfile=tls_key_file,
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
