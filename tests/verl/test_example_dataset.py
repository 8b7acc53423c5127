"""The verl example's parquet rows give the agent loop the calc agent's task."""

from __future__ import annotations

import pandas as pd

from examples.verl.make_dataset import main as make_dataset
from otel_lightning.verl.agent_loop import LightningAgentLoop


def test_rows_read_back_from_parquet_become_the_agents_task(tmp_path):
    make_dataset(["--out", str(tmp_path), "--train", "4", "--val", "2"])
    frame = pd.read_parquet(tmp_path / "train.parquet")
    assert len(frame) == 4 and len(pd.read_parquet(tmp_path / "val.parquet")) == 2
    row = frame.iloc[0].to_dict()  # as verl's dataset hands it over: numpy values inside
    loop = object.__new__(LightningAgentLoop)
    loop.input_key = "extra_info"
    task = loop._task_input(row)
    assert set(task) >= {"question", "answer"} and task["question"].startswith("What is ")
    assert row["agent_name"] == "otel_lightning"
    assert row["prompt"][0]["content"] == task["question"]
