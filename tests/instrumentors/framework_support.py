"""What the framework instrumentor tests share: spans by kind, the example agent through a worker."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from otel_lightning import semconv
from otel_lightning.task_client import TaskPoolClient
from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning.worker import SubprocessAgent, Worker
from tests.support import run_until_done, wait_for_rollouts

TASK = {"question": "What is 17+25?", "answer": "42"}
EXAMPLES = Path(__file__).parents[2] / "examples"


def use_stub_model(monkeypatch, openai_stub, *, token_ids: bool = False) -> None:
    """Point the frameworks' OpenAI clients at the stub policy server (asking it for token ids if `token_ids`)."""
    monkeypatch.setenv("OPENAI_BASE_URL", openai_stub.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "unused")
    if token_ids:
        monkeypatch.setenv(semconv.ENV_REQUEST_TOKEN_IDS, "true")


def action_text(action_json: str) -> str:
    """The action without its tool calls' ids: the stub's random call ids may contain any digits."""
    action = json.loads(action_json)
    for call in action.get("tool_calls") or []:
        call.pop("id", None)
    return json.dumps(action)


def by_kind(spans, kind):
    """Finished spans of one `lightning.span.kind`, in start order."""
    return sorted((s for s in spans if s.attributes.get(semconv.SPAN_KIND) == kind), key=lambda s: s.start_time)


def run_example_through_worker(example: Path, collector, otlp_export, openai_stub) -> list[pb.StreamEvent]:
    """`otel-lightning worker -- python EXAMPLE` on one task: a subprocess under `opentelemetry-instrument`,
    where the entry points install every instrumentor; the collector's events once it completed."""
    agent = SubprocessAgent(
        [sys.executable, str(example)], timeout_s=60, openai_base_url=openai_stub.base_url, collector=collector.address
    )
    pool = TaskPoolClient(collector.address)
    pool.submit([("t-sub", TASK)])
    run_until_done(Worker(collector.address, agent, concurrency=1), pool, 1)
    otlp_export.flush()
    return wait_for_rollouts(collector.address, 1, timeout_s=20)
