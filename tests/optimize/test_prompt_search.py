"""The whole prompt-optimisation loop against a scripted optimiser and a prompt-sensitive stub model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from otel_lightning.optimize.optimizer_model import OptimizerError, parse_proposal
from otel_lightning.optimize.prompt_search import SearchSettings, run_prompt_search
from otel_lightning.testing.optimize_stubs import PromptSensitiveModel, ScriptedOptimizer
from tests.optimize.rewards import correct

AGENT = [sys.executable, str(Path(__file__).with_name("calc_client.py"))]


def tasks(prefix: str, numbers: range) -> list[tuple[str, dict]]:
    return [(f"{prefix}{n}", {"question": f"What is {n}*{n + 3}?", "answer": str(n * (n + 3))}) for n in numbers]


def test_parse_proposal_keeps_distinct_prompts_and_the_critique():
    proposal = parse_proposal(
        "It guessed.\n<prompt> A </prompt> and <PROMPT>B</PROMPT><prompt>A</prompt><prompt></prompt>", 5
    )
    assert proposal.prompts == ["A", "B"]
    assert proposal.critique.startswith("It guessed.")
    assert parse_proposal("<prompt>A</prompt><prompt>B</prompt>", 1).prompts == ["A"]
    with pytest.raises(OptimizerError, match="no <prompt>"):
        parse_proposal("Sure! Here is a better prompt: be careful.", 2)


@pytest.mark.timeout(900)
def test_search_improves_validation_reward_through_a_garbage_answer(collector, otlp_export, tmp_path):
    replies = [
        "The agent guesses the products.\n<prompt>Be precise.</prompt>\n<prompt>Think step by step.</prompt>",
        "I am not able to help with that.",  # garbage: no <prompt>; the round goes on
        "It never checks its arithmetic. <prompt>Always use the calculator for arithmetic.</prompt>",
    ]
    with PromptSensitiveModel(base_accuracy=0.0) as model, ScriptedOptimizer(replies) as optimizer:
        settings = SearchSettings(
            base_url=model.base_url,
            optimizer_url=optimizer.base_url,
            optimizer_model="scripted",
            rounds=2,
            beam=2,
            branch=2,
            worst=2,
            concurrency=4,
            collector=collector.address,
            rollout_timeout_s=60,
            progress=False,
        )
        history = run_prompt_search(
            tasks("t", range(2, 5)), tasks("v", range(10, 14)), AGENT, correct, settings, tmp_path
        )
        requests = list(optimizer.received)
    assert optimizer.calls == 3
    rounds = history["rounds"]
    assert rounds[0]["best_val_reward"] == 0.0  # the agent's own (no) prompt: the model guesses wrong
    assert rounds[1]["best_val_reward"] == 0.0 and rounds[1]["optimizer_calls"] == 1
    assert rounds[2]["best_val_reward"] == 1.0 and rounds[2]["optimizer_calls"] == 2
    # Rollouts: validation 4 (initial) + round 1: training 3 + validation 2x4 + round 2: training 2x3 + validation 4.
    assert [r["rollouts"] for r in rounds[1:]] == [11, 10] and history["rollouts"] == 25
    garbage = [p for p in rounds[2]["proposals"] if "error" in p]
    assert len(garbage) == 1 and "no <prompt>" in garbage[0]["error"]
    assert history["best"]["prompt"] == "Always use the calculator for arithmetic."
    assert (tmp_path / "best_prompt.txt").read_text().strip() == "Always use the calculator for arithmetic."
    written = json.loads((tmp_path / "history.json").read_text())
    assert {p["prompt"] for p in written["prompts"]} == {
        "",
        "Be precise.",
        "Think step by step.",
        "Always use the calculator for arithmetic.",
    }
    assert written["rounds"][1]["proposals"][0]["critique"] == "The agent guesses the products."
    assert (tmp_path / "prompt_search.png").stat().st_size > 0
    # The optimiser read the worst training rollouts: each turn the model saw and answered, and the reward.
    shown = requests[0]["messages"][1]["content"]
    assert "What is 2*5?" in shown or "What is 3*6?" in shown or "What is 4*7?" in shown
    assert "[answer] The answer is" in shown and "reward 0" in shown
    # In round 2 the optimiser saw the parent prompt as the gateway sent it to the model.
    assert (
        "[system] Be precise." in requests[2]["messages"][1]["content"]
        or "[system] Think step by step." in (requests[2]["messages"][1]["content"])
    )


def test_an_unreachable_or_garbage_optimizer_is_a_clear_error():
    from otel_lightning.optimize.optimizer_model import ask_optimizer
    from tests.support import free_port

    with pytest.raises(OptimizerError, match="cannot reach the optimiser"):
        ask_optimizer(f"http://127.0.0.1:{free_port()}/v1", {"model": "x", "messages": []}, timeout_s=5)
    with ScriptedOptimizer(["no tags at all"]) as optimizer:
        text = ask_optimizer(optimizer.base_url, {"model": "x", "messages": []})
    with pytest.raises(OptimizerError, match="no <prompt>"):
        parse_proposal(text, 2)
