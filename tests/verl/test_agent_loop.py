"""LightningAgentLoop end to end on CPU: verl's loop → our pool → an unmodified agent → the policy
server (standing in for a vLLM replica) → spans → collector → transitions → AgentLoopOutputs."""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import OmegaConf
from verl.experimental.agent_loop.agent_loop import DictConfigWrap

from otel_lightning.train.sft import token_logprobs
from otel_lightning.verl.rollout_waiter import RolloutFailedError, RolloutWaiter
from otel_lightning.worker import SubprocessAgent, Worker
from tests.verl.support import close_the_loop_verl_took, padding_tokenizer

CONFIG = Path(__file__).parents[2] / "examples" / "verl" / "agent_loop.yaml"

# Two LLM calls, a reward; no otel-lightning code but the reward. OPENAI_BASE_URL comes from the task.
AGENT = textwrap.dedent(
    """
    import json, sys
    import openai
    import otel_lightning as ol

    task = json.load(sys.stdin)
    if task.get("crash"):
        sys.exit("the agent fell over")
    client = openai.OpenAI(max_retries=0)
    messages = [{"role": "user", "content": task["question"]}]
    first = client.chat.completions.create(model="policy", messages=messages, max_tokens=6)
    messages.append({"role": "assistant", "content": first.choices[0].message.content})
    messages.append({"role": "user", "content": "Sure?"})
    client.chat.completions.create(model="policy", messages=messages, max_tokens=6)
    ol.emit_reward(len(task["question"]) / 100)
    """
)


@pytest.fixture
def agent_loop(collector, policy_server, otlp_export, tmp_path):
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    worker = Worker(
        collector.address, SubprocessAgent([sys.executable, str(script)], collector=collector.address), concurrency=3
    )
    thread = worker.start_in_thread()
    trainer_config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 256, "response_length": 64}}})
    loop = hydra.utils.instantiate(
        OmegaConf.load(CONFIG)[0],
        collector=collector.address,
        openai_base_url=policy_server.base_url,
        trainer_config=DictConfigWrap(trainer_config),
        server_manager=None,
        tokenizer=padding_tokenizer(),
        processor=None,
        dataset_cls=None,
        data_config=DictConfigWrap(OmegaConf.create({})),
    )
    yield loop
    close_the_loop_verl_took(loop)
    worker.stop()
    thread.join(10)
    RolloutWaiter.shared(collector.address).close()


def run_rows(loop, rows: list[dict]) -> list:
    async def run_all() -> list:
        return await asyncio.gather(*(loop.run({"temperature": 1.0}, **row) for row in rows), return_exceptions=True)

    return asyncio.run(run_all())


def test_outputs_carry_the_servers_exact_tokens_logprobs_and_the_agents_reward(agent_loop, policy):
    questions = ["What is 1+2?", "What is 12*3?"]
    results = run_rows(
        agent_loop, [{"uid": "u1", "session_id": i, "extra_info": {"question": q}} for i, q in enumerate(questions)]
    )
    for question, outputs in zip(questions, results, strict=True):
        assert not isinstance(outputs, BaseException), outputs
        first, second = outputs  # one AgentLoopOutput per LLM call
        assert first.prompt_ids == policy.tokenizer.encode_prompt([{"role": "user", "content": question}])
        assert second.prompt_ids[: len(first.prompt_ids)] == first.prompt_ids
        for output in outputs:
            assert output.reward_score == pytest.approx(len(question) / 100)
            assert output.response_mask == [1] * len(output.response_ids)
            assert output.extra_fields["lightning_policy_versions"] == ["0"]
            # The logprobs the server reported are the model's for exactly these tokens.
            ids = torch.tensor([output.prompt_ids + output.response_ids])
            with torch.no_grad():
                recomputed = token_logprobs(policy.model, ids, torch.ones_like(ids))[0, len(output.prompt_ids) - 1 :]
            assert recomputed.tolist() == pytest.approx(output.response_logprobs, abs=1e-4)
        assert [o.extra_fields["lightning_steps"] for o in outputs] == [[0], [1]]


def test_a_failed_rollout_raises_instead_of_training_on_it(agent_loop):
    (result,) = run_rows(agent_loop, [{"uid": "u2", "extra_info": {"crash": True}}])
    assert isinstance(result, RolloutFailedError)
    assert "failed" in str(result) and "the agent fell over" in str(result)
