"""The two-agent app (triage hands off to math) trained with a policy per agent, through every real part."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch

import otel_lightning as ol

ROOT = Path(__file__).resolve().parents[2]


def train_triage_app(tmp_path, route_spans, monkeypatch, *extra: str) -> dict:
    """train.py --app triage --policy-per-agent, small, through every real part."""
    sys.path.insert(0, str(ROOT))
    from examples.calc_agent import train

    monkeypatch.setattr(train, "setup_tracing", route_spans)
    # The warm start teaches both agents to hand off / call the calculator, so both take turns in every rollout.
    monkeypatch.setattr(
        train, "APPS", {**train.APPS, "triage": (train.two_agents.run, _always_delegating_demonstrations)}
    )
    # A reward that varies whatever a barely trained model answers, so groups carry a signal.
    monkeypatch.setattr(train.two_agents, "correct", _odd_length)
    small = ["--tasks-per-step", "2", "--group-size", "4", "--heldout", "4", "--warm-start-steps", "100"]
    model = ["--hidden", "32", "--layers", "1", "--workers", "4"]
    return train.main(["--out", str(tmp_path), "--app", "triage", "--policy-per-agent", *small, *model, *extra])


def test_each_agent_of_the_triage_app_gets_and_trains_its_own_adapter(tmp_path, route_spans, monkeypatch):
    summary = train_triage_app(tmp_path, route_spans, monkeypatch, "--steps", "3", "--logger", "tensorboard")
    assert "triage" in summary["held_out_reward_before_per_agent"]
    assert any(point["sequences"] for point in summary["curve"])
    agents_seen = {agent for point in summary["curve"] for agent in point["agents"]}
    assert agents_seen == {"triage", "math"}
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(checkpoint["adapters"]) == agents_seen  # one adapter per agent that took turns
    assert "model.embed_tokens.weight" in checkpoint["model"]  # the shared base, under its own names
    assert any((tmp_path / "tensorboard").iterdir())
    assert all(
        "kl_to_base" in figures
        for point in summary["curve"]
        for figures in point["agents"].values()
        if "loss" in figures
    )  # the two-agent default pulls each adapter towards the base


def test_train_agents_still_selects_which_agents_get_an_adapter(tmp_path, route_spans, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="otel_lightning.train.policy"):
        summary = train_triage_app(tmp_path, route_spans, monkeypatch, "--steps", "2", "--train-agents", "math")
    assert any(point["sequences"] for point in summary["curve"])
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(checkpoint["adapters"]) == {"math"}  # triage's turns were not trained: no adapter of its own
    # ... so the policy server answered the triage agent with the base model, and said so.
    assert "no adapter for agent 'triage'" in caplog.text


@ol.reward
def _odd_length(answer: str, expected: str) -> float:
    return float(len(answer) % 2)


def _always_delegating_demonstrations(tokenizer, count, seed):
    from examples.calc_agent import two_agents

    return two_agents.demonstrations(tokenizer, count, seed, handoff_share=1.0)
