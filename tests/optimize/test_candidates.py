"""Candidates: the YAML model, its errors, and what a candidate does to each kind of request body."""

from __future__ import annotations

import pytest

from otel_lightning.optimize.candidates import CandidateError, load_candidates, parse_candidates


def one(**fields):
    return parse_candidates({"candidates": [{"name": "c", "base_url": "http://127.0.0.1:1/v1", **fields}]})[0]


def test_the_issue_example_parses_and_policy_paths_are_relative_to_the_file(tmp_path):
    path = tmp_path / "candidates.yaml"
    path.write_text(
        """
candidates:
  - name: base
    base_url: http://127.0.0.1:8000/v1
    model: Qwen/Qwen2.5-0.5B-Instruct
  - name: careful-prompt
    base_url: http://127.0.0.1:8000/v1
    model: Qwen/Qwen2.5-0.5B-Instruct
    system_prompt: {mode: replace, text: "You are careful: check before you answer."}
    temperature: 0.7
  - name: trained
    policy: runs/calc_agent/checkpoint.pt
"""
    )
    base, careful, trained = load_candidates(path)
    assert (base.name, base.model, base.system_prompt) == ("base", "Qwen/Qwen2.5-0.5B-Instruct", None)
    assert careful.system_prompt.mode == "replace" and careful.temperature == 0.7
    assert trained.policy.checkpoint == (tmp_path / "runs/calc_agent/checkpoint.pt").resolve()
    assert trained.base_url is None


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        (
            {"name": "fast", "base_url": "http://x/v1", "temprature": 0.1},
            "candidate 'fast' (#1): unknown field 'temprature'",
        ),
        ({"name": "both", "base_url": "http://x/v1", "policy": "a.pt"}, "exactly one of `base_url`"),
        ({"name": "neither"}, "exactly one of `base_url`"),
        ({"name": "s", "base_url": "http://x/v1", "system_prompt": {"mode": "sub", "text": "x"}}, "needs a `pattern`"),
        (
            {"name": "s", "base_url": "http://x/v1", "system_prompt": {"mode": "edit", "text": "x"}},
            "system_prompt.mode",
        ),
        ({"name": "t", "base_url": "http://x/v1", "temperature": -1}, "temperature"),
        ({"name": "bad name!", "base_url": "http://x/v1"}, "name"),
        ({"base_url": "http://x/v1"}, "candidate #1: name"),
    ],
)
def test_bad_candidates_name_the_candidate_and_the_field(entry, expected):
    with pytest.raises(CandidateError) as error:
        parse_candidates({"candidates": [entry]}, "c.yaml")
    assert expected in str(error.value)
    assert str(error.value).startswith("c.yaml: candidate")


def test_duplicate_names_and_empty_files_are_refused():
    with pytest.raises(CandidateError, match="repeated: a"):
        parse_candidates({"candidates": [{"name": "a", "base_url": "http://x/v1"}] * 2})
    with pytest.raises(CandidateError, match="non-empty list"):
        parse_candidates({"candidates": []})
    with pytest.raises(CandidateError, match="unknown top-level"):
        parse_candidates({"candidate": []})


CHAT = "/v1/chat/completions"


def test_replace_prepend_and_a_missing_system_prompt():
    body = {"model": "m", "messages": [{"role": "system", "content": "Old."}, {"role": "user", "content": "Hi"}]}
    bare = {"model": "m", "messages": [{"role": "user", "content": "Hi"}]}
    replace = one(system_prompt="New.")
    assert replace.rewrite(CHAT, body)["messages"][0] == {"role": "system", "content": "New."}
    assert body["messages"][0]["content"] == "Old."  # the caller's body is untouched
    assert replace.rewrite(CHAT, bare)["messages"] == [
        {"role": "system", "content": "New."},
        {"role": "user", "content": "Hi"},
    ]
    prepend = one(system_prompt={"mode": "prepend", "text": "First."})
    assert prepend.rewrite(CHAT, body)["messages"][0]["content"] == "First.\n\nOld."
    assert prepend.rewrite(CHAT, bare)["messages"][0]["content"] == "First."


def test_sub_changes_only_the_agents_whose_prompt_matches():
    sub = one(
        system_prompt={
            "mode": "sub",
            "pattern": r"You are the math agent\.",
            "text": "You are the math agent. Use the calculator.",
        }
    )
    math = {"messages": [{"role": "system", "content": [{"type": "text", "text": "You are the math agent."}]}]}
    triage = {"messages": [{"role": "system", "content": "You are the triage agent."}]}
    assert sub.rewrite(CHAT, math)["messages"][0]["content"] == "You are the math agent. Use the calculator."
    assert sub.rewrite(CHAT, triage) == triage
    assert sub.rewrite(CHAT, {"messages": [{"role": "user", "content": "x"}]})["messages"] == [
        {"role": "user", "content": "x"}
    ]
    empty = one(system_prompt={"mode": "sub", "pattern": "^$", "text": "Added."})
    assert empty.rewrite(CHAT, {"messages": [{"role": "user", "content": "x"}]})["messages"][0]["content"] == "Added."


def test_model_and_sampling_on_each_endpoint():
    candidate = one(model="big", temperature=0.0, top_p=0.5, max_tokens=7)
    chat = candidate.rewrite(CHAT, {"model": "small", "messages": [], "max_completion_tokens": 100})
    assert (chat["model"], chat["temperature"], chat["top_p"], chat["max_completion_tokens"]) == ("big", 0.0, 0.5, 7)
    assert candidate.rewrite("/v1/completions", {"prompt": "x"})["max_tokens"] == 7
    assert candidate.rewrite("/v1/responses", {"input": "x"})["max_output_tokens"] == 7
    assert candidate.rewrite("/v1/models", {"a": 1}) == {"a": 1}


def test_responses_instructions_and_completions_prompt():
    replace = one(system_prompt="Be brief.")
    assert replace.rewrite("/v1/responses", {"input": "x"})["instructions"] == "Be brief."
    assert replace.rewrite("/v1/responses", {"input": "x", "instructions": "Old"})["instructions"] == "Be brief."
    developer = {"input": [{"role": "developer", "content": "Old"}, {"role": "user", "content": "x"}]}
    assert replace.rewrite("/v1/responses", developer)["input"][0] == {"role": "developer", "content": "Be brief."}
    assert replace.rewrite("/v1/completions", {"prompt": "Q: 1+1"})["prompt"] == "Be brief.\n\nQ: 1+1"


def test_the_eval_command_refuses_a_bad_candidates_file_naming_the_candidate(tmp_path):
    from otel_lightning.cli import main

    (tmp_path / "candidates.yaml").write_text(
        "candidates:\n  - {name: ok, base_url: 'http://127.0.0.1:1/v1'}\n"
        "  - {name: hot, base_url: 'http://127.0.0.1:1/v1', temprature: 2}\n"
    )
    (tmp_path / "tasks.jsonl").write_text('{"task_id": "a", "input": "x"}\n')
    arguments = ["eval", "--tasks", str(tmp_path / "tasks.jsonl"), "--candidates", str(tmp_path / "candidates.yaml")]
    with pytest.raises(SystemExit) as stopped:
        main([*arguments, "--out", str(tmp_path / "out"), "--", "python", "agent.py"])
    assert "candidate 'hot' (#2): unknown field 'temprature'" in str(stopped.value)
    assert not (tmp_path / "out").exists()
