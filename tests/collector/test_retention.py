"""Retention: completed rollouts' spans and acknowledged events go after --retain-hours (or beyond a byte
budget), in the background; nothing unacknowledged or open goes; the file gives the space back; a
reader behind retention is told where the kept events start."""

from __future__ import annotations

import logging
import os
import sqlite3
import time

import grpc
import pytest

from otel_lightning.stream_client import TransitionStreamClient
from otel_lightning_collector import CollectorConfig, CollectorServer, store_retention
from otel_lightning_collector.store import Store
from tests.collector.test_completion import raw_exporter
from tests.support import SpanFactory, export_request, read_all, rollouts, wait_for_rollouts, wait_until

RETAIN_S = 60.0


def collector(tmp_path, **overrides) -> CollectorServer:
    settings = {"retain_s": RETAIN_S, "retention_interval_s": 3600, **overrides}  # swept by hand, at chosen times
    config = CollectorConfig(**{"listen": "127.0.0.1:0", "store_path": tmp_path / "c.db", **settings})
    return CollectorServer(config)


def export_rollouts(server: CollectorServer, first: int, count: int, prompt_chars: int = 100) -> None:
    export = raw_exporter(server.address)
    for index in range(first, first + count):
        spans = SpanFactory(rollout_id=f"r{index:04d}")
        request = export_request(spans.llm("q" * prompt_chars, "a"), spans.reward(1.0), spans.root())
        export(request.SerializeToString(), timeout=30)


def consume(server: CollectorServer, consumer: str, rollout_count: int) -> int:
    """Read every event as a durable consumer, acking those up to the `rollout_count`th completion;
    returns that sequence once the collector has stored the ack."""
    seen, acked = 0, 0
    with TransitionStreamClient(server.address, consumer, follow=False) as client:
        for event in client:  # to the end: the client passes its last ack on before the call closes
            if seen < rollout_count:
                client.ack(event.sequence)
                acked = event.sequence
                seen += event.HasField("rollout")
    assert wait_until(lambda: server.store.consumers().get(consumer) == acked, timeout_s=10)
    return acked


def later(seconds: float) -> int:
    return time.time_ns() + int(seconds * 1e9)


def test_old_completed_rollouts_and_acked_events_go_and_nothing_else(tmp_path):
    with collector(tmp_path) as server:
        export_rollouts(server, 0, 10)
        open_rollout = SpanFactory(rollout_id="r-open")
        raw_exporter(server.address)(export_request(open_rollout.llm("q", "a")).SerializeToString(), timeout=30)
        wait_for_rollouts(server.address, 10)
        acked = consume(server, "trainer", 6)  # the trainer has taken 6 of the 10
        server.retention.sweep()  # marks where the event log is now
        server.retention.sweep(now_ns=later(RETAIN_S * 2))  # ...and, a retention window later, deletes
        counters = server.retention.counters
        assert counters.rollouts_deleted == 10 and counters.spans_deleted == 30
        assert counters.events_deleted == acked  # every event the trainer acked, none after
        db = server.store.reader()
        assert db.execute("SELECT COUNT(*) FROM spans").fetchone()[0] == 1  # the open rollout's span
        assert db.execute("SELECT MIN(sequence) FROM events").fetchone()[0] == acked + 1
        # The trainer goes on where it was: nothing it had not acked is missing.
        with TransitionStreamClient(server.address, "trainer", follow=False) as client:
            rest = list(client)
        assert [e.rollout.rollout_id for e in rest if e.HasField("rollout")] == [f"r{i:04d}" for i in range(6, 10)]
        # A reader asking for deleted events is told where the kept ones start.
        with pytest.raises(grpc.RpcError) as behind:
            read_all(server.address)
        assert behind.value.code() == grpc.StatusCode.OUT_OF_RANGE
        assert f"the first event kept is {acked + 1}" in behind.value.details()
        assert f"start_after={acked}" in behind.value.details()
        assert len(rollouts(read_all(server.address, start_after=acked))) == 4
        # A new durable consumer may start past them too.
        with TransitionStreamClient(server.address, "newcomer", follow=False, start_after=acked) as client:
            assert sum(e.HasField("rollout") for e in client) == 4


def test_nothing_younger_than_the_window_goes(tmp_path):
    with collector(tmp_path) as server:
        export_rollouts(server, 0, 5)
        wait_for_rollouts(server.address, 5)
        consume(server, "trainer", 5)
        server.retention.sweep()
        server.retention.sweep(now_ns=later(RETAIN_S / 2))
        assert server.retention.counters.rollouts_deleted == 0 and server.retention.counters.events_deleted == 0


def test_the_store_file_gives_the_space_back(tmp_path):
    """New stores use incremental vacuum: after retention the file shrinks (kept free pages aside)."""
    with collector(tmp_path) as server:
        assert store_retention.auto_vacuum_mode(server.store) == 2
        export_rollouts(server, 0, 200, prompt_chars=20_000)
        wait_for_rollouts(server.address, 200, timeout_s=60)
        consume(server, "trainer", 200)
        before = store_retention.used_bytes(server.store) + free_bytes(server.store)
        server.retention.sweep()
        server.retention.sweep(now_ns=later(RETAIN_S * 2))
        assert server.retention.counters.pages_given_back > 0
        after = store_retention.used_bytes(server.store) + free_bytes(server.store)
        assert after < before / 3, (before, after)
        # The file itself shrinks once the store's checkpointer has copied the WAL back.
        assert wait_until(lambda: os.path.getsize(server.store.path) <= after, timeout_s=30)


def free_bytes(store: Store) -> int:
    db = store.reader()
    return db.execute("PRAGMA freelist_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0]


def test_a_byte_budget_deletes_oldest_first_but_never_what_is_not_acked(tmp_path, caplog):
    budget = 5 * 1024 * 1024  # 64 KiB pages: an empty store is ~1.6 MB of one page per table and index
    with collector(tmp_path, retain_s=None, retain_bytes=budget) as server:
        export_rollouts(server, 0, 200, prompt_chars=20_000)
        wait_for_rollouts(server.address, 200, timeout_s=60)
        consume(server, "trainer", 200)
        assert store_retention.used_bytes(server.store) > 2 * budget
        server.retention.sweep()
        assert store_retention.used_bytes(server.store) <= budget
        assert server.retention.counters.rollouts_deleted > 0
        # A consumer that stopped acking holds every event after its ack, whatever the budget, and is named.
        start = server.store.last_sequence()
        export_rollouts(server, 200, 200, prompt_chars=20_000)
        assert wait_until(lambda: server.assembler.completed == 400, timeout_s=60)
        stalled = TransitionStreamClient(server.address, "stalled", follow=False, start_after=start, max_in_flight=4096)
        with stalled as client:
            for event in client:
                client.ack(event.sequence) if event.sequence == start + 1 else None
        assert wait_until(lambda: server.store.consumers().get("stalled") == start + 1, timeout_s=10)
        stalled_at = server.store.consumers()["stalled"]
        with caplog.at_level(logging.WARNING):
            server.retention.sweep()
        assert store_retention.deleted_through(server.store) <= stalled_at
        assert server.retention.counters.sweeps_over_budget >= 1
        assert "stalled at" in caplog.text


def test_an_older_store_reuses_freed_pages_and_says_how_to_convert(tmp_path, caplog):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE made_before (x)")  # tables exist: auto_vacuum can no longer be set in place
    old.close()
    with caplog.at_level(logging.WARNING), collector(tmp_path, store_path=path) as server:
        assert store_retention.auto_vacuum_mode(server.store) == 0
        assert "PRAGMA auto_vacuum=INCREMENTAL; VACUUM" in caplog.text
        export_rollouts(server, 0, 50, prompt_chars=20_000)
        wait_for_rollouts(server.address, 50, timeout_s=60)
        consume(server, "trainer", 50)
        server.retention.sweep()
        server.retention.sweep(now_ns=later(RETAIN_S * 2))
        pages = server.store.reader().execute("PRAGMA page_count").fetchone()[0]
        export_rollouts(server, 50, 50, prompt_chars=20_000)  # as much again: it fits in the freed pages
        wait_until(lambda: server.assembler.completed == 100, timeout_s=60)
        assert server.store.reader().execute("PRAGMA page_count").fetchone()[0] <= pages * 1.1
