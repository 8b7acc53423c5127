"""Streams: accumulate chunks into the shape of a non-streamed response, end the span when done."""

from __future__ import annotations

import logging
from typing import Any

import wrapt

from otel_lightning_instrumentation_openai.extract import CHAT_COMPLETIONS
from otel_lightning_instrumentation_openai.llm_span import LLMCall

logger = logging.getLogger(__name__)


class ChatChunkAccumulator:
    """Folds `chat.completion.chunk`s (with vLLM's token-id extras) into one ChatCompletion dict."""

    def __init__(self) -> None:
        self.response: dict[str, Any] = {"choices": []}
        self._choices: dict[int, dict[str, Any]] = {}

    def add(self, chunk: dict[str, Any]) -> None:
        for key in ("id", "model", "usage", "prompt_token_ids", "policy_version"):
            if chunk.get(key) is not None:
                self.response[key] = chunk[key]
        for delta_choice in chunk.get("choices") or []:
            choice = self._choice(delta_choice.get("index", 0))
            delta = delta_choice.get("delta") or {}
            message = choice["message"]
            if delta.get("content"):
                message["content"] = (message.get("content") or "") + delta["content"]
            for call_delta in delta.get("tool_calls") or []:
                self._add_tool_call(message, call_delta)
            if delta_choice.get("finish_reason"):
                choice["finish_reason"] = delta_choice["finish_reason"]
            if delta_choice.get("token_ids"):
                choice.setdefault("token_ids", []).extend(delta_choice["token_ids"])
            logprobs = (delta_choice.get("logprobs") or {}).get("content")
            if logprobs:
                choice.setdefault("logprobs", {"content": []})["content"].extend(logprobs)

    def _choice(self, index: int) -> dict[str, Any]:
        if index not in self._choices:
            self._choices[index] = {"index": index, "message": {"role": "assistant", "content": None}}
            self.response["choices"] = [self._choices[i] for i in sorted(self._choices)]
        return self._choices[index]

    @staticmethod
    def _add_tool_call(message: dict[str, Any], call_delta: dict[str, Any]) -> None:
        calls = message.setdefault("tool_calls", [])
        index = call_delta.get("index", len(calls))
        while len(calls) <= index:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[index]
        if call_delta.get("id"):
            call["id"] = call_delta["id"]
        function = call_delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


class ResponsesEventAccumulator:
    """Keeps the final Response of a Responses API event stream (`response.completed` and kin)."""

    def __init__(self) -> None:
        self.response: dict[str, Any] = {}

    def add(self, event: dict[str, Any]) -> None:
        if isinstance(event.get("response"), dict):
            self.response = event["response"]


def _accumulator(api: str) -> ChatChunkAccumulator | ResponsesEventAccumulator:
    return ChatChunkAccumulator() if api == CHAT_COMPLETIONS else ResponsesEventAccumulator()


class StreamRecorder:
    def __init__(self, call: LLMCall) -> None:
        self.call = call
        self.accumulator = _accumulator(call.api)
        self.done = False

    def observe(self, item: Any) -> None:
        try:
            self.accumulator.add(item.model_dump() if hasattr(item, "model_dump") else dict(item))
        except Exception:  # a chunk we cannot read must not break the agent
            logger.debug("could not record a stream chunk", exc_info=True)

    def finish(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        if error is not None:
            self.call.fail(error)
        else:
            self.call.finish(self.accumulator.response)


class RecordedStream(wrapt.ObjectProxy):
    """Proxy of `openai.Stream` that records the chunks it yields; the span ends with the stream."""

    def __init__(self, stream: Any, call: LLMCall) -> None:
        super().__init__(stream)
        self._self_recorder = StreamRecorder(call)

    def __iter__(self) -> RecordedStream:
        return self

    def __next__(self) -> Any:
        try:
            item = self.__wrapped__.__next__()
        except StopIteration:
            self._self_recorder.finish()
            raise
        except BaseException as error:
            self._self_recorder.finish(error)
            raise
        self._self_recorder.observe(item)
        return item

    def __enter__(self) -> RecordedStream:
        self.__wrapped__.__enter__()
        return self

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            return self.__wrapped__.__exit__(*exc_info)
        finally:
            self._self_recorder.finish(exc_info[1])

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_recorder.finish()


class RecordedAsyncStream(wrapt.ObjectProxy):
    """Proxy of `openai.AsyncStream`, as RecordedStream."""

    def __init__(self, stream: Any, call: LLMCall) -> None:
        super().__init__(stream)
        self._self_recorder = StreamRecorder(call)

    def __aiter__(self) -> RecordedAsyncStream:
        return self

    async def __anext__(self) -> Any:
        try:
            item = await self.__wrapped__.__anext__()
        except StopAsyncIteration:
            self._self_recorder.finish()
            raise
        except BaseException as error:
            self._self_recorder.finish(error)
            raise
        self._self_recorder.observe(item)
        return item

    async def __aenter__(self) -> RecordedAsyncStream:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> Any:
        try:
            return await self.__wrapped__.__aexit__(*exc_info)
        finally:
            self._self_recorder.finish(exc_info[1])

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_recorder.finish()
