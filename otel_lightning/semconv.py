"""Span names and attribute keys shared by the SDK, the instrumentors and the collector.

GenAI semantic conventions (`gen_ai.*`) are used where they fit; what RL needs beyond them lives
under `lightning.*`. Every other module refers to these names, never to string literals.
"""

# --- rollout identity (stamped on every span inside a rollout) --------------------------------
ROLLOUT_ID = "lightning.rollout.id"
TASK_ID = "lightning.task.id"
ATTEMPT = "lightning.attempt"

# Baggage keys carrying the rollout identity across threads, tasks and processes.
BAGGAGE_ROLLOUT_ID = ROLLOUT_ID
BAGGAGE_TASK_ID = TASK_ID
BAGGAGE_ATTEMPT = ATTEMPT
BAGGAGE_AGENT_NAME = "lightning.agent.name"
BAGGAGE_POLICY_VERSION = "lightning.policy.version"

# --- what a span is, for the collector ----------------------------------------------------------
SPAN_KIND = "lightning.span.kind"
SPAN_KIND_ROLLOUT = "rollout"
SPAN_KIND_LLM = "llm"
SPAN_KIND_TOOL = "tool"
SPAN_KIND_AGENT = "agent"
SPAN_KIND_REWARD = "reward"
SPAN_KIND_HANDOFF = "handoff"
SPAN_KIND_GUARDRAIL = "guardrail"

ROLLOUT_SPAN_NAME = "lightning.rollout"
REWARD_SPAN_NAME = "lightning.reward"

AGENT_NAME = "lightning.agent.name"
DEFAULT_AGENT_NAME = "default"

# --- rewards ----------------------------------------------------------------------------------
REWARD_VALUE = "lightning.reward.value"
REWARD_NAME = "lightning.reward.name"
# JSON object of named components when a reward function returns a dict.
REWARD_COMPONENTS = "lightning.reward.components"

# --- LLM calls: GenAI semantic conventions ------------------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_SYSTEM = "gen_ai.system"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_REQUEST_TEMPERATURE = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P = "gen_ai.request.top_p"
GEN_AI_REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_ID = "gen_ai.response.id"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
# JSON arrays of messages, as in the GenAI conventions' opt-in content attributes.
GEN_AI_INPUT_MESSAGES = "gen_ai.input.messages"
GEN_AI_OUTPUT_MESSAGES = "gen_ai.output.messages"
GEN_AI_TOOL_DEFINITIONS = "gen_ai.tool.definitions"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"
GEN_AI_TOOL_CALL_RESULT = "gen_ai.tool.call.result"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"

# --- agent frameworks: what happened between LLM calls ------------------------------------------
AGENT_TOOLS = "lightning.agent.tools"  # names of the tools the agent may call
AGENT_HANDOFFS = "lightning.agent.handoffs"  # names of the agents it may hand off to
HANDOFF_FROM = "lightning.handoff.from_agent"
HANDOFF_TO = "lightning.handoff.to_agent"
GUARDRAIL_NAME = "lightning.guardrail.name"
GUARDRAIL_TRIGGERED = "lightning.guardrail.triggered"

# --- LLM calls: what RL needs beyond GenAI ------------------------------------------------------
LLM_API = "lightning.llm.api"  # "chat.completions" | "responses"
LLM_STREAMING = "lightning.llm.streaming"
PROMPT_TOKEN_IDS = "lightning.llm.prompt_token_ids"
RESPONSE_TOKEN_IDS = "lightning.llm.response_token_ids"
RESPONSE_LOGPROBS = "lightning.llm.response_logprobs"
POLICY_VERSION = "lightning.policy.version"

# --- configuration ------------------------------------------------------------------------------
# Set to "false" to keep prompts and completions out of spans (they may hold private data).
ENV_CAPTURE_CONTENT = "LIGHTNING_CAPTURE_CONTENT"
# A regular expression; its matches in captured content (messages, tool arguments and results) become [REDACTED].
ENV_REDACT_PATTERN = "LIGHTNING_REDACT_PATTERN"
# Set to "true" to ask a vLLM-style model server for token ids and logprobs on every chat completion
# (`return_token_ids`); the worker sets it for agents it points at a policy server.
ENV_REQUEST_TOKEN_IDS = "LIGHTNING_REQUEST_TOKEN_IDS"

# --- the model gateway (gateway/, issue 12) -----------------------------------------------------
# Who recorded an LLM span: the gateway at the model server's door, or a client-side instrumentor
# (no attribute). The collector merges the two spans of one call; the gateway's token ids win.
LLM_SOURCE = "lightning.llm.source"
LLM_SOURCE_GATEWAY = "gateway"
LLM_API_COMPLETIONS = "completions"  # a third LLM_API value, next to "chat.completions" and "responses"
# The caller went away before the answer was complete (the span's status is ERROR too).
LLM_CANCELLED = "lightning.llm.cancelled"
# A /rollout/<id>/v1 URL whose id the gateway did not know (registered routes only): still proxied.
GATEWAY_UNKNOWN_ROLLOUT = "lightning.gateway.unknown_rollout"
# The Responses API call was served through the upstream's chat completions (token ids from there).
GATEWAY_RESPONSES_VIA_CHAT = "lightning.gateway.responses_via_chat"

# --- training-free optimisation (otel_lightning/optimize, issue 14) -------------------------------
# The candidate (model, system prompt, sampling) a rollout ran under: on the rollout span, the gateway's
# LLM spans and every span in baggage scope. Baggage key and attribute are one name.
CANDIDATE = "lightning.candidate"
BAGGAGE_CANDIDATE = CANDIDATE

# --- agents run by the worker (otel_lightning/worker.py, issue 12) -------------------------------
# Set to "false" (the worker does, for its agents) to keep agent frameworks from uploading their own traces
# to their vendor (the OpenAI Agents SDK's default exporter: ~3 s per process offline); our spans stay.
ENV_VENDOR_TRACE_UPLOAD = "LIGHTNING_VENDOR_TRACE_UPLOAD"

# --- OpenInference annotations as rewards (collector: annotations.py, annotation_attributes.py; issue 13) --
# On the span they rate (OpenInference spec/annotations.md): `annotations.<i>.annotation.<field>` or, the same
# result in evaluation terms, `evaluations.<i>.evaluation.<field>`; fields name, score, label, explanation,
# annotator_kind, identifier, metadata. A numeric score becomes a reward named by `name`.
OPENINFERENCE_ANNOTATION_FORMS = (("annotations", "annotation"), ("evaluations", "evaluation"))
# Arize Phoenix's REST endpoint for span annotations, served by the collector's OTLP/HTTP port with Phoenix's
# body and answer, so an app pointing `phoenix.client.Client(base_url=...)` at the collector gives rewards.
PHOENIX_SPAN_ANNOTATIONS_PATH = "/v1/span_annotations"
