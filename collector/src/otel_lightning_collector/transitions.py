"""Build a rollout's (state, action, reward, next_state) transitions from its spans."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel_lightning import semconv
from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning_collector.credit import CreditRule
from otel_lightning_collector.spans import attributes

# A rollout's status; docs/rollout_status.md says what each means and what the trainer does with it.
SUCCEEDED = "succeeded"
FAILED = "failed"  # the agent raised (or its process exited non-zero)
TIMEOUT = "timeout"  # the agent ran past its time limit
LLM_ERROR = "llm_error"  # a model call failed (server down, overloaded, bad request)
TOOL_ERROR = "tool_error"  # the agent failed after one of its tools did
MALFORMED = "malformed"  # spans that cannot form a transition (no LLM call, unreadable messages, bad reward)
INCOMPLETE = "incomplete"  # the root span never arrived
ABANDONED = "abandoned"  # the worker lost its lease (crashed, hung, cut off); the sample was requeued
STATUSES = (SUCCEEDED, FAILED, TIMEOUT, LLM_ERROR, TOOL_ERROR, MALFORMED, INCOMPLETE, ABANDONED)


@dataclass
class Step:
    span: Span
    attributes: dict[str, Any]
    agent: str


@dataclass
class BuiltRollout:
    transitions: list[pb.Transition] = field(default_factory=list)
    completed: pb.RolloutCompleted = field(default_factory=pb.RolloutCompleted)


def _error_of(span: Span) -> tuple[str, str]:
    """(type, message) of a failed span, from its exception event where there is one."""
    for event in span.events:
        if event.name == "exception":
            found = attributes(event.attributes)
            return str(found.get("exception.type", "")), str(found.get("exception.message") or span.status.message)
    return "", span.status.message


def _failure_of(root: Span, failed_llm: Span | None, failed_tool: Span | None) -> tuple[str, Span]:
    """Why a rollout whose root span failed failed, and the span that says so: its own time limit,
    else the model call or the tool that failed inside it, else the agent itself. A tool error the
    agent recovered from is not a failure (the rollout succeeded); an LLM error always is."""
    if _error_of(root)[0].rpartition(".")[2] == "TimeoutError":
        return TIMEOUT, root
    if failed_llm is not None:
        return LLM_ERROR, failed_llm
    if failed_tool is not None:
        return TOOL_ERROR, failed_tool
    return FAILED, root


def _token_ids_problem(found: dict[str, Any]) -> str | None:
    """What is wrong with an LLM span's token ids and logprobs, if anything (they are optional)."""
    for key in (semconv.PROMPT_TOKEN_IDS, semconv.RESPONSE_TOKEN_IDS):
        ids = found.get(key)
        if ids is None:
            continue
        if not isinstance(ids, list) or not all(type(i) is int and 0 <= i < 2**31 for i in ids):
            return f"{key} must be a list of token ids (ints from 0 to 2^31)"
    logprobs = found.get(semconv.RESPONSE_LOGPROBS)
    if logprobs:
        if not isinstance(logprobs, list) or not all(isinstance(p, float) and p <= 0.0 for p in logprobs):
            return f"{semconv.RESPONSE_LOGPROBS} must be a list of log-probabilities (floats <= 0)"
        if len(logprobs) != len(found.get(semconv.RESPONSE_TOKEN_IDS) or ()):
            return f"{semconv.RESPONSE_LOGPROBS} must have one value per response token id"
    return None


def _state_json(step_attributes: dict[str, Any]) -> str:
    messages = json.loads(step_attributes.get(semconv.GEN_AI_INPUT_MESSAGES) or "[]")
    state: dict[str, Any] = {"messages": messages}
    tools = step_attributes.get(semconv.GEN_AI_TOOL_DEFINITIONS)
    if tools:
        state["tools"] = json.loads(tools)
    return json.dumps(state, ensure_ascii=False, separators=(",", ":"))


def _action_json(step_attributes: dict[str, Any]) -> str:
    outputs = json.loads(step_attributes.get(semconv.GEN_AI_OUTPUT_MESSAGES) or "[]")
    return json.dumps(outputs[0] if outputs else {}, ensure_ascii=False, separators=(",", ":"))


def _innermost_llm_steps(steps: list[Step], spans: list[Span]) -> list[Step]:
    """One step per LLM call: a framework's LLM span (LangChain's chat model run) with a client's
    LLM span inside it (the OpenAI client, with token ids) is one call seen at two layers; the inner
    span is the step, taking the outer one's agent if it names none."""
    parent_of = {span.span_id: span.parent_span_id for span in spans}
    by_id = {step.span.span_id: step for step in steps}
    covered: set[bytes] = set()
    for step in steps:
        seen = {step.span.span_id}
        parent = parent_of.get(step.span.span_id)
        while parent and parent not in seen:  # `seen`: malformed input may hold a cycle
            seen.add(parent)
            outer = by_id.get(parent)
            if outer is not None:
                covered.add(parent)
                if semconv.AGENT_NAME not in step.attributes:
                    step.agent = outer.agent
                break
            parent = parent_of.get(parent)
    return [step for step in steps if step.span.span_id not in covered]


def agent_selector(patterns: Sequence[str]) -> Callable[[str], bool] | None:
    """Which agents to train, by name patterns (`fnmatch`: `coder`, `math*`); none given: every agent."""
    patterns = [p for p in patterns if p]
    if not patterns:
        return None
    return lambda agent: any(fnmatch.fnmatchcase(agent, pattern) for pattern in patterns)


def build_rollout(
    rollout_id: str,
    task_id: str,
    attempt: int,
    span_bodies: list[bytes],
    credit: CreditRule,
    *,
    root_missing_status: str = INCOMPLETE,
    trains_agent: Callable[[str], bool] | None = None,
    require_reward: bool = False,
) -> BuiltRollout:
    """Transitions of one rollout, in step order, and its completion record.

    LLM spans are the steps (the innermost, where one call was recorded at two layers; failed LLM
    calls produce no action, so no transition); reward spans are spread over the steps by
    `credit`; next_state is the next step of the same agent.
    `trains_agent` selects the agents whose steps become transitions in multi-agent runs; what the
    others said stays in the conversation, as state.
    """
    spans = [Span.FromString(body) for body in span_bodies]
    root: Span | None = None
    steps: list[Step] = []
    rewards: list[tuple[int, float]] = []
    failed_llm: Span | None = None
    failed_tool: Span | None = None
    malformed: list[str] = []
    malformed_span: Span | None = None
    for span in spans:
        found = attributes(span.attributes)
        kind = found.get(semconv.SPAN_KIND)
        if kind == semconv.SPAN_KIND_ROLLOUT:
            root = span
        elif kind == semconv.SPAN_KIND_REWARD:
            value = found.get(semconv.REWARD_VALUE)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rewards.append((span.start_time_unix_nano, float(value)))
            else:
                malformed.append(f"reward span {span.span_id.hex()} has no numeric {semconv.REWARD_VALUE}")
                malformed_span = malformed_span or span
        elif kind == semconv.SPAN_KIND_TOOL:
            if span.status.code == Status.STATUS_CODE_ERROR:
                failed_tool = failed_tool or span
        elif kind == semconv.SPAN_KIND_LLM:
            if span.status.code == Status.STATUS_CODE_ERROR:
                failed_llm = failed_llm or span
                continue
            agent = str(found.get(semconv.AGENT_NAME) or semconv.DEFAULT_AGENT_NAME)
            steps.append(Step(span, found, agent))
    steps = _innermost_llm_steps(steps, spans)
    steps.sort(key=lambda s: (s.span.end_time_unix_nano, s.span.start_time_unix_nano, s.span.span_id))
    rewards.sort()

    broken = [(step, problem) for step in steps if (problem := _token_ids_problem(step.attributes)) is not None]
    for step, problem in broken:
        malformed.append(f"LLM span {step.span.span_id.hex()}: {problem}")
        malformed_span = malformed_span or step.span

    status, error_type, error_message, error_span = SUCCEEDED, "", "", None
    if root is None:
        status, error_message = root_missing_status, "the rollout's root span never arrived"
    elif root.status.code == Status.STATUS_CODE_ERROR:
        status, error_span = _failure_of(root, failed_llm, failed_tool)
        error_type, error_message = _error_of(error_span)
    elif failed_llm is not None:
        status, error_span = LLM_ERROR, failed_llm
        error_type, error_message = _error_of(failed_llm)
    elif malformed:
        status, error_message, error_span = MALFORMED, "; ".join(malformed), malformed_span
    elif not steps:
        status, error_message, error_span = MALFORMED, "no LLM call in the rollout", root
    elif require_reward and not rewards:
        status, error_message, error_span = MALFORMED, "no reward recorded, and this collector requires one", root

    if broken:
        steps = []  # no transition is better than one with token ids the trainer cannot trust
    if trains_agent is not None:
        steps = [step for step in steps if trains_agent(step.agent)]
    built = BuiltRollout()
    step_rewards = credit([s.span.end_time_unix_nano for s in steps], rewards)
    per_agent_index: dict[str, int] = {}
    last_of_agent: dict[str, pb.Transition] = {}
    for step, reward in zip(steps, step_rewards, strict=True):
        try:
            state_json, action_json = _state_json(step.attributes), _action_json(step.attributes)
        except (ValueError, IndexError, AttributeError) as error:
            status, error_message = MALFORMED, f"LLM span {step.span.span_id.hex()} has unreadable messages: {error}"
            error_span = step.span
            built.transitions.clear()
            break
        index = per_agent_index.get(step.agent, 0)
        per_agent_index[step.agent] = index + 1
        found = step.attributes
        transition = pb.Transition(
            rollout_id=rollout_id,
            task_id=task_id,
            attempt=attempt,
            step=index,
            agent=step.agent,
            state_json=state_json,
            action_json=action_json,
            reward=reward,
            done=True,
            prompt_token_ids=found.get(semconv.PROMPT_TOKEN_IDS) or [],
            response_token_ids=found.get(semconv.RESPONSE_TOKEN_IDS) or [],
            response_logprobs=found.get(semconv.RESPONSE_LOGPROBS) or [],
            policy_version=str(found.get(semconv.POLICY_VERSION, "")),
            model=str(found.get(semconv.GEN_AI_RESPONSE_MODEL) or found.get(semconv.GEN_AI_REQUEST_MODEL) or ""),
            trace_id=step.span.trace_id.hex(),
            span_id=step.span.span_id.hex(),
        )
        previous = last_of_agent.get(step.agent)
        if previous is not None:
            previous.next_state_json = state_json
            previous.done = False
        last_of_agent[step.agent] = transition
        built.transitions.append(transition)

    for transition in built.transitions:
        transition.rollout_status = status
    built.completed = pb.RolloutCompleted(
        rollout_id=rollout_id,
        task_id=task_id,
        attempt=attempt,
        status=status,
        error_type=error_type,
        error_message=error_message,
        total_reward=sum(value for _, value in rewards),
        transition_count=len(built.transitions),
        span_count=len(spans),
        has_reward=bool(rewards),
        error_span_id=error_span.span_id.hex() if error_span is not None else "",
    )
    return built
