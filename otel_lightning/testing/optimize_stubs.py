"""Two OpenAI-compatible stub servers for offline tests of evaluation and prompt optimisation.

- `PromptSensitiveModel`: a "model" whose answers depend on its system prompt. Asked an arithmetic
  question, it is right on a fixed share of questions (`base_accuracy`, decided by a hash of the
  question, so two endpoints of known quality can be ranked), and on every question once the system
  prompt contains `trigger` (default "use the calculator"): then it calls the `calculator` tool when
  offered, and answers with the tool's result. Wrong answers are off by one.
- `ScriptedOptimizer`: an "optimiser model" that answers each chat completion with the next of a list
  of scripted replies (the last one repeats), recording every request it got.

Both speak chat completions over real HTTP on 127.0.0.1 (threads), with UTF-8 bytes as token ids.
"""

from __future__ import annotations

import collections
import hashlib
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from otel_lightning.testing.arithmetic import evaluate, find_expression, format_number

DEFAULT_TRIGGER = "use the calculator"


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _completion(body: dict[str, Any], text: str | None, call: dict[str, Any] | None) -> dict[str, Any]:
    prompt = "\n".join(f"{m.get('role')}: {_text(m.get('content'))}" for m in body.get("messages") or [])
    completion = text if text is not None else json.dumps(call)
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if call:
        message["tool_calls"] = [{"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function", "function": call}]
    prompt_ids, ids = list(prompt.encode()), list(completion.encode())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "stub"),
        "prompt_token_ids": prompt_ids,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if call else "stop",
                "logprobs": None,
                "token_ids": ids,
            }
        ],
        "usage": {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(ids),
            "total_tokens": len(prompt_ids) + len(ids),
        },
    }


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, owner: _StubServer) -> None:
        super().__init__((owner.host, owner.port), _Handler)
        self.owner = owner


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            return self._json(200, {"object": "list", "data": [{"id": "stub", "object": "model"}]})
        return self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except json.JSONDecodeError as error:
            return self._json(400, {"error": {"message": f"invalid JSON: {error}", "type": "invalid_request_error"}})
        if not self.path.rstrip("/").endswith("/chat/completions"):
            return self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        with self.server.owner.lock:
            self.server.owner.received.append(body)
        return self._json(200, self.server.owner.answer(body))

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _StubServer:
    """Serves in a background thread: `with Stub(...) as server: server.base_url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self.lock = threading.Lock()
        self.received: collections.deque[dict[str, Any]] = collections.deque(maxlen=10_000)
        self._server = _Server(self)
        self.base_url = f"http://{host}:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True)

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        raise NotImplementedError

    def start(self) -> _StubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> _StubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class PromptSensitiveModel(_StubServer):
    def __init__(
        self, base_accuracy: float = 0.0, trigger: str = DEFAULT_TRIGGER, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        super().__init__(host, port)
        self.base_accuracy = base_accuracy
        self.trigger = trigger.lower()

    def knows(self, question: str) -> bool:
        """Whether it answers `question` right without the trigger: a fixed share of questions."""
        bucket = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return bucket < self.base_accuracy

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        system = " ".join(_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
        prompted = self.trigger in system.lower()
        last = messages[-1] if messages else {}
        if last.get("role") == "tool":
            return _completion(body, f"The answer is {_text(last.get('content')).strip()}.", None)
        question = next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        expression = find_expression(question)
        if expression is None:
            return _completion(body, "I can only do arithmetic.", None)
        tools = [(t.get("function") or {}).get("name") for t in body.get("tools") or []]
        if prompted and "calculator" in tools:
            return _completion(body, None, {"name": "calculator", "arguments": json.dumps({"expression": expression})})
        value = evaluate(expression)
        if not (prompted or self.knows(question)):
            value += 1
        return _completion(body, f"The answer is {format_number(value)}.", None)


class ScriptedOptimizer(_StubServer):
    def __init__(self, replies: list[str], host: str = "127.0.0.1", port: int = 0) -> None:
        if not replies:
            raise ValueError("give the optimiser at least one reply")
        super().__init__(host, port)
        self.replies = list(replies)
        self.calls = 0

    def answer(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            reply = self.replies[min(self.calls, len(self.replies) - 1)]
            self.calls += 1
        return _completion(body, reply, None)


def main() -> None:
    """`python -m otel_lightning.testing.optimize_stubs model --port 8001` (or `optimizer --reply TEXT ...`)."""
    import argparse

    parser = argparse.ArgumentParser(description="stub servers for offline runs of eval and optimize-prompt")
    parser.add_argument("kind", choices=("model", "optimizer"))
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--base-accuracy", type=float, default=0.0, help="model: share of questions it knows")
    parser.add_argument("--reply", action="append", default=[], help="optimizer: its replies, in order")
    args = parser.parse_args()
    if args.kind == "model":
        server: _StubServer = PromptSensitiveModel(args.base_accuracy, port=args.port)
    else:
        server = ScriptedOptimizer(args.reply or ["<prompt>Use the calculator.</prompt>"], port=args.port)
    print(f"{type(server).__name__} on {server.base_url}", flush=True)
    server._server.serve_forever()


if __name__ == "__main__":
    main()
