"""OpenInference (Arize): `openinference.span.kind`, flattened `llm.input_messages.N.message.*` /
`llm.output_messages.N.message.*` (contents as `message.contents.M.message_content.*`, tool calls as
`message.tool_calls.M.tool_call.*`), `llm.tools.N.tool.json_schema`, `llm.model_name`,
`llm.token_count.*`. LangChain runs carry LangGraph's `metadata` JSON, which names the agent.
"""

from __future__ import annotations

import json
from typing import Any

from otel_lightning_collector.dialects import messages as canonical
from otel_lightning_collector.dialects.flattened import unflatten
from otel_lightning_collector.dialects.step import AGENT, LLM, TOOL, CanonicalStep, SpanView, first_string

NAME = "openinference"

SPAN_KIND = "openinference.span.kind"
INPUT_MESSAGES = "llm.input_messages."
OUTPUT_MESSAGES = "llm.output_messages."
TOOLS = "llm.tools."
MODEL_NAME = "llm.model_name"
METADATA = "metadata"
SESSION_ID = "session.id"
AGENT_NAME = "agent.name"
_KINDS = {"LLM": LLM, "AGENT": AGENT, "TOOL": TOOL}


def recognises(view: SpanView) -> bool:
    return view.attributes.get(SPAN_KIND) in _KINDS


def _contents_text(contents: list[Any]) -> str | None:
    texts = [c.get("message_content", {}).get("text") for c in contents if isinstance(c, dict)]
    texts = [t for t in texts if isinstance(t, str)]
    return "".join(texts) if texts else None


def _message(entry: Any) -> dict[str, Any]:
    found = entry.get("message") if isinstance(entry, dict) else None
    if not isinstance(found, dict):
        raise canonical.MessageFormError("an OpenInference message must have `message.*` keys")
    message: dict[str, Any] = {"role": str(found.get("role") or "user")}
    content = found.get("content")
    if content is None and isinstance(found.get("contents"), list):
        content = _contents_text(found["contents"])
    message["content"] = content
    calls = found.get("tool_calls")
    if isinstance(calls, list) and calls:
        message["tool_calls"] = [canonical.tool_call(call.get("tool_call", {})) for call in calls]
    if found.get("tool_call_id"):
        message["tool_call_id"] = str(found["tool_call_id"])
    if found.get("name"):
        message["name"] = str(found["name"])
    return message


def _tool(entry: Any) -> dict[str, Any]:
    tool = entry.get("tool") if isinstance(entry, dict) else None
    if not isinstance(tool, dict):
        raise canonical.MessageFormError("an OpenInference tool must have `tool.*` keys")
    schema = canonical.parse_json(tool.get("json_schema")) if tool.get("json_schema") is not None else {}
    if isinstance(schema, dict) and (isinstance(schema.get("function"), dict) or "name" in schema):
        return canonical.tool_definition(schema)
    # The schema alone (PydanticAI): name and description are beside it.
    return canonical.tool_definition(
        {"name": tool.get("name", ""), "description": tool.get("description", ""), "parameters": schema}
    )


def agent_from_metadata(metadata: Any) -> str | None:
    """The agent a LangChain run belongs to: `lc_agent_name`, else the LangGraph subgraph that holds
    the node (`langgraph_checkpoint_ns` = `outer:<id>|inner:<id>`: a `create_react_agent(name=...)`
    subgraph's turns run in its inner node `agent`), else the node itself."""
    try:
        found = json.loads(metadata) if isinstance(metadata, str) else metadata
    except ValueError:
        return None
    if not isinstance(found, dict):
        return None
    if found.get("lc_agent_name"):
        return str(found["lc_agent_name"])
    namespace = [part.partition(":")[0] for part in str(found.get("langgraph_checkpoint_ns") or "").split("|") if part]
    if len(namespace) >= 2:
        return namespace[-2]
    node = found.get("langgraph_node")
    return str(node) if node else None


def read(view: SpanView) -> CanonicalStep | None:
    found = view.attributes
    kind = _KINDS.get(found.get(SPAN_KIND))
    if kind is None:
        return None
    step = CanonicalStep(kind=kind, dialect=NAME)
    step.agent = first_string(found, AGENT_NAME) or agent_from_metadata(found.get(METADATA))
    if kind == AGENT and not step.agent:
        step.agent = view.name or None
    inputs = unflatten(found, INPUT_MESSAGES)
    outputs = unflatten(found, OUTPUT_MESSAGES)
    step.input_messages = [_message(m) for m in inputs] if inputs else None
    step.output_messages = [_message(m) for m in outputs] if outputs else None
    if step.output_messages and found.get("llm.finish_reason"):
        step.output_messages[0].setdefault("finish_reason", found["llm.finish_reason"])
    tools = unflatten(found, TOOLS)
    step.tools = [_tool(t) for t in tools] if tools else None
    step.model = first_string(found, MODEL_NAME)
    step.finish_reason = first_string(found, "llm.finish_reason")
    step.conversation_id = first_string(found, SESSION_ID)
    output = found.get("output.value")
    if isinstance(output, str) and output.startswith("{") and '"id"' in output:
        try:
            step.response_id = str(json.loads(output).get("id") or "")
        except (ValueError, AttributeError):
            pass
    return step
