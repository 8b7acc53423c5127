"""From a rollout's transitions to the token sequences verl trains on (no verl import here).

A `Trajectory` is one `AgentLoopOutput`'s worth: prompt ids, response ids and a response mask that is
1 over tokens the model generated and 0 over tokens it did not (tool outputs, user turns).

- `per_call`: one trajectory per LLM call; the call's prompt (with every earlier tool output in it)
  is the prompt, its completion the response.
- `merged`: consecutive calls whose prompt extends the previous prompt + completion token for token
  (one conversation, as verl's own ToolAgentLoop builds it) become one trajectory; the tokens in
  between are observations, masked 0. A call that does not extend the previous one starts a new
  trajectory.

Token ids come from the model server through the spans. A step whose spans carried none
(`Transition.token_ids_absent`) is an error, unless the caller passes `rebuild` (the agent loop's
`retokenize: true`): then its ids are re-encoded from its messages and the step is listed in
`Trajectory.retokenized_steps`, never mixed in unseen.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from otel_lightning.v1 import transitions_pb2 as pb

PER_CALL = "per_call"
MERGED = "merged"

# (prompt ids, response ids) of a step without token ids, re-encoded from its messages.
Rebuild = Callable[[pb.Transition], tuple[list[int], list[int]]]


class MissingTokenIdsError(ValueError):
    """A transition has no token ids: the model server was not asked for them (`return_token_ids`)."""


@dataclass
class Trajectory:
    prompt_ids: list[int]
    response_ids: list[int]
    response_mask: list[int]
    # None when any call of the trajectory came without logprobs.
    response_logprobs: list[float] | None
    # Chat messages seen, as verl counts turns: user, assistant and tool messages.
    num_turns: int
    steps: list[int] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    policy_versions: list[str] = field(default_factory=list)
    # Steps whose ids were re-encoded from their messages (no span carried the server's).
    retokenized_steps: list[int] = field(default_factory=list)


def _messages_in(transition: pb.Transition) -> int:
    try:
        state = json.loads(transition.state_json) if transition.state_json else {}
    except json.JSONDecodeError:
        return 0
    messages = state.get("messages") if isinstance(state, dict) else None
    return len(messages) if isinstance(messages, list) else 0


def _logprobs_of(transition: pb.Transition) -> list[float] | None:
    logprobs = list(transition.response_logprobs)
    return logprobs if len(logprobs) == len(transition.response_token_ids) else None


def _single_call(transition: pb.Transition, rebuild: Rebuild | None = None) -> Trajectory:
    prompt, response = list(transition.prompt_token_ids), list(transition.response_token_ids)
    retokenized = not prompt or not response
    if retokenized and rebuild is None:
        raise MissingTokenIdsError(
            f"transition {transition.step} of rollout {transition.rollout_id} has no token ids (no span of that"
            " model call carried them: the agent's instrumentation records none, or the model server was not asked);"
            " run the agent through the model gateway (`otel-lightning worker` starts one by default; do not pass"
            " --no-gateway), which asks vLLM for `return_token_ids` on every call whatever the client, or set"
            " `retokenize: true` in the agent loop's config to re-encode such steps from their messages with the"
            " policy's tokenizer"
        )
    if retokenized:
        prompt, response = rebuild(transition)
    return Trajectory(
        prompt_ids=prompt,
        response_ids=response,
        response_mask=[1] * len(response),
        # Re-encoded ids have no logprobs from the server: verl recomputes them.
        response_logprobs=None if retokenized else _logprobs_of(transition),
        num_turns=_messages_in(transition) + 1,
        steps=[transition.step],
        agents=[transition.agent],
        policy_versions=[transition.policy_version],
        retokenized_steps=[transition.step] if retokenized else [],
    )


def _extends(trajectory: Trajectory, call: Trajectory) -> bool:
    sequence = trajectory.prompt_ids + trajectory.response_ids
    return len(call.prompt_ids) >= len(sequence) and call.prompt_ids[: len(sequence)] == sequence


def _append(trajectory: Trajectory, call: Trajectory) -> None:
    observation = call.prompt_ids[len(trajectory.prompt_ids) + len(trajectory.response_ids) :]
    trajectory.response_ids += observation + call.response_ids
    trajectory.response_mask += [0] * len(observation) + call.response_mask
    if trajectory.response_logprobs is not None and call.response_logprobs is not None:
        trajectory.response_logprobs += [0.0] * len(observation) + call.response_logprobs
    else:
        trajectory.response_logprobs = None
    trajectory.num_turns = call.num_turns
    trajectory.steps += call.steps
    trajectory.agents += call.agents
    trajectory.policy_versions += call.policy_versions
    trajectory.retokenized_steps += call.retokenized_steps


def trajectories(
    transitions: Sequence[pb.Transition], mode: str = PER_CALL, rebuild: Rebuild | None = None
) -> list[Trajectory]:
    """The rollout's transitions (any order) as trajectories, in step order; steps without token ids
    raise MissingTokenIdsError unless `rebuild` re-encodes them."""
    if mode not in (PER_CALL, MERGED):
        raise ValueError(f"mode must be {PER_CALL!r} or {MERGED!r}, not {mode!r}")
    calls = [_single_call(t, rebuild) for t in sorted(transitions, key=lambda t: t.step)]
    if mode == PER_CALL:
        return calls
    merged: list[Trajectory] = []
    for call in calls:
        if merged and _extends(merged[-1], call):
            _append(merged[-1], call)
        else:
            merged.append(call)
    return merged
