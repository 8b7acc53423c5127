"""A small OpenAI-compatible server for offline runs and tests (not a model: a fixed policy).

    python -m otel_lightning.testing.openai_stub --port 8000

Serves `/v1/chat/completions`, `/v1/completions` and `/v1/responses`, streaming or not, the way vLLM
does: prompt and completion token ids (UTF-8 bytes of the text) only when the request asks with
`return_token_ids` (the prompt's on the first streamed chunk), logprobs only when asked (`logprobs`),
the usage chunk only with `stream_options.include_usage`, and a Responses API with no token-id fields
at all (vLLM's has none to ask for); plus `policy_version` (vLLM has none: `policy_version=None`).
Its policy: with a `calculator` tool offered, it calls it on the arithmetic in the question, then
answers with the tool's result; without tools it answers the arithmetic itself.
A model named `error` gets HTTP 500, to exercise failure paths; a streamed one named `stall` stalls.
It also answers vLLM's `GET /health` and the dev-mode weight endpoints (`POST /collective_rpc`,
`/reset_prefix_cache`), recording them.
"""

from __future__ import annotations

import argparse
import collections
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from otel_lightning.testing.arithmetic import evaluate, find_expression, format_number

POLICY_VERSION = "stub-1"
# A streamed request for this model gets one chunk, then nothing but keep-alives (for disconnect tests).
STALL_MODEL = "stall"


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def token_ids(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def _responses_events(in_progress: dict[str, Any], item: dict[str, Any], done: dict[str, Any]) -> list[dict[str, Any]]:
    """The Responses API's typed events for one output item (a message or a function call), in the
    order OpenAI sends them, as the openai client's stream helpers and the Agents SDK read them."""
    at = {"output_index": 0, "item_id": item["id"]}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": in_progress},
        {"type": "response.in_progress", "response": in_progress},
    ]
    if item["type"] == "message":
        part = item["content"][0]
        text = part["text"]
        events += [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress", "content": []},
            },
            {"type": "response.content_part.added", **at, "content_index": 0, "part": {**part, "text": ""}},
            {"type": "response.output_text.delta", **at, "content_index": 0, "delta": text, "logprobs": []},
            {"type": "response.output_text.done", **at, "content_index": 0, "text": text, "logprobs": []},
            {"type": "response.content_part.done", **at, "content_index": 0, "part": part},
        ]
    else:
        arguments = item["arguments"]
        events += [
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "status": "in_progress", "arguments": ""},
            },
            {"type": "response.function_call_arguments.delta", **at, "delta": arguments},
            {"type": "response.function_call_arguments.done", **at, "arguments": arguments},
        ]
    events += [
        {"type": "response.output_item.done", "output_index": 0, "item": item},
        {"type": "response.completed", "response": done},
    ]
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def _chat_logprob(token_id: int) -> dict[str, Any]:
    return {
        "token": chr(token_id) if token_id < 128 else "?",
        "logprob": -0.25,
        "bytes": [token_id],
        "top_logprobs": [],
    }


def _tool_names_by_call_id(messages: list[dict[str, Any]]) -> dict[str, str]:
    names = {}
    for message in messages:
        for call in message.get("tool_calls") or []:  # chat completions
            names[call.get("id", "")] = (call.get("function") or {}).get("name", "")
        if message.get("type") == "function_call":  # responses
            names[message.get("call_id", "")] = message.get("name", "")
    return names


def _is_tool_result(message: dict[str, Any]) -> bool:
    return message.get("role") in ("tool", "function_call_output") or message.get("type") == "function_call_output"


def _tool_name(tool: dict[str, Any]) -> str:
    return (tool.get("function") or {}).get("name") or tool.get("name") or ""  # chat completions | responses


def _handoff_arguments(tool: dict[str, Any], question: str) -> str:
    """A handoff tool's arguments: the question for each required string parameter (a subagent called
    as a tool takes the request), none for the Agents SDK's parameterless `transfer_to_*`."""
    schema = (tool.get("function") or tool).get("parameters") or {}
    properties = schema.get("properties") or {}
    required = [name for name in schema.get("required") or [] if properties.get(name, {}).get("type") == "string"]
    return json.dumps({name: question for name in required})


def decide(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> tuple[str | None, dict[str, Any] | None]:
    """(answer text, tool call) the stub policy gives for a conversation.

    After a calculator result: answer with it. After a handoff's result (`transfer_to_*`), an agent
    without a calculator answers with it too (a supervisor reporting its subagent's answer). Else,
    with a calculator offered: call it on the question's arithmetic; with only a `transfer_to_*`
    tool: hand off; otherwise answer the arithmetic directly.
    """
    names = _tool_names_by_call_id(messages)
    tool_names = [_tool_name(t) for t in tools]
    last = messages[-1] if messages else {}
    if _is_tool_result(last):
        result = _text_of(last.get("content") or last.get("output"))
        if not names.get(last.get("tool_call_id") or last.get("call_id") or "", "").startswith("transfer_to_"):
            return f"The answer is {result}.", None
        if "calculator" not in tool_names:
            return result, None
    # The latest user message with arithmetic in it: in a team, other agents speak as users too.
    users = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
    question = next((text for text in reversed(users) if find_expression(text)), users[-1] if users else "")
    expression = find_expression(question)
    if expression and "calculator" in tool_names:
        return None, {"name": "calculator", "arguments": json.dumps({"expression": expression})}
    handoff = next((t for t in tools if _tool_name(t).startswith("transfer_to_")), None)
    if expression and handoff:
        return None, {"name": _tool_name(handoff), "arguments": _handoff_arguments(handoff, question)}
    if expression:
        try:
            return f"The answer is {format_number(evaluate(expression))}.", None
        except ValueError:
            pass
    return "I can only do arithmetic.", None


def chat_completion(
    body: dict[str, Any], policy_version: str | None = POLICY_VERSION, always_token_ids: bool = False
) -> dict[str, Any]:
    """The stub's (non-streamed) response to a chat completions request body (no `policy_version`
    in it when None, as vLLM answers; token ids only when the body has `return_token_ids`, unless
    `always_token_ids`, as our policy server answers)."""
    messages = body.get("messages") or []
    text, call = decide(messages, body.get("tools") or [])
    prompt = "\n".join(f"{m.get('role')}: {_text_of(m.get('content'))}" for m in messages)
    completion = text if text is not None else json.dumps(call)
    ids = token_ids(completion)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if call:
        message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function", "function": call}]
    usage = {"prompt_tokens": len(token_ids(prompt)), "completion_tokens": len(ids), "total_tokens": 0}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    logprobs = {"content": [_chat_logprob(i) for i in ids]} if body.get("logprobs") else None
    asked_ids = always_token_ids or bool(body.get("return_token_ids"))
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": "tool_calls" if call else "stop",
        "logprobs": logprobs,
        "token_ids": ids if asked_ids else None,
    }
    response = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "stub"),
        "prompt_token_ids": token_ids(prompt) if asked_ids else None,
        "choices": [choice],
        "usage": usage,
    }
    if policy_version is not None:
        response["policy_version"] = policy_version
    return response


class _StubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], policy_version: str | None = POLICY_VERSION, token_ids: str = "when_asked"
    ) -> None:
        super().__init__(address, _Handler)
        self.policy_version = policy_version
        if token_ids not in ("when_asked", "always"):
            raise ValueError(
                f"token_ids must be 'when_asked' (vLLM) or 'always' (our policy server), not {token_ids!r}"
            )
        self.always_token_ids = token_ids == "always"
        # (path, body) of every POST, in arrival order (bounded), for tests to look at.
        self.received: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(maxlen=1000)
        # Streams the caller went away from before the end (the `stall` model's), counted when the write failed.
        self.aborted_streams = 0


_VLLM_DEV_ROUTES = ("/collective_rpc", "/reset_prefix_cache")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without this, Nagle's algorithm and the caller's
    # delayed ACK hold the body back ~40 ms on a kept-alive connection.
    disable_nagle_algorithm = True
    server: _StubHTTPServer

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/health", "/v1/models"):
            return self._json(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
        return self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as error:
            return self._json(400, {"error": {"message": f"invalid JSON: {error}", "type": "invalid_request_error"}})
        self.server.received.append((self.path, body))
        if self.path.rstrip("/") in _VLLM_DEV_ROUTES:
            return self._json(200, {"results": [None]} if "collective_rpc" in self.path else {})
        if body.get("model") == "error":
            return self._json(500, {"error": {"message": "stub model failure", "type": "server_error"}})
        if body.get("model") == STALL_MODEL and body.get("stream"):
            return self._stall()
        if self.path.rstrip("/").endswith("/chat/completions"):
            return self._chat(body)
        if self.path.rstrip("/").endswith("/responses"):
            return self._responses(body)
        if self.path.rstrip("/").endswith("/completions"):
            return self._completions(body)
        return self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    # --- chat.completions ---------------------------------------------------------------------

    def _chat(self, body: dict[str, Any]) -> None:
        response = chat_completion(body, self.server.policy_version, self.server.always_token_ids)
        if not body.get("stream"):
            return self._json(200, response)
        asked_ids = self.server.always_token_ids or bool(body.get("return_token_ids"))
        base = {key: value for key, value in response.items() if key not in ("object", "choices", "usage")}
        base.pop("prompt_token_ids")
        usage = response["usage"]
        (answer,) = response["choices"]
        message, finish, logprobs = answer["message"], answer["finish_reason"], answer["logprobs"]
        call, text = message.get("tool_calls"), message["content"]

        def with_tokens(choice: dict[str, Any], part: str) -> dict[str, Any]:
            part_ids = token_ids(part)
            choice["token_ids"] = part_ids if asked_ids else None  # vLLM names the field either way
            choice["logprobs"] = {"content": [_chat_logprob(i) for i in part_ids]} if logprobs else None
            return choice

        def chunks() -> Iterator[dict[str, Any]]:
            chunk = {**base, "object": "chat.completion.chunk"}
            first = {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant"}, "finish_reason": None}]}
            # vLLM: the prompt's ids on the first chunk only (null on the others, and when not asked).
            yield {**first, "prompt_token_ids": response["prompt_token_ids"]}
            chunk["prompt_token_ids"] = None
            if call:
                delta = {"tool_calls": [{"index": 0, **message["tool_calls"][0]}]}
                completion = json.dumps(call[0]["function"])
                yield {
                    **chunk,
                    "choices": [with_tokens({"index": 0, "delta": delta, "finish_reason": None}, completion)],
                }
            else:
                half = len(text) // 2
                for part in (text[:half], text[half:]):
                    choice = {"index": 0, "delta": {"content": part}, "finish_reason": None}
                    yield {**chunk, "choices": [with_tokens(choice, part)]}
            yield {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
            if (body.get("stream_options") or {}).get("include_usage"):
                yield {**chunk, "choices": [], "usage": usage}

        self._sse(chunks(), done_marker=True)

    # --- completions (the legacy text API) ------------------------------------------------------

    def _completions(self, body: dict[str, Any]) -> None:
        prompt = body.get("prompt")
        prompt_text = prompt if isinstance(prompt, str) else "".join(map(str, prompt or []))
        text, _ = decide([{"role": "user", "content": prompt_text}], [])
        ids = token_ids(text or "")
        asked_ids = self.server.always_token_ids or bool(body.get("return_token_ids"))
        logprobs = body.get("logprobs") is not None
        prompt_ids = (
            prompt if isinstance(prompt, list) and all(type(i) is int for i in prompt) else token_ids(prompt_text)
        )
        usage = {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(ids),
            "total_tokens": len(prompt_ids) + len(ids),
        }
        base = {"id": f"cmpl-{uuid.uuid4().hex[:12]}", "created": int(time.time()), "model": body.get("model", "stub")}
        if self.server.policy_version is not None:
            base["policy_version"] = self.server.policy_version

        def choice(part: str, finish: str | None, first: bool) -> dict[str, Any]:
            part_ids = token_ids(part)
            out: dict[str, Any] = {"index": 0, "text": part, "finish_reason": finish, "logprobs": None}
            if logprobs:
                out["logprobs"] = {
                    "tokens": [chr(i) for i in part_ids],
                    "token_logprobs": [-0.25] * len(part_ids),
                    "top_logprobs": [None] * len(part_ids),
                    "text_offset": list(range(len(part_ids))),
                }
            out["token_ids"] = part_ids if asked_ids else None
            out["prompt_token_ids"] = prompt_ids if asked_ids and first else None
            return out

        if not body.get("stream"):
            return self._json(
                200, {**base, "object": "text_completion", "choices": [choice(text, "stop", True)], "usage": usage}
            )
        half = len(text) // 2
        chunk = {**base, "object": "text_completion"}
        chunks = [
            {**chunk, "choices": [choice(text[:half], None, True)]},
            {**chunk, "choices": [choice(text[half:], "stop", False)]},
        ]
        if (body.get("stream_options") or {}).get("include_usage"):
            chunks.append({**chunk, "choices": [], "usage": usage})
        self._sse(iter(chunks), done_marker=True)

    # --- responses ----------------------------------------------------------------------------

    def _responses(self, body: dict[str, Any]) -> None:
        given = body.get("input")
        messages = [{"role": "user", "content": given}] if isinstance(given, str) else list(given or [])
        text, call = decide(messages, body.get("tools") or [])
        prompt = "\n".join(_text_of(m.get("content")) or str(m.get("output", "")) for m in messages)
        completion = text if text is not None else json.dumps(call)
        if call:
            output = [
                {
                    "type": "function_call",
                    "id": f"fc_{uuid.uuid4().hex[:8]}",
                    "call_id": f"call_{uuid.uuid4().hex[:8]}",
                    "name": call["name"],
                    "arguments": call["arguments"],
                    "status": "completed",
                }
            ]
        else:
            output = [
                {
                    "type": "message",
                    "id": f"msg_{uuid.uuid4().hex[:8]}",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ]
        response = {
            "id": f"resp_{uuid.uuid4().hex[:12]}",
            "object": "response",
            "created_at": int(time.time()),
            "model": body.get("model", "stub"),
            "status": "completed",
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": body.get("tools") or [],
            "usage": {
                "input_tokens": len(token_ids(prompt)),
                "output_tokens": len(token_ids(completion)),
                "total_tokens": len(token_ids(prompt)) + len(token_ids(completion)),
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }
        if self.server.always_token_ids:  # vLLM's Responses API has no token ids; our policy server's would
            response["prompt_token_ids"] = token_ids(prompt)
            response["output_token_ids"] = token_ids(completion)
        if self.server.policy_version is not None:
            response["policy_version"] = self.server.policy_version
        if not body.get("stream"):
            return self._json(200, response)
        in_progress = {**response, "status": "in_progress", "output": [], "usage": None}
        self._sse(iter(_responses_events(in_progress, output[0], response)), done_marker=False)

    # --- plumbing -----------------------------------------------------------------------------

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stall(self) -> None:
        """A stream that starts and then only keeps the connection alive (for up to 10 s): what a long
        generation looks like to a caller that gives up."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        chunk = {"id": "chatcmpl-stall", "object": "chat.completion.chunk", "model": STALL_MODEL}
        first = {**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Thinking"}}]}
        self.close_connection = True
        try:
            self.wfile.write(f"data: {json.dumps(first)}\n\n".encode())
            self.wfile.flush()
            for _ in range(200):
                time.sleep(0.05)
                self.wfile.write(b": still thinking\n\n")
                self.wfile.flush()
        except OSError:
            self.server.aborted_streams += 1

    def _sse(self, events: Iterator[dict[str, Any]], done_marker: bool) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        for event in events:
            name = f"event: {event['type']}\n" if "type" in event and not done_marker else ""
            self.wfile.write(f"{name}data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()
        if done_marker:
            self.wfile.write(b"data: [DONE]\n\n")
        self.close_connection = True


class StubOpenAIServer:
    """The stub in a background thread: `with StubOpenAIServer() as server: server.base_url`."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        policy_version: str | None = POLICY_VERSION,
        token_ids: str = "when_asked",
    ) -> None:
        """`policy_version=None`: answer without one, as vLLM does. `token_ids="when_asked"`: prompt and
        completion token ids only for requests with `return_token_ids`, none on the Responses API (vLLM);
        "always": on every answer, the Responses API's included (our policy server)."""
        self._server = _StubHTTPServer((host, port), policy_version, token_ids)
        self.received = self._server.received
        self.base_url = f"http://{host}:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-stub", daemon=True)

    def __enter__(self) -> StubOpenAIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible stub server for offline otel-lightning runs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--token-ids", choices=("when_asked", "always"), default="when_asked", help="when_asked: as vLLM does"
    )
    args = parser.parse_args()
    server = _StubHTTPServer((args.host, args.port), token_ids=args.token_ids)
    print(f"stub OpenAI server on http://{args.host}:{args.port}/v1", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
