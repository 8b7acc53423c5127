"""`otel-lightning export`: a store written by a real collector (real OTel SDK spans over OTLP/gRPC, a
stub OpenAI server) as sharegpt, openai and verl datasets, read back with Hugging Face `datasets`."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import datasets
import grpc
import openai
import pytest

import otel_lightning as ol
from otel_lightning.cli import build_parser
from otel_lightning.task_client import TaskPoolClient
from otel_lightning.v1 import feedback_pb2 as fb
from otel_lightning.v1 import feedback_pb2_grpc as fb_grpc
from otel_lightning_collector import dataset_formats
from otel_lightning_collector.export_datasets import main
from tests.support import wait_for_rollouts

CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "evaluate arithmetic",
        "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
    },
}
SYSTEM = "You are a calculator."
ARGUMENTS = json.dumps({"expression": "17+25"})  # the stub's call, as OpenAI sends it: a JSON string


@ol.reward
def exact_answer(answer: str, expected: str) -> float:
    return float(expected in answer)


def _ask(client: openai.OpenAI, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    return client.chat.completions.create(model="stub", messages=messages, **kwargs).choices[0].message


def _tool_agent(client: openai.OpenAI) -> tuple[str, str]:
    """System prompt, a calculator call, its result, the answer; returns (answer, tool call id)."""
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 17+25?"}]
    first = _ask(client, messages, tools=[CALCULATOR])
    call = first.tool_calls[0]
    messages += [
        first.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "42"},
    ]
    return _ask(client, messages, tools=[CALCULATOR]).content, call.id


# Five rollouts of four tasks, with different statuses, rewards and agents: built by the first test that
# asks (its collector writes it), then read by the others.
_STORE: dict[str, Any] = {}


@pytest.fixture
def store(request: pytest.FixtureRequest, openai_stub) -> dict[str, Any]:
    if _STORE:
        return _STORE
    collector = request.getfixturevalue("collector")
    otlp_export = request.getfixturevalue("otlp_export")
    pool = TaskPoolClient(collector.address)
    pool.submit([("tool-1", {"question": "What is 17+25?", "answer": "42"})])  # verl's extra_info comes from it
    pool.close()
    client = openai.OpenAI(base_url=openai_stub.base_url, api_key="unused")
    ids = {}

    def completed(count: int) -> None:
        # One rollout at a time, so they complete (and are exported) in this order.
        otlp_export.flush()
        assert sum(e.HasField("rollout") for e in wait_for_rollouts(collector.address, count)) == count

    with ol.rollout(task_id="tool-1") as info, ol.agent_scope("solver"):
        answer, ids["call"] = _tool_agent(client)
        exact_answer(answer, "42")
    ids["tool"] = info.rollout_id
    completed(1)
    with ol.rollout(task_id="plain-1") as info, ol.agent_scope("solver"):
        exact_answer(_ask(client, [{"role": "user", "content": "What is 2*3?"}]).content, "7")
    ids["plain"] = info.rollout_id
    completed(2)
    with pytest.raises(KeyError), ol.rollout(task_id="crash-1"), ol.agent_scope("solver"):
        _ask(client, [{"role": "user", "content": "What is 1+2?"}])
        raise KeyError("parse failure")
    completed(3)
    with ol.rollout(task_id="team-1") as info:
        with ol.agent_scope("planner"):
            _ask(client, [{"role": "user", "content": "What is 1+1?"}])
        with ol.agent_scope("solver"):
            exact_answer(_ask(client, [{"role": "user", "content": "What is 3+4?"}]).content, "7")
    ids["team"] = info.rollout_id
    completed(4)
    with ol.rollout(task_id="plain-1") as info:  # a second sample of plain-1, by the default agent, no reward
        _ask(client, [{"role": "user", "content": "What is 2*3?"}])
    ids["quiet"] = info.rollout_id
    completed(5)
    # Late feedback after plain-1 completed: its reward becomes 0 + 0.5.
    with grpc.insecure_channel(collector.address) as channel:
        fb_grpc.FeedbackStub(channel).Record(fb.FeedbackRequest(rollout_id=ids["plain"], score=0.5), timeout=10)
    _STORE.update(path=str(collector.config.store_path), **ids)
    return _STORE


def _export(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out.strip()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _without_nones(value: Any) -> Any:
    """`datasets` gives every row every key of the file (None where a row has none): drop those again."""
    if isinstance(value, dict):
        return {k: _without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nones(v) for v in value]
    return value


def _loaded(kind: str, path: Path) -> list[dict[str, Any]]:
    cache = path.parent / f"hf-cache-{path.name}"
    return list(datasets.load_dataset(kind, data_files=str(path), split="train", cache_dir=str(cache)))


def test_sharegpt_final_conversations_per_agent(store, tmp_path: Path, capsys) -> None:
    out = tmp_path / "sft.jsonl"
    line = _export(capsys, "--store", store["path"], "--format", "sharegpt", "--out", str(out))
    assert line == f"wrote 5 conversations to {out} (left out: 1 rollout status!=succeeded)"
    records = _lines(out)
    assert [(r["task_id"], r["agent"], r["reward"]) for r in records] == [
        ("tool-1", "solver", 1.0),
        ("plain-1", "solver", 0.5),
        ("team-1", "planner", 1.0),
        ("team-1", "solver", 1.0),
        ("plain-1", "default", 0.0),
    ]
    function = CALCULATOR["function"]
    assert records[0] == {
        "conversations": [
            {"from": "human", "value": "What is 17+25?"},
            {
                "from": "function_call",
                "value": json.dumps({"name": "calculator", "arguments": {"expression": "17+25"}}),
            },
            {"from": "observation", "value": "42"},
            {"from": "gpt", "value": "The answer is 42."},
        ],
        "system": SYSTEM,
        "tools": json.dumps([function]),
        "rollout_id": store["tool"],
        "task_id": "tool-1",
        "agent": "solver",
        "status": "succeeded",
        "reward": 1.0,
    }
    assert records[3]["conversations"] == [
        {"from": "human", "value": "What is 3+4?"},
        {"from": "gpt", "value": "The answer is 7."},
    ]
    assert (records[3]["system"], records[3]["tools"]) == ("", "[]")
    assert _loaded("json", out) == records  # every row has the same keys: datasets reads them back as written


def test_sharegpt_filters_say_what_they_left_out(store, tmp_path: Path, capsys) -> None:
    out = tmp_path / "best.jsonl"
    line = _export(
        capsys, "--store", store["path"], "--format", "sharegpt", "--out", str(out), "--min-reward", "0.5",
        "--agent", "solv*", "--since", "1h",
    )  # fmt: skip
    assert line == (
        f"wrote 3 conversations to {out} (left out: 1 rollout status!=succeeded, 1 rollout without a reward,"
        " 1 conversation of an agent not matching solv*)"
    )
    assert [(r["rollout_id"], r["agent"]) for r in _loaded("json", out)] == [
        (store["tool"], "solver"),
        (store["plain"], "solver"),
        (store["team"], "solver"),
    ]
    line = _export(capsys, "--store", store["path"], "--format", "sharegpt", "--out", str(out), "--min-reward", "0.6")
    assert line == (
        f"wrote 3 conversations to {out} (left out: 1 rollout status!=succeeded, 1 rollout reward<0.6,"
        " 1 rollout without a reward)"
    )
    until = "2000-01-01T00:00:00Z"
    line = _export(capsys, "--store", store["path"], "--format", "sharegpt", "--out", str(out), "--status", "any",
                   "--until", until)  # fmt: skip
    assert line == f"wrote 0 conversations to {out} (left out: 5 rollouts completed after {until})"
    assert out.read_text() == ""


def test_openai_messages_with_tool_calls(store, tmp_path: Path, capsys) -> None:
    out = tmp_path / "chats.jsonl"
    line = _export(capsys, "--store", store["path"], "--format", "openai", "--out", str(out), "--status",
                   "succeeded,failed", "--agent", "solver")  # fmt: skip
    assert line == f"wrote 4 conversations to {out} (left out: 2 conversations of an agent not matching solver)"
    records = _lines(out)
    assert [(r["task_id"], r["status"]) for r in records] == [
        ("tool-1", "succeeded"),
        ("plain-1", "succeeded"),
        ("crash-1", "failed"),
        ("team-1", "succeeded"),
    ]
    call = {"id": store["call"], "type": "function", "function": {"name": "calculator", "arguments": ARGUMENTS}}
    expected_messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is 17+25?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "42", "tool_call_id": store["call"]},
        {"role": "assistant", "content": "The answer is 42."},
    ]
    assert records[0] == {
        "messages": expected_messages,
        "tools": [CALCULATOR],
        "rollout_id": store["tool"],
        "task_id": "tool-1",
        "agent": "solver",
        "status": "succeeded",
        "reward": 1.0,
    }
    loaded = _loaded("json", out)
    assert [row["rollout_id"] for row in loaded] == [r["rollout_id"] for r in records]
    assert _without_nones(loaded[0]["messages"]) == _without_nones(expected_messages)
    assert loaded[0]["tools"] == [CALCULATOR]
    assert [m["role"] for m in loaded[2]["messages"]] == ["user", "assistant"]


def test_openai_per_step_records_with_a_limit(store, tmp_path: Path, capsys) -> None:
    out = tmp_path / "steps.jsonl"
    line = _export(capsys, "--store", store["path"], "--format", "openai", "--out", str(out), "--per-step",
                   "--status", "any", "--limit", "3")  # fmt: skip
    assert line == f"wrote 3 steps to {out} (left out: 4 steps over --limit 3)"
    records = _loaded("json", out)
    assert [(r["task_id"], r["step"], r["reward"]) for r in records] == [
        ("tool-1", 0, 1.0),
        ("tool-1", 1, 1.0),
        ("plain-1", 0, 0.0),  # a step's credit: the late feedback names the rollout, not a step
    ]
    first = _without_nones(records[0]["messages"])
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    assert first[-1]["tool_calls"][0]["function"] == {"name": "calculator", "arguments": ARGUMENTS}


def test_verl_rows_are_tasks(store, tmp_path: Path, capsys) -> None:
    out = tmp_path / "train.parquet"
    line = _export(capsys, "--store", store["path"], "--format", "verl", "--out", str(out))
    assert line == f"wrote 3 tasks (from 4 rollouts) to {out} (left out: 1 rollout status!=succeeded)"
    rows = _loaded("parquet", out)
    assert [row["extra_info"]["task_id"] for row in rows] == ["tool-1", "plain-1", "team-1"]
    assert rows[0] == {
        "data_source": "otel_lightning",
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 17+25?"}],
        "ability": "agent",
        "reward_model": {"style": "rule", "ground_truth": "42"},
        # The pooled task's input, as LightningAgentLoop hands it to the agent.
        "extra_info": {"index": 0, "task_id": "tool-1", "question": "What is 17+25?", "answer": "42"},
        "agent_name": "otel_lightning",
    }
    assert rows[1]["prompt"] == [{"role": "user", "content": "What is 2*3?"}]
    assert rows[1]["reward_model"] == {"style": "rule", "ground_truth": None}  # no pooled input: verl scores it
    assert _without_nones(rows[1]["extra_info"]) == {"index": 1, "task_id": "plain-1"}
    assert rows[2]["prompt"] == [{"role": "user", "content": "What is 1+1?"}]  # the planner spoke first


def test_registered_as_an_otel_lightning_command() -> None:
    args = build_parser().parse_args(["export", "--format", "verl", "--out", "x.parquet", "--status", "failed"])
    assert (args.format, args.out, args.status, args.per_step) == ("verl", "x.parquet", ["failed"], False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--store", "{missing}", "--format", "openai", "--out", "{out}"], "no store at {missing}"),
        (["--store", "{not_a_store}", "--format", "openai", "--out", "{out}"], "is not an otel-lightning"),
        (["--store", "{store}", "--format", "alpaca", "--out", "{out}"], "invalid choice: 'alpaca'"),
        (["--store", "{store}", "--format", "openai"], "the following arguments are required: --out"),
        (
            ["--store", "{store}", "--format", "openai", "--out", "{out}", "--since", "yesterday"],
            "bad time 'yesterday'",
        ),
        (["--store", "{store}", "--format", "openai", "--out", "{out}", "--status", "won"], "unknown status won"),
    ],
)
def test_errors_are_one_line_and_exit_2(argv, message, tmp_path: Path, capsys) -> None:
    not_a_store, ol_store = tmp_path / "other.db", tmp_path / "store.db"
    for path, tables in ((not_a_store, ("t",)), (ol_store, ("events", "rollouts"))):
        with closing(sqlite3.connect(path)) as db:
            db.executescript("".join(f"CREATE TABLE {table} (x);" for table in tables))
    names = {"missing": tmp_path / "nope.db", "not_a_store": not_a_store, "store": ol_store, "out": tmp_path / "o"}
    with pytest.raises(SystemExit) as exited:
        main([part.format(**names) for part in argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("otel-lightning export: ")
    assert message.format(**names) in err
    assert not (tmp_path / "o").exists()


def test_sharegpt_layout_rules() -> None:
    calls = [
        {"id": "a", "type": "function", "function": {"name": "add", "arguments": '{"x": 1}'}},
        {"id": "b", "type": "function", "function": {"name": "mul", "arguments": '{"x": 2}'}},
    ]
    messages = [
        {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": "Calling both.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "a", "content": "1"},
        {"role": "tool", "tool_call_id": "b", "content": "2"},
        {"role": "assistant", "content": "1 and 2"},
    ]
    record = dataset_formats.sharegpt_record(messages, [])
    assert record["system"] == "Be brief."
    assert record["conversations"][1:3] == [
        {
            "from": "function_call",
            "value": json.dumps([{"name": "add", "arguments": {"x": 1}}, {"name": "mul", "arguments": {"x": 2}}]),
        },
        {"from": "observation", "value": "1\n</tool_response>\n<tool_response>\n2"},
    ]
    assert dataset_formats.texts_beside_tool_calls(messages) == 1  # "Calling both." has no sharegpt turn
    for messages, reason in [
        ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "do not alternate"),
        ([{"role": "user", "content": "a"}], "does not end with the model's turn"),
        ([{"role": "user", "content": [{"type": "image_url"}]}], "non-text content"),
        ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}], "system message after"),
    ]:
        with pytest.raises(dataset_formats.FormatError, match=reason):
            dataset_formats.sharegpt_record(messages, [])
