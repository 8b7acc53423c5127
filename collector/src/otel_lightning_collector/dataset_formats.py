"""Conversations (OpenAI chat messages and tools, as transitions hold them) in other tools' dataset layouts.

- `openai_record`: `{"messages", "tools"}`, what OpenAI fine-tuning and TRL's SFTTrainer read. Only the
  keys those know are kept (role, content, tool_calls, tool_call_id); tool call arguments stay JSON
  strings, as OpenAI sends them.
- `sharegpt_record`: LLaMA-Factory's sharegpt layout with tools (its data/README.md and converter):
  `conversations` of human / gpt / function_call / observation turns, human and observation at odd
  positions, gpt and function_call at even ones; the system prompt in `system`, the tools as a JSON
  string of function definitions in `tools`; a function_call's value is `{"name", "arguments"}` as JSON
  (a list of them for parallel calls); the results of parallel calls are one observation, joined the way
  LLaMA-Factory's own openai converter joins them.
- `verl_row`: a row of verl's RL parquet, shaped as examples/verl/make_dataset.py writes it.

A conversation a layout cannot hold raises FormatError with a short reason, which the export counts.
"""

from __future__ import annotations

import json
from typing import Any


class FormatError(ValueError):
    """The conversation has no faithful form in this layout (the reason is counted, not fatal)."""


# LLaMA-Factory's OpenAIDatasetConverter joins the results of parallel tool calls so.
_OBSERVATION_JOIN = "\n</tool_response>\n<tool_response>\n"
_SYSTEM_ROLES = ("system", "developer")


def text(content: Any) -> str | None:
    """A message's content as text: OpenAI text parts joined; other parts (images, audio) are refused."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") not in ("text", "input_text", "output_text"):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise FormatError(f"non-text content ({kind})")
            texts.append(str(part.get("text", "")))
        return "".join(texts)
    raise FormatError(f"content that is not text ({type(content).__name__})")


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {
        "id": str(call.get("id") or ""),
        "type": "function",
        "function": {"name": str(function.get("name") or ""), "arguments": str(function.get("arguments") or "{}")},
    }


def openai_message(message: dict[str, Any]) -> dict[str, Any]:
    """One message with only the keys OpenAI's fine-tuning format knows (developer becomes system)."""
    role = message.get("role")
    if role not in ("system", "developer", "user", "assistant", "tool"):
        raise FormatError(f"a message of role {role!r}" if role else "a message that is not a chat message")
    cleaned: dict[str, Any] = {
        "role": "system" if role == "developer" else role,
        "content": text(message.get("content")),
    }
    if role == "assistant" and message.get("tool_calls"):
        cleaned["tool_calls"] = [_tool_call(call) for call in message["tool_calls"]]
    if role == "tool":
        cleaned["tool_call_id"] = str(message.get("tool_call_id") or "")
    return cleaned


def openai_record(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    return {"messages": [openai_message(m) for m in messages], "tools": tools}


def _function_call_value(calls: list[dict[str, Any]]) -> str:
    functions = []
    for call in calls:
        arguments = call["function"]["arguments"]
        try:
            parsed = json.loads(arguments)
        except ValueError:
            raise FormatError("tool call arguments that are not JSON") from None
        functions.append({"name": call["function"]["name"], "arguments": parsed})
    return json.dumps(functions[0] if len(functions) == 1 else functions, ensure_ascii=False)


def texts_beside_tool_calls(messages: list[dict[str, Any]]) -> int:
    """Assistant messages with text and tool calls: sharegpt keeps the calls only (a turn is one or the other)."""
    return sum(1 for m in messages if m.get("role") == "assistant" and m.get("tool_calls") and m.get("content"))


def sharegpt_record(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    cleaned = [openai_message(m) for m in messages]
    systems = []
    while cleaned and cleaned[0]["role"] == "system":
        systems.append(cleaned.pop(0)["content"] or "")
    turns: list[dict[str, str]] = []
    for message in cleaned:
        role = message["role"]
        if role == "system":
            raise FormatError("a system message after the conversation started")
        if role == "tool":
            if turns and turns[-1]["from"] == "observation":
                turns[-1]["value"] += _OBSERVATION_JOIN + (message["content"] or "")
            else:
                turns.append({"from": "observation", "value": message["content"] or ""})
        elif role == "assistant" and message.get("tool_calls"):
            turns.append({"from": "function_call", "value": _function_call_value(message["tool_calls"])})
        else:
            turns.append({"from": "human" if role == "user" else "gpt", "value": message["content"] or ""})
    for position, turn in enumerate(turns):
        expected = ("human", "observation") if position % 2 == 0 else ("gpt", "function_call")
        if turn["from"] not in expected:
            raise FormatError("turns that do not alternate human/observation and gpt/function_call")
    if len(turns) % 2:
        raise FormatError("a conversation that does not end with the model's turn")
    functions = [tool["function"] if tool.get("type") == "function" else tool for tool in tools]
    return {
        "conversations": turns,
        "system": "\n\n".join(systems),
        "tools": json.dumps(functions, ensure_ascii=False),
    }


def _ground_truth(task_input: Any) -> str | None:
    found = task_input.get("ground_truth", task_input.get("answer")) if isinstance(task_input, dict) else None
    if found is None or isinstance(found, str):
        return found
    return json.dumps(found, ensure_ascii=False)


def verl_row(
    index: int, task_id: str, prompt: list[dict[str, Any]], task_input: Any, data_source: str, ability: str
) -> dict[str, Any]:
    """`extra_info` is what LightningAgentLoop hands the agent as its task: the pooled task's input where
    the store has it (with index and task_id, as make_dataset.py writes them)."""
    fields = task_input if isinstance(task_input, dict) else ({} if task_input is None else {"input": task_input})
    return {
        "data_source": data_source,
        "prompt": [openai_message(m) for m in prompt],
        "ability": ability,
        "reward_model": {"style": "rule", "ground_truth": _ground_truth(task_input)},
        "extra_info": {"index": index, "task_id": task_id, **fields},
        "agent_name": "otel_lightning",
    }
