"""Arize Phoenix's span annotations become rewards: the real Phoenix client (`arize-phoenix-client`, in
.venv-phoenix: its pins clash with ours; `make install`) pointed at the collector's OTLP/HTTP port, end to end,
before and after the rollout completes; annotations that give no reward are counted and shown by
`otel-lightning status`; bad bodies and tokens get Phoenix's 4xx. Also the OpenInference span-attribute form
(`annotations.<i>.annotation.*`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

import otel_lightning as ol
from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning_collector.annotation_attributes import annotation_rewards, span_annotations
from otel_lightning_collector.server import CollectorConfig, CollectorServer
from otel_lightning_collector.status_cli import fetch
from tests.collector.test_ingest_robustness import exporter
from tests.support import SpanFactory, export_request, rollouts, transitions, wait_for_rollouts, wait_until

PHOENIX_PYTHON = Path(__file__).parents[2] / ".venv-phoenix" / "bin" / "python"

# Runs Phoenix's own client: each operation is a call on `client.spans`; prints each result, or the HTTP
# status and body the client raised on.
PHOENIX_CALLS = """
import json, sys
import httpx
from phoenix.client import Client

base_url, api_key, operations = sys.argv[1], sys.argv[2] or None, json.loads(sys.argv[3])
client = Client(base_url=base_url, api_key=api_key)
results = []
for name, kwargs in operations:
    try:
        results.append({"result": getattr(client.spans, name)(**kwargs)})
    except httpx.HTTPStatusError as error:
        results.append({"status": error.response.status_code, "body": error.response.text})
print(json.dumps(results))
"""


def phoenix_client(base_url: str, operations: list, api_key: str = "") -> list[dict]:
    if not PHOENIX_PYTHON.exists():
        pytest.fail(f"Phoenix's client is not installed in {PHOENIX_PYTHON.parent.parent}: run `make install`")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PHOENIX_", "OTEL_"))}
    done = subprocess.run(
        [str(PHOENIX_PYTHON), "-c", PHOENIX_CALLS, base_url, api_key, json.dumps(operations)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _post(url: str, body: bytes, token: str | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def _reward_updates(address: str) -> list:
    with TransitionStreamClient(address, follow=False, auto_ack=True, reward_updates=True) as client:
        return [event.reward_update for event in client if event.HasField("reward_update")]


@pytest.fixture
def server(tmp_path: Path):
    config = CollectorConfig(listen="127.0.0.1:0", http_listen="127.0.0.1:0", store_path=tmp_path / "c.db")
    with CollectorServer(config) as running:
        yield running


def test_phoenix_client_annotations_become_rewards_before_and_after_completion(
    server, route_spans, openai_stub, monkeypatch
):
    base_url = f"http://{server.http.address}"
    server.extras.annotations.wait_for_span_s = 0.5  # an unknown span's annotation (no sync) gives up soon
    # A completed rollout from the real SDK and OpenAI instrumentor, over OTLP.
    monkeypatch.setenv("OPENAI_BASE_URL", openai_stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    processor = route_spans(server.address)
    with ol.rollout(task_id="done-task"):
        openai.OpenAI(max_retries=0).chat.completions.create(
            model="stub", messages=[{"role": "user", "content": "What is 6*7?"}]
        )
    assert processor.force_flush(10_000)
    (done_step,) = transitions(wait_for_rollouts(server.address, 1))
    # An open rollout (no root span yet): an LLM step the annotations rate before completion.
    spans = SpanFactory(rollout_id="r-open", task_id="open-task")
    open_llm = spans.llm("2+2?", "4")
    exporter(server.address)(export_request(open_llm))
    unknown_span = "0123456789abcdef"

    results = phoenix_client(
        base_url,
        [
            # Late feedback on the completed rollout's step: a RewardUpdate.
            ["add_span_annotation", {"span_id": done_step.span_id, "annotation_name": "correctness", "score": 1.0,
                                     "label": "correct", "annotator_kind": "HUMAN", "sync": True}],
            # Open rollout: a scored annotation (a reward of its completion) and a label-only one (counted).
            ["log_span_annotations", {"sync": True, "span_annotations": [
                {"span_id": open_llm.span_id.hex(), "name": "judge", "annotator_kind": "LLM",
                 "result": {"score": 0.25, "explanation": "partly right"}},
                {"span_id": open_llm.span_id.hex(), "name": "tone", "annotator_kind": "LLM",
                 "result": {"label": "polite"}},
            ]}],
            # A span it does not hold: 404 with sync, as Phoenix; without, accepted, waits, then counted.
            ["add_span_annotation", {"span_id": unknown_span, "annotation_name": "x", "score": 1.0, "sync": True}],
            ["add_span_annotation", {"span_id": unknown_span, "annotation_name": "x", "score": 1.0}],
        ],
    )  # fmt: skip
    late, logged, missing_sync, missing_async = results
    assert set(late["result"]) == {"id"}
    assert len(logged["result"]) == 2 and all(set(item) == {"id"} for item in logged["result"])
    assert missing_sync["status"] == 404 and unknown_span in json.loads(missing_sync["body"])["detail"]
    assert missing_async == {"result": None}

    [update] = _reward_updates(server.address)
    assert (update.rollout_id, update.task_id, update.name, update.value, update.origin, update.span_id) == (
        done_step.rollout_id,
        "done-task",
        "correctness",
        1.0,
        "annotation",
        done_step.span_id,  # the step it rates, not only the rollout
    )
    exporter(server.address)(export_request(spans.root()))
    events = wait_for_rollouts(server.address, 2)
    (completed,) = [r for r in rollouts(events) if r.rollout_id == "r-open"]
    (step,) = [t for t in transitions(events) if t.rollout_id == "r-open"]
    assert completed.has_reward and completed.total_reward == pytest.approx(0.25)
    assert step.span_id == open_llm.span_id.hex() and step.reward == pytest.approx(0.25)

    # What gave no reward is counted and shown by `otel-lightning status` (live view and --json).
    assert wait_until(lambda: fetch(server.address).counters["annotations.unknown_span"] == 2, 10)
    counters = fetch(server.address).counters
    assert counters["annotations.recorded"] == 2
    assert counters["annotations.without_score"] == 1
    assert counters["annotations.unknown_span"] == 2 and counters["annotations.waiting"] == 0
    shown = subprocess.run(
        [sys.executable, "-m", "otel_lightning.cli", "status", "--collector", server.address, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert int(json.loads(shown.stdout)["counters"]["annotations.unknown_span"]) == 2


def test_an_annotation_that_beats_its_span_waits_for_it(server):
    spans = SpanFactory(rollout_id="r-slow", task_id="slow-task")
    llm = spans.llm("2+2?", "4")
    annotation = {"span_id": llm.span_id.hex(), "annotation_name": "thumbs", "score": 1.0}
    assert phoenix_client(f"http://{server.http.address}", [["add_span_annotation", annotation]]) == [{"result": None}]
    assert fetch(server.address).counters["annotations.waiting"] == 1
    exporter(server.address)(export_request(llm, spans.root()))  # the exporter's batch, later
    assert wait_until(lambda: fetch(server.address).counters["annotations.recorded"] == 1, 10)
    (completed,) = rollouts(wait_for_rollouts(server.address, 1))
    [update] = _reward_updates(server.address) or [None]
    # Whichever came first, the reward is counted once: in the completion, or as a RewardUpdate after it.
    if update is None:
        assert completed.has_reward and completed.total_reward == pytest.approx(1.0)
    else:
        assert (update.rollout_id, update.name, update.value) == ("r-slow", "thumbs", 1.0)
    assert fetch(server.address).counters["annotations.waiting"] == 0


def test_bad_bodies_get_phoenixs_4xx_and_record_nothing(server):
    spans = SpanFactory(rollout_id="r-bad")
    llm = spans.llm("q", "a")
    exporter(server.address)(export_request(llm))
    assert wait_until(lambda: server.indexer.flush(1), 5)
    url = f"http://{server.http.address}/v1/span_annotations"
    good = {"span_id": llm.span_id.hex(), "name": "judge", "annotator_kind": "LLM", "result": {"score": 1}}
    cases = {
        b"not json": "not JSON",
        b'{"annotations": []}': '{"data"',
        json.dumps({"data": [{**good, "annotator_kind": "ROBOT"}]}).encode(): "annotator_kind",
        json.dumps({"data": [{**good, "result": {"score": "high"}}]}).encode(): "result.score",
        json.dumps({"data": [{**good, "span_id": "xyz"}]}).encode(): "span_id",
        json.dumps({"data": [{**good, "name": ""}]}).encode(): "name",
    }
    for body, reason in cases.items():
        status, answer = _post(url, body)
        assert status == 422 and reason in answer["detail"], (body, answer)
    assert _post(url, json.dumps({"data": [{**good, "name": "note"}]}).encode())[0] == 400
    assert _post(url + "?sync=maybe", json.dumps({"data": [good]}).encode())[0] == 422
    assert _post(url, json.dumps({"data": []}).encode()) == (200, {"data": []})
    # More span ids than SQLite takes parameters: still one answer (404 naming them with sync), no 5xx.
    many = [{**good, "span_id": f"{index:016x}"} for index in range(40_000)]
    status, answer = _post(url + "?sync=true", json.dumps({"data": many}).encode())
    assert status == 404 and "0000000000000013 and 39980 more do not exist" in answer["detail"]
    counters = fetch(server.address).counters
    assert counters["annotations.requests_refused"] == 8 and counters["annotations.recorded"] == 0


def test_tokens_are_checked_as_on_the_otlp_endpoints(tmp_path):
    tokens = {"exporter": "exp-token", "trainer": "train-token", "worker": "work-token"}
    config = CollectorConfig(
        listen="127.0.0.1:0", http_listen="127.0.0.1:0", store_path=tmp_path / "c.db", tokens=tokens
    )
    with CollectorServer(config) as server:
        base_url = f"http://{server.http.address}"
        body = json.dumps({"data": []}).encode()
        assert _post(f"{base_url}/v1/span_annotations", body)[0] == 401
        assert _post(f"{base_url}/v1/span_annotations", body, tokens["worker"])[0] == 403
        assert _post(f"{base_url}/v1/span_annotations", body, tokens["exporter"])[0] == 200
        # Phoenix's client sends its api_key as the bearer token.
        annotation = {"span_id": "0123456789abcdef", "annotation_name": "x", "score": 1.0}
        (refused,) = phoenix_client(base_url, [["add_span_annotation", annotation]], api_key="wrong")
        (accepted,) = phoenix_client(base_url, [["add_span_annotation", annotation]], api_key=tokens["trainer"])
        assert refused["status"] == 401 and accepted == {"result": None}


def test_openinference_annotation_attributes_are_rewards_of_the_span_they_rate(server):
    attributes = {
        "annotations.0.annotation.name": "hallucination",
        "annotations.0.annotation.score": 0,
        "annotations.0.annotation.label": "grounded",
        "annotations.1.annotation.name": "tone",
        "annotations.1.annotation.label": "polite",  # no score: not a reward
        "evaluations.0.evaluation.name": "correctness",
        "evaluations.0.evaluation.score": 0.75,
        "evaluations.1.evaluation.score": 1.0,  # no name: not a result (the spec requires one)
    }
    assert [(a.name, a.score) for a in span_annotations(attributes)] == [
        ("hallucination", 0.0),
        ("tone", None),
        ("correctness", 0.75),
    ]
    assert [(r.name, r.score, r.span_id) for r in annotation_rewards(attributes, 9, b"s")] == [
        ("hallucination", 0.0, b"s"),
        ("correctness", 0.75, b"s"),
    ]
    # The same result in both forms counts once (the spec: their fields must match).
    both = {
        "annotations.0.annotation.name": "j",
        "annotations.0.annotation.score": 1,
        **{"evaluations.0.evaluation.name": "j", "evaluations.0.evaluation.score": 1.0},
    }
    assert len(annotation_rewards(both, 9, b"s")) == 1
    # Through the collector: the step the annotations sit on gets them as its reward.
    spans = SpanFactory(rollout_id="r-attrs")
    llm = spans.llm(
        "2+2?", "4", **{"evaluations.0.evaluation.name": "correctness", "evaluations.0.evaluation.score": 1}
    )
    exporter(server.address)(export_request(llm, spans.root()))
    events = wait_for_rollouts(server.address, 1)
    (completed,) = rollouts(events)
    (step,) = transitions(events)
    assert completed.has_reward and completed.total_reward == pytest.approx(1.0) and step.reward == pytest.approx(1.0)
