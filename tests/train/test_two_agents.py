"""The two-agent app (triage hands off to math) trained with a policy per agent, through every real part."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

import otel_lightning as ol

ROOT = Path(__file__).resolve().parents[2]


def test_each_agent_of_the_triage_app_gets_and_trains_its_own_adapter(tmp_path, route_spans, monkeypatch):
    sys.path.insert(0, str(ROOT))
    from examples.calc_agent import train

    monkeypatch.setattr(train, "setup_tracing", route_spans)
    # The warm start teaches both agents to hand off / call the calculator, so both take turns in every rollout.
    monkeypatch.setattr(
        train, "APPS", {**train.APPS, "triage": (train.two_agents.run, _always_delegating_demonstrations)}
    )
    # A reward that varies whatever a barely trained model answers, so groups carry a signal.
    monkeypatch.setattr(train.two_agents, "correct", _odd_length)
    summary = train.main(
        [
            "--out",
            str(tmp_path),
            "--app",
            "triage",
            "--policy-per-agent",
            "--steps",
            "3",
            "--tasks-per-step",
            "2",
            "--group-size",
            "4",
            "--heldout",
            "4",
            "--warm-start-steps",
            "100",
            "--hidden",
            "32",
            "--layers",
            "1",
            "--workers",
            "4",
            "--logger",
            "tensorboard",
        ]
    )
    assert "triage" in summary["held_out_reward_before_per_agent"]
    assert any(point["sequences"] for point in summary["curve"])
    agents_seen = {agent for point in summary["curve"] for agent in point["agents"]}
    assert agents_seen == {"triage", "math"}
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(checkpoint["adapters"]) == agents_seen  # one adapter per agent that took turns
    assert "model.embed_tokens.weight" in checkpoint["model"]  # the shared base, under its own names
    assert any((tmp_path / "tensorboard").iterdir())


@ol.reward
def _odd_length(answer: str, expected: str) -> float:
    return float(len(answer) % 2)


def _always_delegating_demonstrations(tokenizer, count, seed):
    from examples.calc_agent import two_agents

    return two_agents.demonstrations(tokenizer, count, seed, handoff_share=1.0)
