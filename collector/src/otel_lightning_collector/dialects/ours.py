"""Our own spans (the SDK, our instrumentors, the model gateway): `lightning.span.kind` says what a
span is; messages and tools are GenAI attributes in OpenAI form; token ids, logprobs and the policy
version are `lightning.llm.*`; `lightning.llm.source = "gateway"` marks the gateway's span of a call."""

from __future__ import annotations

import json
from typing import Any

from otel_lightning import semconv
from otel_lightning_collector.dialects import genai, openinference
from otel_lightning_collector.dialects.step import AGENT, LLM, TOOL, CanonicalStep, SpanView, first_string

NAME = "ours"

_KINDS = {
    semconv.SPAN_KIND_LLM: LLM,
    semconv.SPAN_KIND_TOOL: TOOL,
    semconv.SPAN_KIND_AGENT: AGENT,
}


def _is_node_name(metadata: Any, agent: str) -> bool:
    try:
        found = json.loads(metadata) if isinstance(metadata, str) else metadata
    except ValueError:
        return False
    return isinstance(found, dict) and found.get("langgraph_node") == agent and not found.get("lc_agent_name")


def recognises(view: SpanView) -> bool:
    return view.attributes.get(semconv.SPAN_KIND) in _KINDS


def read(view: SpanView) -> CanonicalStep | None:
    found = view.attributes
    kind = _KINDS.get(found.get(semconv.SPAN_KIND))
    if kind is None:
        return None
    # Our spans follow the GenAI attribute names; only the span name may differ (agent and tool spans).
    step = genai.read(view, dialect=NAME) or CanonicalStep(kind=kind, dialect=NAME)
    step.kind = kind
    step.agent = first_string(found, semconv.AGENT_NAME, semconv.GEN_AI_AGENT_NAME) or None
    # Our LangChain instrumentor names an agent by its LangGraph node when nothing better is known;
    # a `create_react_agent(name=...)` subgraph runs its turns in its node `agent`: the subgraph's
    # name, in the run's metadata (langgraph_checkpoint_ns), is the agent.
    metadata = found.get(openinference.METADATA)
    if metadata and step.agent and _is_node_name(metadata, step.agent):
        step.agent = openinference.agent_from_metadata(metadata) or step.agent
    step.prompt_token_ids = found.get(semconv.PROMPT_TOKEN_IDS)
    step.response_token_ids = found.get(semconv.RESPONSE_TOKEN_IDS)
    step.response_logprobs = found.get(semconv.RESPONSE_LOGPROBS)
    step.policy_version = first_string(found, semconv.POLICY_VERSION)
    step.source = first_string(found, semconv.LLM_SOURCE)
    return step
