"""Experiment tracking written through TensorBoard's and MLflow's libraries, read back with their own readers."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from otel_lightning.train.tracking import Tracker, parse_loggers, scalar_metrics

STEPS = [
    {
        "mean_reward": 0.25 * step,
        "reward_std": 0.5,
        "statuses": {"succeeded": 6, "failed": step},
        "agents": {"math": {"reward_mean": 0.1 * step}},
        "policy_version": step + 1,
        "note": "not a number",
    }
    for step in range(3)
]


def test_tensorboard_and_mlflow_runs_are_read_back_by_their_own_readers(tmp_path, capsys):
    with Tracker("console,tensorboard,mlflow", tmp_path, run_name="seed0", params={"lr": 5e-4, "seed": 0}) as tracker:
        for step, stats in enumerate(STEPS):
            tracker.log(stats, step)
        run_id = tracker.mlflow.run_id
        uri = tracker.mlflow.tracking_uri

    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("mean_reward")] == [(0, 0.0), (1, 0.25), (2, 0.5)]
    assert [e.value for e in events.Scalars("statuses/failed")] == [0.0, 1.0, 2.0]
    assert [round(e.value, 6) for e in events.Scalars("agents/math/reward_mean")] == [0.0, 0.1, 0.2]
    assert "note" not in events.Tags()["scalars"]

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "seed0"
    assert run.data.params == {"lr": "0.0005", "seed": "0"}
    history = client.get_metric_history(run_id, "agents/math/reward_mean")
    assert [(m.step, round(m.value, 6)) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 0.0),
        (1, 0.1),
        (2, 0.2),
    ]
    assert run.data.metrics["policy_version"] == 3.0

    printed = capsys.readouterr().out
    assert "step 2: mean_reward=0.5" in printed and "agents/math/reward_mean=0.2" in printed


def test_a_run_that_fails_is_marked_failed_in_mlflow(tmp_path):
    with pytest.raises(RuntimeError), Tracker("mlflow", tmp_path) as tracker:
        tracker.log({"mean_reward": 1.0}, 0)
        raise RuntimeError("the trainer crashed")
    assert MlflowClient(tracker.mlflow.tracking_uri).get_run(tracker.mlflow.run_id).info.status == "FAILED"


def test_unknown_logger_names_are_refused_with_the_known_ones():
    assert parse_loggers(" console, mlflow,console") == ["console", "mlflow"]
    assert parse_loggers("") == []
    with pytest.raises(ValueError, match="unknown logger wandb; choose from console, tensorboard, mlflow"):
        parse_loggers("console,wandb")


def test_nested_stats_flatten_and_non_numbers_are_left_out():
    flat = scalar_metrics({"a": 1, "b": {"c": 2.5, "d": "x"}, "e": True, "f": float("nan")})
    assert flat == {"a": 1.0, "b/c": 2.5}
