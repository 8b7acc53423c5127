"""End to end: real OTel SDK -> real OTLP/gRPC -> collector -> SQLite -> transition stream."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest

import otel_lightning as ol
from otel_lightning import semconv
from tests.support import rollouts, transitions, wait_for_rollouts

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "evaluate arithmetic",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}


@ol.reward
def exact_answer(answer: str, expected: str) -> float:
    return float(expected in answer)


def tool_agent(client: openai.OpenAI, question: str) -> str:
    """Two LLM calls: one asks for the calculator, the second answers with its result."""
    messages = [{"role": "user", "content": question}]
    first = client.chat.completions.create(model="stub", messages=messages, tools=[CALCULATOR])
    call = first.choices[0].message.tool_calls[0]
    result = str(ol.testing.arithmetic.evaluate(json.loads(call.function.arguments)["expression"]))
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": result},
    ]
    second = client.chat.completions.create(model="stub", messages=messages, tools=[CALCULATOR])
    return second.choices[0].message.content


def test_tool_agent_rollout_becomes_linked_transitions(collector, otlp_export, openai_stub, monkeypatch):
    import otel_lightning.testing.arithmetic  # noqa: F401 - used through ol.testing in tool_agent

    monkeypatch.setenv(semconv.ENV_REQUEST_TOKEN_IDS, "true")  # the stub, as vLLM, gives ids only when asked
    client = openai.OpenAI(base_url=openai_stub.base_url, api_key="unused")
    with ol.rollout(task_id="add-1", attempt=2) as info:
        answer = tool_agent(client, "What is 17+25?")
        exact_answer(answer, "42")
    otlp_export.flush()

    events = wait_for_rollouts(collector.address, 1)
    steps = transitions(events)
    assert [(t.step, t.done) for t in steps] == [(0, False), (1, True)]
    first, second = steps
    assert {t.rollout_id for t in steps} == {info.rollout_id}
    assert (first.task_id, first.attempt, first.agent) == ("add-1", 2, "default")
    assert json.loads(first.state_json)["messages"] == [{"role": "user", "content": "What is 17+25?"}]
    assert json.loads(first.state_json)["tools"][0]["function"]["name"] == "calculator"
    assert json.loads(first.action_json)["tool_calls"][0]["function"]["name"] == "calculator"
    # next_state is the second call's prompt, which holds the tool output as an observation.
    assert first.next_state_json == second.state_json
    assert json.loads(second.state_json)["messages"][-1] == {
        "role": "tool",
        "tool_call_id": json.loads(first.action_json)["tool_calls"][0]["id"],
        "content": "42",
    }
    assert json.loads(second.action_json)["content"] == "The answer is 42."
    assert [t.reward for t in steps] == [1.0, 1.0]
    # The stub returns vLLM-style token ids: UTF-8 bytes of the text.
    assert bytes(second.response_token_ids).decode() == "The answer is 42."
    assert len(first.prompt_token_ids) > 0
    assert second.policy_version == "stub-1"
    [done] = rollouts(events)
    assert (done.status, done.total_reward, done.has_reward, done.transition_count) == ("succeeded", 1.0, True, 2)
    # Commit order: the rollout's completion follows its transitions.
    assert [e.WhichOneof("payload") for e in events] == ["transition", "transition", "rollout"]


def test_rollout_without_reward_is_kept_and_says_so(collector, otlp_export, openai_stub):
    client = openai.OpenAI(base_url=openai_stub.base_url, api_key="unused")
    with ol.rollout(task_id="no-reward"):
        client.chat.completions.create(model="stub", messages=[{"role": "user", "content": "2*3?"}])
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 1)
    [step] = transitions(events)
    [done] = rollouts(events)
    assert (step.reward, step.done, done.has_reward, done.status) == (0.0, True, False, "succeeded")


def test_agent_exception_marks_rollout_failed_and_flags_transitions(collector, otlp_export, openai_stub):
    client = openai.OpenAI(base_url=openai_stub.base_url, api_key="unused")
    with pytest.raises(KeyError), ol.rollout(task_id="crashes"):
        client.chat.completions.create(model="stub", messages=[{"role": "user", "content": "1+1?"}])
        raise KeyError("parse failure")
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 1)
    [done] = rollouts(events)
    assert (done.status, done.error_type) == ("failed", "KeyError")
    assert "parse failure" in done.error_message
    assert [t.rollout_status for t in transitions(events)] == ["failed"]


def test_failed_llm_call_marks_rollout_llm_error(collector, otlp_export, openai_stub):
    client = openai.OpenAI(base_url=openai_stub.base_url, api_key="unused", max_retries=0)
    with ol.rollout(task_id="llm-down"):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="error", messages=[{"role": "user", "content": "1+1?"}])
    otlp_export.flush()
    [done] = rollouts(wait_for_rollouts(collector.address, 1))
    assert (done.status, done.error_type) == ("llm_error", "openai.InternalServerError")


def test_async_rollouts_in_parallel_stay_apart(collector, otlp_export, openai_stub):
    client = openai.AsyncOpenAI(base_url=openai_stub.base_url, api_key="unused")

    @ol.reward
    async def graded(answer: str, expected: str) -> float:
        return float(expected in answer)

    async def one(task: int) -> None:
        with ol.rollout(task_id=f"task-{task}"):
            reply = await client.chat.completions.create(
                model="stub", messages=[{"role": "user", "content": f"{task}+{task}?"}]
            )
            await graded(reply.choices[0].message.content, str(2 * task) if task % 2 else "nope")

    async def main() -> None:
        await asyncio.gather(*(one(task) for task in range(6)))

    asyncio.run(main())
    otlp_export.flush()
    events = wait_for_rollouts(collector.address, 6)
    by_task = {t.task_id: t for t in transitions(events)}
    assert sorted(by_task) == [f"task-{i}" for i in range(6)]
    assert {task: t.reward for task, t in by_task.items()} == {f"task-{i}": float(i % 2) for i in range(6)}
    assert all(f"{i}+{i}?" in by_task[f"task-{i}"].state_json for i in range(6))
