"""Rollout identity reaches every span: same thread, threads, thread pools and asyncio tasks."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

import otel_lightning as ol
from otel_lightning import semconv

tracer = trace.get_tracer("tests")


def rollout_of(span) -> tuple:
    a = span.attributes
    return a.get(semconv.ROLLOUT_ID), a.get(semconv.TASK_ID), a.get(semconv.ATTEMPT)


def test_context_manager_opens_root_span_and_stamps_children(memory_exporter):
    with ol.rollout(task_id="t-1", attempt=3) as info:
        assert ol.current_rollout() == info
        with tracer.start_as_current_span("work"):
            pass
    assert ol.current_rollout() is None
    spans = {s.name: s for s in memory_exporter.get_finished_spans()}
    assert set(spans) == {"work", semconv.ROLLOUT_SPAN_NAME}
    root = spans[semconv.ROLLOUT_SPAN_NAME]
    assert root.attributes[semconv.SPAN_KIND] == semconv.SPAN_KIND_ROLLOUT
    assert rollout_of(root) == rollout_of(spans["work"]) == (info.rollout_id, "t-1", 3)
    assert spans["work"].parent.span_id == root.context.span_id


def test_threads_and_pools_started_inside_belong_to_the_rollout(memory_exporter):
    def work(name: str) -> None:
        tracer.start_span(name).end()

    with ol.rollout(task_id="threads") as info:
        thread = threading.Thread(target=work, args=("in-thread",))
        thread.start()
        thread.join()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(work, ["in-pool-1", "in-pool-2"]))
    spans = {s.name: s for s in memory_exporter.get_finished_spans()}
    for name in ("in-thread", "in-pool-1", "in-pool-2"):
        assert spans[name].attributes[semconv.ROLLOUT_ID] == info.rollout_id, name


def test_concurrent_asyncio_rollouts_do_not_mix(memory_exporter):
    async def run(task: str) -> str:
        async with asyncio.timeout(5):
            with ol.rollout(task_id=task) as info:
                await asyncio.sleep(0.01)
                await asyncio.create_task(asyncio.sleep(0))
                tracer.start_span(f"step-{task}").end()
                return info.rollout_id

    async def main() -> list[str]:
        return await asyncio.gather(*(run(f"a{i}") for i in range(5)))

    ids = asyncio.run(main())
    spans = {s.name: s for s in memory_exporter.get_finished_spans() if s.name.startswith("step-")}
    assert {name: s.attributes[semconv.ROLLOUT_ID] for name, s in spans.items()} == {
        f"step-a{i}": ids[i] for i in range(5)
    }
    assert len(set(ids)) == 5


def test_decorator_sync_and_async_each_call_is_a_new_rollout(memory_exporter):
    @ol.rollout(task_id="deco")
    def sync_agent() -> str:
        return ol.current_rollout().rollout_id

    @ol.rollout(task_id="deco-async", attempt=1)
    async def async_agent() -> str:
        return ol.current_rollout().rollout_id

    first, second = sync_agent(), sync_agent()
    third = asyncio.run(async_agent())
    assert len({first, second, third}) == 3
    roots = [s for s in memory_exporter.get_finished_spans() if s.name == semconv.ROLLOUT_SPAN_NAME]
    assert sorted(rollout_of(r)[1:] for r in roots) == [("deco", 0), ("deco", 0), ("deco-async", 1)]


def test_exception_marks_root_error_and_propagates(memory_exporter):
    with pytest.raises(ZeroDivisionError), ol.rollout(task_id="boom"):
        1 / 0  # noqa: B018
    [root] = memory_exporter.get_finished_spans()
    assert root.status.status_code == StatusCode.ERROR
    assert root.events[0].attributes["exception.type"] == "ZeroDivisionError"


def test_outside_a_rollout_nothing_is_stamped_and_nothing_breaks(memory_exporter):
    tracer.start_span("plain").end()
    ol.emit_reward(1.0)
    plain, reward_span = memory_exporter.get_finished_spans()
    assert semconv.ROLLOUT_ID not in plain.attributes
    assert semconv.ROLLOUT_ID not in reward_span.attributes


def test_agent_scope_names_the_agent(memory_exporter):
    with ol.rollout(task_id="agents"), ol.agent_scope("planner"):
        tracer.start_span("llm").end()
    span = next(s for s in memory_exporter.get_finished_spans() if s.name == "llm")
    assert span.attributes[semconv.AGENT_NAME] == "planner"


@pytest.mark.parametrize("bad", [dict(task_id=""), dict(task_id="t", attempt=-1), dict(task_id=7)])
def test_invalid_rollout_arguments_are_refused(bad):
    with pytest.raises(ValueError):
        ol.rollout(**bad)
