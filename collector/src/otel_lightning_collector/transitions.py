"""Build a rollout's (state, action, reward, next_state) transitions from its spans."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from otel_lightning import semconv
from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning_collector import evaluations
from otel_lightning_collector.annotation_attributes import annotation_rewards
from otel_lightning_collector.credit import CreditRule
from otel_lightning_collector.dialects import LLM, TOOL, CanonicalStep, MessageFormError, read_span
from otel_lightning_collector.spans import any_value, attributes, span_view
from otel_lightning_collector.step_merge import Step, one_step_per_call

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


EPISODE = "episode"  # RolloutCompleted.source of production traffic (collector --episodes)


@dataclass
class BuiltRollout:
    transitions: list[pb.Transition] = field(default_factory=list)
    completed: pb.RolloutCompleted = field(default_factory=pb.RolloutCompleted)
    # gen_ai.response.id of its steps (late feedback may name one).
    response_ids: list[str] = field(default_factory=list)


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


def _token_ids_problem(step: CanonicalStep) -> str | None:
    """What is wrong with an LLM step's token ids and logprobs, if anything (they are optional)."""
    for key, ids in (
        (semconv.PROMPT_TOKEN_IDS, step.prompt_token_ids),
        (semconv.RESPONSE_TOKEN_IDS, step.response_token_ids),
    ):
        if ids is None:
            continue
        if not isinstance(ids, list) or not all(type(i) is int and 0 <= i < 2**31 for i in ids):
            return f"{key} must be a list of token ids (ints from 0 to 2^31)"
    logprobs = step.response_logprobs
    if logprobs:
        if not isinstance(logprobs, list) or not all(isinstance(p, float) and p <= 0.0 for p in logprobs):
            return f"{semconv.RESPONSE_LOGPROBS} must be a list of log-probabilities (floats <= 0)"
        if len(logprobs) != len(step.response_token_ids or ()):
            return f"{semconv.RESPONSE_LOGPROBS} must have one value per response token id"
    return None


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _state_json(step: CanonicalStep) -> str:
    state: dict[str, Any] = {"messages": step.input_messages or []}
    if step.tools:
        state["tools"] = step.tools
    return _compact(state)


def _action_json(step: CanonicalStep) -> str:
    return _compact(step.output_messages[0] if step.output_messages else {})


def _token_ids_absent(step: CanonicalStep) -> bool:
    return not step.prompt_token_ids and not step.response_token_ids


def _token_ids_note(without: list[Step], total: int) -> str:
    """Why steps have no token ids, and what to do about it."""
    if not without:
        return ""
    dialects = sorted({step.step.dialect for step in without})
    return (
        f"{len(without)} of {total} LLM calls carry no token ids (spans from {', '.join(dialects)} instrumentation, "
        "which records none): run the agent through the model gateway (`otel-lightning worker` starts one by "
        "default; `otel-lightning gateway` otherwise); trainers never retokenise text, so these steps are not"
        " trained on"
    )


def _logs_by_span(logs: Sequence[LogRecord]) -> dict[bytes, list[tuple[str, dict[str, Any], Any]]]:
    found: dict[bytes, list[tuple[str, dict[str, Any], Any]]] = {}
    for record in logs:
        if record.span_id:
            found.setdefault(record.span_id, []).append(
                (record.event_name, attributes(record.attributes), any_value(record.body))
            )
    return found


def _trace_root(spans: list[Span]) -> Span | None:
    """An episode's root: the span whose parent is not in the trace (the earliest, if several)."""
    ids = {span.span_id for span in spans}
    roots = [span for span in spans if span.parent_span_id not in ids]
    return min(roots, key=lambda span: span.start_time_unix_nano) if roots else None


def _reward_times(rated: list[evaluations.Evaluation], steps: list[Step], spans: list[Span]) -> list[tuple[int, float]]:
    """(time, value) of evaluation rewards: at the end of the step they rate (by span, its parents, or
    response id), so per-step credit gives each to its step; else at their own time."""
    end_of_step = {step.span.span_id: step.span.end_time_unix_nano for step in steps}
    parent_of = {span.span_id: span.parent_span_id for span in spans}
    by_response = {step.step.response_id: step.span.end_time_unix_nano for step in steps if step.step.response_id}
    rewards = []
    for item in rated:
        at, span_id, seen = item.time_ns, item.span_id, set()
        while span_id and span_id not in seen:
            seen.add(span_id)
            if span_id in end_of_step:
                at = end_of_step[span_id]
                break
            span_id = parent_of.get(span_id, b"")
        else:
            at = by_response.get(item.response_id, at)
        rewards.append((at, item.score))
    return rewards


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
    logs: Sequence[LogRecord] = (),
    extra_rewards: Sequence[evaluations.Evaluation] = (),
    source: str = "",
) -> BuiltRollout:
    """Transitions of one rollout, in step order, and its completion record.

    Spans are read through the dialects (ours, GenAI, OpenInference, OpenLLMetry); LLM steps are the
    steps, one per model call (step_merge: the gateway's and the client's spans of a call are one
    step; failed LLM calls produce no action, so no transition). Rewards — reward spans,
    `gen_ai.evaluation.result` span events, OpenInference annotation attributes, and `extra_rewards`
    (feedback, evaluation log records, Phoenix annotations recorded while the rollout was open) — are
    spread over the steps by `credit`; next_state is the next step of the same agent. `logs`: the log
    records of the rollout's traces (the GenAI message events some instrumentors write instead of attributes).
    `trains_agent` selects the agents whose steps become transitions in multi-agent runs; what the
    others said stays in the conversation, as state. `source` is "" for a rollout, "episode" for
    production traffic.
    """
    spans = [Span.FromString(body) for body in span_bodies]
    logs_by_span = _logs_by_span(logs)
    rated = list(extra_rewards)
    root: Span | None = None
    steps: list[Step] = []
    rewards: list[tuple[int, float]] = []
    failed_llm: Span | None = None
    failed_tool: Span | None = None
    malformed: list[str] = []
    malformed_span: Span | None = None
    unreadable = False
    for span in spans:
        view = span_view(span, logs_by_span.get(span.span_id))
        found = view.attributes
        kind = found.get(semconv.SPAN_KIND)
        for event_name, event_attributes in view.events:
            if evaluations.is_evaluation(event_name, event_attributes):
                event_time = next(e.time_unix_nano for e in span.events if e.name == event_name)
                if (item := evaluations.evaluation(event_attributes, event_time, span.span_id)) is not None:
                    rated.append(item)
        # OpenInference annotations on the span itself (annotation_attributes): rewards rating this span.
        rated += annotation_rewards(found, span.end_time_unix_nano, span.span_id)
        if kind == semconv.SPAN_KIND_ROLLOUT:
            root = span
            continue
        if kind == semconv.SPAN_KIND_REWARD:
            value = found.get(semconv.REWARD_VALUE)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rewards.append((span.start_time_unix_nano, float(value)))
            else:
                malformed.append(f"reward span {span.span_id.hex()} has no numeric {semconv.REWARD_VALUE}")
                malformed_span = malformed_span or span
            continue
        try:
            step = read_span(view)
        except (MessageFormError, TypeError, AttributeError) as error:
            # Any input a dialect cannot read makes this rollout malformed, with the reason; no crash.
            malformed.append(f"span {span.span_id.hex()} ({span.name!r}) has unreadable messages: {error}")
            malformed_span = malformed_span or span
            unreadable = True
            continue
        if step is None:
            continue
        if step.kind == TOOL:
            if span.status.code == Status.STATUS_CODE_ERROR:
                failed_tool = failed_tool or span
        elif step.kind == LLM:
            if span.status.code == Status.STATUS_CODE_ERROR:
                failed_llm = failed_llm or span
                continue
            steps.append(Step(span, step))
    if root is None and source == EPISODE:
        root = _trace_root(spans)
    steps = one_step_per_call(steps, spans)
    steps.sort(key=lambda s: (s.span.end_time_unix_nano, s.span.start_time_unix_nano, s.span.span_id))
    rewards.extend(_reward_times(rated, steps, spans))
    rewards.sort()

    broken = [(step, problem) for step in steps if (problem := _token_ids_problem(step.step)) is not None]
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

    if broken or unreadable:
        steps = []  # no transition is better than one with token ids or messages the trainer cannot trust
    if trains_agent is not None:
        steps = [step for step in steps if trains_agent(step.agent)]
    built = BuiltRollout()
    step_rewards = credit([s.span.end_time_unix_nano for s in steps], rewards)
    per_agent_index: dict[str, int] = {}
    last_of_agent: dict[str, pb.Transition] = {}
    for step, reward in zip(steps, step_rewards, strict=True):
        index = per_agent_index.get(step.agent, 0)
        per_agent_index[step.agent] = index + 1
        found = step.step
        state_json = _state_json(found)
        transition = pb.Transition(
            rollout_id=rollout_id,
            task_id=task_id,
            attempt=attempt,
            step=index,
            agent=step.agent,
            state_json=state_json,
            action_json=_action_json(found),
            reward=reward,
            done=True,
            prompt_token_ids=found.prompt_token_ids or [],
            response_token_ids=found.response_token_ids or [],
            response_logprobs=found.response_logprobs or [],
            policy_version=found.policy_version,
            model=found.model,
            trace_id=step.span.trace_id.hex(),
            span_id=step.span.span_id.hex(),
            token_ids_absent=_token_ids_absent(found),
        )
        previous = last_of_agent.get(step.agent)
        if previous is not None:
            previous.next_state_json = state_json
            previous.done = False
        last_of_agent[step.agent] = transition
        built.transitions.append(transition)

    for transition in built.transitions:
        transition.rollout_status = status
    built.response_ids = [step.step.response_id for step in steps if step.step.response_id]
    without = [step for step in steps if _token_ids_absent(step.step)]
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
        steps_without_token_ids=len(without),
        token_ids_note=_token_ids_note(without, len(steps)),
        source=source,
    )
    return built
