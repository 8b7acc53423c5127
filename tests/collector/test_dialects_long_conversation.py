"""A rollout is a trace: a 200-message LangChain conversation trains although its LLM span lost the
rollout id to the SDK's 128-attribute limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from opentelemetry.proto.trace.v1.trace_pb2 import Span

from otel_lightning import semconv
from otel_lightning_collector.spans import attributes
from tests.support import rollouts, transitions, wait_for_rollouts

AGENT = Path(__file__).with_name("long_conversation_agent.py")


def test_a_200_message_langchain_conversation_trains(collector, openai_stub) -> None:
    env = {**os.environ, "LIGHTNING_REQUEST_TOKEN_IDS": "true"}
    done = subprocess.run(
        [sys.executable, str(AGENT), openai_stub.base_url, collector.address],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rollout_id = done.stdout.strip().splitlines()[-1]
    events = wait_for_rollouts(collector.address, 1, timeout_s=20)
    (completed,) = rollouts(events)
    assert (completed.rollout_id, completed.status) == (rollout_id, "succeeded"), completed
    assert completed.has_reward and completed.total_reward == 1.0
    (step,) = transitions(events)  # the LangChain span and the OpenAI client's inside it: one call
    messages = json.loads(step.state_json)["messages"]
    assert len(messages) == 201 and messages[-1] == {"role": "user", "content": "What is 17 * 23?"}
    assert json.loads(step.action_json)["content"] == "The answer is 391."
    assert bytes(step.response_token_ids).decode() == "The answer is 391."
    # The OpenInference span really lost the rollout id, and joined the rollout by its trace.
    with collector.store.reader() as db:
        bodies = [row[0] for row in db.execute("SELECT body FROM spans WHERE rollout_id = ?", (rollout_id,))]
    langchain = [
        found for body in bodies if "openinference.span.kind" in (found := attributes(Span.FromString(body).attributes))
    ]
    assert langchain and all(semconv.ROLLOUT_ID not in found for found in langchain)
    assert len(langchain[0]) == 128
