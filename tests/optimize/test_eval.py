"""`eval` through the real pool, worker, gateway and collector, against stub models of known quality."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from otel_lightning.optimize.candidates import parse_candidates
from otel_lightning.optimize.eval_runner import EvalSettings, run_eval
from otel_lightning.optimize.report import summarize, write_report
from otel_lightning.testing.optimize_stubs import PromptSensitiveModel
from tests.optimize.rewards import correct, raises_on_seven
from tests.support import free_port

AGENT = [sys.executable, str(Path(__file__).with_name("calc_client.py"))]


def arithmetic_tasks(count: int, start: int = 3) -> list[tuple[str, dict]]:
    return [
        (f"q{i}", {"question": f"What is {i}*{i + 4}?", "answer": str(i * (i + 4))})
        for i in range(start, start + count)
    ]


# Each rollout starts the agent's Python process: seconds each on a busy 2-core machine.
pytestmark = pytest.mark.timeout(600)


def test_eval_ranks_two_endpoints_of_known_quality_and_a_prompt_fixes_the_worse(collector, otlp_export, tmp_path):
    tasks = arithmetic_tasks(6)
    with PromptSensitiveModel(base_accuracy=0.85) as good, PromptSensitiveModel(base_accuracy=0.15) as bad:
        expected_good = sum(good.knows(t["question"]) for _, t in tasks) / len(tasks)
        expected_bad = sum(bad.knows(t["question"]) for _, t in tasks) / len(tasks)
        assert expected_good > expected_bad  # the hash split gives the two their known quality on these tasks
        candidates = parse_candidates(
            [
                {"name": "good", "base_url": good.base_url},
                {"name": "bad", "base_url": bad.base_url},
                {"name": "bad-prompted", "base_url": bad.base_url, "system_prompt": "Always use the calculator."},
            ]
        )
        run = run_eval(
            candidates,
            tasks,
            AGENT,
            correct,
            EvalSettings(concurrency=4, collector=collector.address, rollout_timeout_s=60),
        )
        prompted_requests = [b for b in bad.received if b["messages"][0]["role"] == "system"]
    summary = summarize(run)
    by_name = {entry["name"]: entry for entry in summary["candidates"]}
    assert by_name["good"]["mean_reward"] == expected_good
    assert by_name["bad"]["mean_reward"] == expected_bad
    assert by_name["bad-prompted"]["mean_reward"] == 1.0
    assert summary["best"] == "bad-prompted"
    for entry in summary["candidates"]:
        assert entry["statuses"] == {"succeeded": 6} and entry["success_rate"] == 1.0
        low, high = entry["ci95"]
        assert low <= entry["mean_reward"] <= high
        assert entry["p50_latency_ms"] > 0 and entry["mean_tokens_per_call"] > 0
    # The prompted candidate calls the tool: two model calls per rollout, both seen by the gateway.
    assert by_name["bad-prompted"]["calls"] == 12 and by_name["good"]["calls"] == 6
    # The gateway put the system prompt in front of the agent's messages for that candidate only.
    assert len(prompted_requests) == 12
    assert prompted_requests[0]["messages"][0]["content"] == "Always use the calculator."
    comparison = summary["comparison"]
    assert (comparison["best"], comparison["runner_up"]) == ("bad-prompted", "good")
    assert comparison["tasks"] == 6
    # Each rollout's transitions came back from the collector, with the candidate's system prompt in the state.
    prompted = [r for r in run.results if r.candidate == "bad-prompted"]
    state = json.loads(prompted[0].transitions[0].state_json)
    assert state["messages"][0] == {"role": "system", "content": "Always use the calculator."}

    write_report(summary, tmp_path)
    written = json.loads((tmp_path / "eval.json").read_text())
    assert written["best"] == "bad-prompted"
    assert {"name", "mean_reward", "ci95", "success_rate", "statuses"} <= set(written["candidates"][0])
    assert (tmp_path / "eval.png").stat().st_size > 0


def test_unreachable_upstream_and_raising_reward_are_counted_not_scored(collector, otlp_export):
    tasks = arithmetic_tasks(3, start=6)  # q6: 6*10, q7: 7*11 (a 7: the reward raises), q8: 8*12
    with PromptSensitiveModel(base_accuracy=1.0) as model:
        candidates = parse_candidates(
            [
                {"name": "live", "base_url": model.base_url},
                {"name": "down", "base_url": f"http://127.0.0.1:{free_port()}/v1"},
            ]
        )
        run = run_eval(
            candidates,
            tasks,
            AGENT,
            raises_on_seven,
            EvalSettings(concurrency=3, collector=collector.address, rollout_timeout_s=60),
        )
    summary = summarize(run)
    live, down = summary["candidates"]
    assert "unreachable" in run.problems["down"]
    assert down["mean_reward"] is None and down["scored"] == 0 and down["unscored"] == 3
    assert down["success_rate"] == 0.0 and sum(down["statuses"].values()) == 3
    assert live["mean_reward"] == 1.0 and live["scored"] == 2 and live["statuses"] == {"succeeded": 2, "failed": 1}
    (error,) = live["errors"]
    assert "raised for task 'q7' under candidate 'live'" in error["error"] and "no grader for sevens" in error["error"]
    assert summary["best"] == "live" and summary["comparison"] is None
