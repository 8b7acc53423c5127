"""Several collectors serving one trainer: rollouts routed by id, each whole on one collector."""

from __future__ import annotations

import contextlib
import time

import pytest
from opentelemetry import trace

import otel_lightning as ol
from otel_lightning import semconv
from otel_lightning.merged_stream import MergedTransitionStream
from otel_lightning.train.trainer import RolloutGroups
from otel_lightning_collector import CollectorConfig, CollectorServer
from tests.collector.fanout import TraceFanOut


def run_rollout(task_id: str, attempt: int) -> None:
    tracer = trace.get_tracer("test")
    with ol.rollout(task_id=task_id, attempt=attempt):
        for step in range(2):
            with tracer.start_as_current_span("chat", attributes={semconv.SPAN_KIND: semconv.SPAN_KIND_LLM}) as span:
                span.set_attribute(semconv.GEN_AI_INPUT_MESSAGES, f'[{{"role":"user","content":"{task_id} {step}"}}]')
                span.set_attribute(semconv.GEN_AI_OUTPUT_MESSAGES, '[{"role":"assistant","content":"ok"}]')
        ol.emit_reward(float(attempt))


@pytest.mark.parametrize("routing", ["traceID", "rollout_id"])
def test_one_trainer_gets_every_rollout_once_and_whole_from_three_collectors(tmp_path, route_spans, routing):
    tasks = [f"task-{index}" for index in range(6)]
    with contextlib.ExitStack() as stack:
        collectors = [
            stack.enter_context(
                CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / f"c{index}.db"))
            )
            for index in range(3)
        ]
        fanout = stack.enter_context(TraceFanOut([c.address for c in collectors], by=routing))
        processor = route_spans(fanout.address)
        for task_id in tasks:
            for attempt in range(3):
                run_rollout(task_id, attempt)
        assert processor.force_flush(10_000)

        stream = MergedTransitionStream([c.address for c in collectors], consumer="trainer")
        groups = RolloutGroups(stream)
        collected = groups.collect({task_id: 3 for task_id in tasks}, timeout_s=30)
        groups.ack_consumed()

        records = [record for task_id in tasks for record in collected[task_id]]
        assert len(records) == 18 and len({r.rollout_id for r in records}) == 18  # each once
        assert all(r.status == "succeeded" and len(r.transitions) == 2 for r in records)  # each whole
        assert sorted(r.reward for r in records) == sorted([0.0, 1.0, 2.0] * 6)
        # Every rollout's spans sit on exactly one collector, and the work was spread over all three.
        homes: dict[str, set[int]] = {}
        for index, collector in enumerate(collectors):
            with collector.store.reader() as db:
                for (rollout_id,) in db.execute("SELECT DISTINCT rollout_id FROM spans"):
                    homes.setdefault(rollout_id, set()).add(index)
        assert all(len(home) == 1 for home in homes.values())
        assert {next(iter(home)) for home in homes.values()} == {0, 1, 2}
        # The acks reached each collector: a new subscription under the same name starts after them.
        deadline = time.monotonic() + 10
        while any(c.store.acked_sequence("trainer") < c.store.last_sequence() for c in collectors):
            assert time.monotonic() < deadline, "acks did not reach every collector"
            time.sleep(0.02)
        stream.close()
