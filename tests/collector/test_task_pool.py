"""The task pool over real gRPC and a real SQLite file: leases, expiry, requeue, attempts, restarts."""

from __future__ import annotations

import json
import sqlite3
import time

from otel_lightning.task_client import TaskPoolClient
from otel_lightning_collector import CollectorConfig, CollectorServer


def pool_server(tmp_path, **config) -> CollectorServer:
    """A collector on the test's store; use it as a context manager (start, then stop). Requeued
    samples are claimable at once unless the test asks for a backoff."""
    config.setdefault("retry_backoff_s", 0.0)
    return CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "pool.db", **config))


def test_group_of_samples_is_claimed_each_with_its_own_rollout_id(tmp_path):
    with pool_server(tmp_path) as server:
        pool = TaskPoolClient(server.address)
        assert pool.submit([("add", {"question": "1+1"})], group_size=3) == 1
        assert pool.submit([("add", {"question": "1+1"})], group_size=3) == 0  # known ids are kept
        leases = [pool.claim("w1", wait_s=0) for _ in range(3)]
        assert pool.claim("w1", wait_s=0) is None
        assert sorted(lease.sample for lease in leases) == [0, 1, 2]
        assert len({lease.rollout_id for lease in leases}) == 3
        assert json.loads(leases[0].input_json) == {"question": "1+1"}
        assert all(pool.complete(lease.lease_id, "succeeded") for lease in leases)
        assert not pool.complete(leases[0].lease_id, "succeeded")  # not held any more
        assert pool.stats() == {"queued": 0, "leased": 0, "done": 3, "failed": 0}


def test_expired_lease_is_requeued_then_failed_after_max_attempts(tmp_path):
    with pool_server(tmp_path, max_attempts=2) as server:
        pool = TaskPoolClient(server.address)
        pool.submit([("t", {})])
        first = pool.claim("crashing-worker", lease_s=0.2, wait_s=0)
        time.sleep(0.3)
        assert not pool.heartbeat(first.lease_id)
        second = pool.claim("w2", lease_s=0.2, wait_s=0)
        assert (second.task_id, second.attempt) == ("t", 1)
        assert second.rollout_id != first.rollout_id
        assert not pool.complete(first.lease_id, "succeeded")  # the crashed worker's late word is refused
        time.sleep(0.3)
        assert pool.claim("w3", wait_s=0) is None
        sample = server.task_pool.sample("t", 0)
        assert (sample["state"], sample["attempts"]) == ("failed", 2)
        assert "lease of worker 'w2' expired" in sample["error"]


def test_heartbeat_keeps_a_lease_and_requeue_counts_an_attempt(tmp_path):
    with pool_server(tmp_path, max_attempts=3) as server:
        pool = TaskPoolClient(server.address)
        pool.submit([("t", {})])
        lease = pool.claim("w", lease_s=1.0, wait_s=0)
        for _ in range(3):
            time.sleep(0.6)  # three heartbeats outlive the first lease only because each renews it
            assert pool.heartbeat(lease.lease_id)
        assert pool.complete(lease.lease_id, "timeout", "TimeoutError", "agent took too long", requeue=True)
        again = pool.claim("w", wait_s=0)
        assert again.attempt == 1
        assert server.task_pool.sample("t", 0)["error"] == "TimeoutError: agent took too long"


def test_claim_waits_for_a_task_submitted_meanwhile(tmp_path):
    import threading

    with pool_server(tmp_path) as server:
        pool = TaskPoolClient(server.address)
        threading.Timer(0.2, lambda: pool.submit([("late", {})])).start()
        lease = pool.claim("w", wait_s=5)
        assert lease is not None and lease.task_id == "late"


def test_pool_survives_a_collector_restart(tmp_path):
    with pool_server(tmp_path) as server:
        pool = TaskPoolClient(server.address)
        pool.submit([("a", {"n": 1}), ("b", {"n": 2})])
        held = pool.claim("w", lease_s=60, wait_s=0)
    with pool_server(tmp_path) as server:
        pool = TaskPoolClient(server.address)
        assert pool.stats() == {"queued": 1, "leased": 1, "done": 0, "failed": 0}
        assert pool.complete(held.lease_id, "succeeded")
        assert json.loads(pool.claim("w", wait_s=0).input_json) == {"n": 2}


def test_a_heartbeat_renews_the_lease_for_its_own_length(tmp_path):
    with pool_server(tmp_path) as server:
        pool = TaskPoolClient(server.address)
        pool.submit([("t", {})])
        lease = pool.claim("w", lease_s=0.5, wait_s=0)
        assert pool.heartbeat(lease.lease_id)
        time.sleep(0.8)  # renewed for 0.5 s, not longer: the lease is gone
        assert not pool.heartbeat(lease.lease_id)
        assert pool.claim("w2", wait_s=0).attempt == 1


def test_a_task_names_its_model_server_and_its_samples_can_be_looked_up(tmp_path):
    with pool_server(tmp_path) as server:
        pool = TaskPoolClient(server.address)
        pool.submit([("t", {"q": 1})], group_size=2, openai_base_url="http://10.0.0.7:8000/v1")
        lease = pool.claim("w", lease_s=30)
        assert lease.openai_base_url == "http://10.0.0.7:8000/v1"
        pool.complete(lease.lease_id, "failed", "ValueError", "bad")
        states = {s.sample: s for s in pool.sample_states("t")}
        assert (states[lease.sample].state, states[lease.sample].status) == ("done", "failed")
        assert states[lease.sample].rollout_id == lease.rollout_id
        assert states[1 - lease.sample].state == "queued"
        assert pool.sample_states("unknown") == []


def test_a_store_from_before_task_base_urls_is_migrated(tmp_path):
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE tasks (task_id TEXT PRIMARY KEY, input_json TEXT NOT NULL, group_size INTEGER NOT NULL,"
            " submitted_ns INTEGER NOT NULL)"
        )
        db.execute("INSERT INTO tasks VALUES ('old', '{}', 1, 0)")
    with CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=path)) as server:
        pool = TaskPoolClient(server.address)
        pool.submit([("new", {})], openai_base_url="http://h/v1", policy_version="3")
        lease = pool.claim("w", lease_s=30)
        assert (lease.openai_base_url, lease.policy_version) == ("http://h/v1", "3")


def test_a_requeued_sample_waits_a_growing_backoff_before_it_can_be_claimed_again(tmp_path):
    with pool_server(tmp_path, max_attempts=5, retry_backoff_s=0.5) as server:
        pool = TaskPoolClient(server.address)
        pool.submit([("t", {})])
        lease = pool.claim("w", lease_s=30, wait_s=0)
        waits = []
        for _ in range(2):
            assert pool.complete(lease.lease_id, "failed", requeue=True)
            requeued = time.monotonic()
            assert pool.claim("w", wait_s=0) is None  # not yet
            lease = pool.claim("w", lease_s=30, wait_s=5)
            assert lease is not None
            waits.append(time.monotonic() - requeued)
        assert 0.4 < waits[0] < 1.5 and 0.9 < waits[1] < 2.5  # 0.5 s, then 1 s
