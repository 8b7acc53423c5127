"""A seconds-long run of the demo's loop on a tiny model: every part real, nothing consumed twice."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_short_training_run_completes_and_consumes_each_rollout_once(tmp_path, monkeypatch, route_spans):
    sys.path.insert(0, str(ROOT))
    from examples.calc_agent import train

    # The test process already has its global TracerProvider: route it to the demo's collector.
    monkeypatch.setattr(train, "setup_tracing", route_spans)
    seen: list[str] = []
    original_absorb = train.RolloutGroups._absorb

    def absorb(self, event):
        if event.HasField("rollout"):
            seen.append(event.rollout.rollout_id)
        return original_absorb(self, event)

    monkeypatch.setattr(train.RolloutGroups, "_absorb", absorb)
    summary = train.main(
        [
            "--out",
            str(tmp_path),
            "--steps",
            "2",
            "--tasks-per-step",
            "2",
            "--group-size",
            "3",
            "--heldout",
            "3",
            "--eval-samples",
            "1",
            "--warm-start-steps",
            "5",
            "--hidden",
            "32",
            "--layers",
            "1",
            "--workers",
            "3",
        ]
    )
    # Before and after: 3 held-out tasks sampled once and answered greedily once; two steps of 2 x 3.
    assert len(seen) == len(set(seen)) == 6 + 2 * 2 * 3 + 6
    assert [point["rollouts"] for point in summary["curve"]] == [6, 6]
    assert summary["stragglers"] == 0
    assert (tmp_path / "reward_curve.png").stat().st_size > 0
    assert json.loads((tmp_path / "summary.json").read_text())["held_out_tasks"] == 3
    assert (tmp_path / "checkpoint.pt").exists()

    # Resume: the weights, optimizer and policy version carry on; no warm start again.
    resumed = train.main(
        [
            "--out",
            str(tmp_path / "resumed"),
            "--resume",
            str(tmp_path / "checkpoint.pt"),
            "--steps",
            "1",
            "--tasks-per-step",
            "2",
            "--group-size",
            "3",
            "--heldout",
            "1",
            "--hidden",
            "32",
            "--layers",
            "1",
            "--workers",
            "3",
        ]
    )
    assert resumed["start_policy_version"] == summary["policy_version"]
    assert [point["rollouts"] for point in resumed["curve"]] == [6]
