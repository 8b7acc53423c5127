"""otel-lightning's attributes for a LangChain run: what kind of step it is, whose, and what it said.

LangChain hands its tracers `Run`s whose messages are serialized (`dumpd`); they are read back with
LangChain's own message classes and written in the OpenAI chat format, as the OpenAI instrumentor
writes them, so the collector reads one format whatever the framework.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from langchain_core.messages import BaseMessage, ToolMessage, convert_to_openai_messages, messages_from_dict

from otel_lightning import semconv
from otel_lightning.content import bounded, redacted

# Set by `create_agent` (and re-asserted by each subagent); LangGraph's node name is the fallback.
AGENT_NAME_METADATA = "lc_agent_name"
GRAPH_NODE_METADATA = "langgraph_node"


def metadata_of(run: Any) -> Mapping[str, Any]:
    return (getattr(run, "extra", None) or {}).get("metadata") or {}


def agent_of(metadata: Mapping[str, Any]) -> str | None:
    """The agent a run belongs to: its `create_agent` name, else the LangGraph node it runs in."""
    name = metadata.get(AGENT_NAME_METADATA) or metadata.get(GRAPH_NODE_METADATA)
    return str(name) if name else None


def _is_agent_root(run: Any, metadata: Mapping[str, Any]) -> bool:
    # The graph `create_agent` builds runs under the agent's name; its nodes (model, tools) do not.
    return run.run_type == "chain" and metadata.get(AGENT_NAME_METADATA) == run.name


def _messages(serialized: Any) -> list[BaseMessage]:
    """LangChain messages from their `dumpd` form (`{"lc": 1, "kwargs": {...}}`) or plain dicts."""
    found = []
    for item in serialized or []:
        if isinstance(item, BaseMessage):
            found.append(item)
            continue
        data = item.get("kwargs", item) if isinstance(item, Mapping) else None
        if not isinstance(data, Mapping) or "type" not in data:
            raise ValueError(f"not a serialized LangChain message: {str(item)[:200]}")
        found.extend(messages_from_dict([{"type": data["type"], "data": dict(data)}]))
    return found


def _openai_json(messages: list[BaseMessage]) -> str:
    return json.dumps(redacted(convert_to_openai_messages(messages)), ensure_ascii=False, default=str)


def _tool_definitions(run: Any) -> list[Any]:
    params = (getattr(run, "extra", None) or {}).get("invocation_params") or {}
    tools = params.get("tools")
    return list(tools) if isinstance(tools, (list, tuple)) else []


def _request_model(run: Any) -> str | None:
    params = (getattr(run, "extra", None) or {}).get("invocation_params") or {}
    model = params.get("model") or params.get("model_name")
    return str(model) if model else None


def start_attributes(run: Any, capture: bool) -> dict[str, Any]:
    """Attributes known when the run starts; empty for runs that are no step of ours (plain chains)."""
    metadata = metadata_of(run)
    agent = agent_of(metadata)
    attributes: dict[str, Any] = {}
    if run.run_type == "llm":
        attributes[semconv.SPAN_KIND] = semconv.SPAN_KIND_LLM
        attributes[semconv.GEN_AI_OPERATION_NAME] = "chat"
        model = _request_model(run)
        if model:
            attributes[semconv.GEN_AI_REQUEST_MODEL] = model
    elif run.run_type == "tool":
        attributes[semconv.SPAN_KIND] = semconv.SPAN_KIND_TOOL
        attributes[semconv.GEN_AI_OPERATION_NAME] = "execute_tool"
        attributes[semconv.GEN_AI_TOOL_NAME] = run.name
        call_id = (getattr(run, "extra", None) or {}).get("tool_call_id")
        if call_id:
            attributes[semconv.GEN_AI_TOOL_CALL_ID] = str(call_id)
        if capture and run.inputs:
            attributes[semconv.GEN_AI_TOOL_CALL_ARGUMENTS] = bounded(dict(run.inputs))
    elif _is_agent_root(run, metadata):
        attributes[semconv.SPAN_KIND] = semconv.SPAN_KIND_AGENT
        attributes[semconv.GEN_AI_OPERATION_NAME] = "invoke_agent"
    else:
        return {}
    if agent:
        attributes[semconv.AGENT_NAME] = agent
        attributes[semconv.GEN_AI_AGENT_NAME] = agent
    return attributes


def _tool_result(output: Any) -> str:
    if isinstance(output, ToolMessage):
        return bounded(output.content)
    return bounded(output if isinstance(output, str) else str(output))


def _llm_messages(run: Any, outputs: Mapping[str, Any], recorded: Mapping[str, Any]) -> dict[str, Any]:
    """Messages in and out, written when the run ends: by then an OpenAI-level instrumentor that
    joined the span has recorded the exact request and response, and nothing is converted twice."""
    attributes: dict[str, Any] = {}
    if semconv.GEN_AI_INPUT_MESSAGES not in recorded:
        batches = (run.inputs or {}).get("messages") or [[]]
        attributes[semconv.GEN_AI_INPUT_MESSAGES] = _openai_json(_messages(batches[0]))
        tools = _tool_definitions(run)
        if tools:
            attributes[semconv.GEN_AI_TOOL_DEFINITIONS] = json.dumps(tools, ensure_ascii=False, default=str)
    if semconv.GEN_AI_OUTPUT_MESSAGES not in recorded:
        generations = outputs.get("generations") or [[]]
        first = generations[0][0] if generations and generations[0] else None
        if isinstance(first, Mapping) and "message" in first:
            attributes[semconv.GEN_AI_OUTPUT_MESSAGES] = _openai_json(_messages([first["message"]]))
    return attributes


def end_attributes(run: Any, capture: bool, recorded: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes known when the run ends. `recorded` is what the span has already: an OpenAI-level
    instrumentor that joined the span wrote the exact response, which is left as it is."""
    outputs = run.outputs or {}
    if run.run_type == "llm":
        return _llm_messages(run, outputs, recorded) if capture else {}
    if run.run_type == "tool" and capture and "output" in outputs:
        return {semconv.GEN_AI_TOOL_CALL_RESULT: _tool_result(outputs["output"])}
    return {}
