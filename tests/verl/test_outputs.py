"""Our agent loop's outputs through verl's own post-processing and advantage code (CPU, no Ray)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from verl.experimental.agent_loop.agent_loop import AgentLoopMetrics, AgentLoopOutput
from verl.protocol import DataProto
from verl.trainer.ppo.core_algos import AdvantageEstimator, compute_grpo_outcome_advantage
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

from otel_lightning.train.grpo import grpo_outcome_advantage
from otel_lightning.verl.outputs import MERGED, PER_CALL, MissingTokenIdsError, trajectories
from tests.verl.support import postprocessing_worker, transition

# A two-call rollout: the second prompt is the first prompt + the first completion + a tool output.
PROMPT = [259, 49, 43, 50, 260]  # <user>1+2<assistant>
FIRST = [262, 49, 43, 50, 263, 257]  # <call>1+2</call><eos>
TOOL = [261, 51, 260]  # <tool>3<assistant>
SECOND = [51, 257]  # 3<eos>


def two_call_rollout(rollout_id: str = "r1"):
    return [
        transition(1, PROMPT + FIRST + TOOL, SECOND, rollout_id),  # out of order on purpose
        transition(0, PROMPT, FIRST, rollout_id),
    ]


def as_output(piece, reward: float) -> AgentLoopOutput:
    return AgentLoopOutput(
        prompt_ids=piece.prompt_ids,
        response_ids=piece.response_ids,
        response_mask=piece.response_mask,
        response_logprobs=piece.response_logprobs,
        reward_score=reward,
        num_turns=piece.num_turns,
        metrics=AgentLoopMetrics(),
    )


def test_per_call_gives_one_trajectory_per_llm_call_in_step_order():
    first, second = trajectories(two_call_rollout(), PER_CALL)
    assert (first.prompt_ids, first.response_ids, first.response_mask) == (PROMPT, FIRST, [1] * len(FIRST))
    assert (second.prompt_ids, second.response_ids) == (PROMPT + FIRST + TOOL, SECOND)
    assert second.response_logprobs == [-0.5, -0.5]


def test_merged_masks_the_tool_output_between_calls():
    (merged,) = trajectories(two_call_rollout(), MERGED)
    assert merged.prompt_ids == PROMPT
    assert merged.response_ids == FIRST + TOOL + SECOND
    assert merged.response_mask == [1] * len(FIRST) + [0] * len(TOOL) + [1] * len(SECOND)
    assert merged.response_logprobs == [-0.5] * len(FIRST) + [0.0] * len(TOOL) + [-0.5] * len(SECOND)
    assert merged.steps == [0, 1]


def test_merged_starts_a_new_trajectory_where_the_conversation_does_not_continue():
    calls = [transition(0, PROMPT, FIRST), transition(1, [259, 52], SECOND)]  # a fresh prompt
    assert [t.prompt_ids for t in trajectories(calls, MERGED)] == [PROMPT, [259, 52]]


def test_a_call_without_token_ids_is_an_error_not_a_guess():
    with pytest.raises(MissingTokenIdsError, match="return_token_ids"):
        trajectories([transition(0, PROMPT, [])], PER_CALL)


def test_merged_output_through_verl_postprocessing_into_a_data_proto():
    (merged,) = trajectories(two_call_rollout(), MERGED)
    other = trajectories([transition(0, PROMPT[:2], [52, 257], "r2")], MERGED)[0]
    worker = postprocessing_worker(prompt_length=8, response_length=16)
    padded = [
        asyncio.run(worker._agent_loop_postprocess(as_output(piece, reward), validate=False, raw_prompt=[]))
        for piece, reward in ((merged, 1.0), (other, 0.0))
    ]
    batch = worker._postprocess(padded).batch
    pad = worker.tokenizer.pad_token_id

    # Prompts left-padded, responses right-padded, exactly our ids.
    assert batch["prompts"][0].tolist() == [pad] * 3 + PROMPT
    length = len(merged.response_ids)
    assert batch["responses"][0, :length].tolist() == merged.response_ids
    assert batch["responses"][0, length:].tolist() == [pad] * (16 - length)
    # The mask verl's loss uses: 1 over the model's tokens, 0 over the tool output and padding.
    assert batch["response_mask"][0].tolist() == merged.response_mask + [0] * (16 - length)
    assert batch["rollout_log_probs"][0, :length].tolist() == merged.response_logprobs
    # The reward sits on the last response token, where verl's reward manager puts scores.
    rm_scores = batch["rm_scores"]
    assert rm_scores[0, length - 1] == 1.0 and rm_scores[0].sum() == 1.0
    assert rm_scores[1].abs().sum() == 0.0
    assert batch["attention_mask"][0].sum() == len(PROMPT) + length


def _multi_trajectory_batch(rewards: list[float]) -> tuple[DataProto, list[str], list[int]]:
    """Per-call outputs of len(rewards) sessions of one prompt, as verl's v1 trainer batches them."""
    rows, keys, sessions = [], [], []
    for session, reward in enumerate(rewards):
        for index, piece in enumerate(trajectories(two_call_rollout(f"r{session}"), PER_CALL)):
            rows.append(as_output(piece, reward).as_dict())
            keys.append(f"uid0_{session}_{index}")
            sessions.append(session)
    width = max(len(row["responses"]) for row in rows)

    def padded(name: str, dtype: torch.dtype) -> torch.Tensor:
        out = torch.zeros(len(rows), width, dtype=dtype)
        for i, row in enumerate(rows):
            out[i, : len(row[name])] = row[name]
        return out

    data = DataProto.from_dict(
        tensors={
            "responses": padded("responses", torch.int64),
            "response_mask": padded("response_mask", torch.int64),
            "token_level_rewards": padded("rm_scores", torch.float32),
        },
        non_tensors={"uid": np.array(["uid0"] * len(rows), dtype=object)},
    )
    return data, keys, sessions


def test_verl_multi_trajectory_grpo_matches_ours_on_the_same_rewards():
    rewards = [1.0, 0.0, 0.0, 1.0]
    data, keys, sessions = _multi_trajectory_batch(rewards)
    data = compute_advantage_for_multi_trajectories(data, keys, AdvantageEstimator.GRPO)
    ours = grpo_outcome_advantage(torch.tensor(rewards), torch.zeros(len(rewards), dtype=torch.long))
    for row, session in enumerate(sessions):
        mask = data.batch["response_mask"][row].bool()
        # Every LLM call of a session carries the session's advantage on its own tokens only.
        assert torch.allclose(data.batch["advantages"][row][mask], ours[session].expand(int(mask.sum())), atol=1e-5)
        assert data.batch["advantages"][row][~mask].abs().sum() == 0


@pytest.mark.parametrize("norm_by_std", [True, False])
def test_our_grpo_advantages_equal_verls_function(norm_by_std):
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        size = int(torch.randint(2, 24, (1,), generator=generator))
        scores = torch.randint(0, 3, (size,), generator=generator).float() / 2
        groups = torch.randint(0, 5, (size,), generator=generator)
        mask = torch.ones(size, 3)
        verl_advantages, _ = compute_grpo_outcome_advantage(
            token_level_rewards=torch.cat([torch.zeros(size, 2), scores[:, None]], dim=1),
            response_mask=mask,
            index=np.array([str(int(g)) for g in groups], dtype=object),
            norm_adv_by_std_in_grpo=norm_by_std,
        )
        ours = grpo_outcome_advantage(scores, groups, norm_by_std=norm_by_std)
        assert torch.allclose(verl_advantages[:, 0], ours, atol=1e-5)
