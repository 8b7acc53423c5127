"""The collector's gRPC services under attack, over loopback against its own process: long-lived calls
cannot starve exports, every argument is checked (INVALID_ARGUMENT naming the field), nothing is accepted
that our own clients cannot receive, files are closed, and start-up problems are one clear line."""

from __future__ import annotations

import math
import os
import queue
import shutil
import socket
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from otel_lightning.task_client import TaskPoolClient
from otel_lightning.v1 import status_pb2, status_pb2_grpc, tasks_pb2, tasks_pb2_grpc
from otel_lightning.v1 import transitions_pb2 as pb
from otel_lightning_collector.store import Store
from otel_lightning_collector.task_pool import MAX_TASK_BYTES
from tests.collector.hardening_support import MB, Collector, GoodExporter, PeakRss, post_head, raw_http, rollout_request
from tests.support import SpanFactory, export_request, free_port, wait_until

SUBSCRIBE = "/otel_lightning.v1.TransitionStream/Subscribe"


@pytest.fixture
def collector(tmp_path) -> Iterator[Collector]:
    server = Collector(tmp_path).start()
    yield server
    server.stop()


class Stream:
    """A raw Subscribe call whose requests the test sends one by one."""

    def __init__(self, channel: grpc.Channel, subscribe: pb.Subscribe) -> None:
        self.requests: queue.Queue[pb.SubscribeRequest | None] = queue.Queue()
        self.requests.put(pb.SubscribeRequest(subscribe=subscribe))
        call = channel.stream_stream(
            SUBSCRIBE,
            request_serializer=pb.SubscribeRequest.SerializeToString,
            response_deserializer=pb.StreamEvent.FromString,
        )
        self.call = call(iter(self.requests.get, None))

    def ack(self, sequence: int) -> None:
        self.requests.put(pb.SubscribeRequest(ack=pb.Ack(sequence=sequence)))

    def close(self) -> None:
        self.requests.put(None)
        self.call.cancel()


def open_when_free(channel: grpc.Channel, timeout_s: float = 10.0) -> Stream:
    """A follower that got its first event; retried while the streams just closed still hold their slots."""
    deadline = time.monotonic() + timeout_s
    while True:
        stream = Stream(channel, pb.Subscribe(follow=True, from_latest=True))
        try:
            next(stream.call)
            return stream
        except grpc.RpcError as error:
            stream.close()
            if error.code() != grpc.StatusCode.RESOURCE_EXHAUSTED or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def error_of(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as raised:
        for _ in call:
            pass
    return raised.value


def test_followers_and_waiting_claims_cannot_starve_exports(collector):
    """Before: one pool of 32 threads; 32 idle followers or 32 waiting claims and every export timed out."""
    channel = grpc.insecure_channel(collector.address)
    pool = tasks_pb2_grpc.TaskPoolStub(channel)
    threads_before = collector.threads()
    with GoodExporter(collector):
        streams = [Stream(channel, pb.Subscribe(follow=True, from_latest=True)) for _ in range(40)]
        claims = [
            pool.Claim.future(tasks_pb2.ClaimRequest(worker="w", lease_s=10, wait_s=6), timeout=30) for _ in range(100)
        ]
        time.sleep(2)
        refused = [s for s in streams if s.call.done()]
        assert len(refused) == 40 - 16  # the default bound: 16 streams
        for stream in refused:
            assert stream.call.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "at most 16 transition streams" in stream.call.details()
        answered_at_once = [c for c in claims if c.done()]
        assert len(answered_at_once) == 100 - 64  # past 64 waiting claims, a claim does not wait
        assert all(not c.result().HasField("lease") for c in answered_at_once)
        threads_during = collector.threads()
    # Threads are bounded by the pool (32 + 16 + 64) and one ack reader per stream.
    assert threads_during <= threads_before + 32 + 16 + 64 + 16 + 8
    for stream in streams:
        stream.close()
    assert all(not c.result().HasField("lease") for c in claims)
    channel.close()
    assert collector.wait_for_good_rollouts()


def test_metrics_scrapes_do_not_leak_files(tmp_path):
    """Before: each scrape's thread opened a store reader never closed (~2 h to 1024 fds at 15 s scrapes)."""
    metrics_port = free_port()
    server = Collector(tmp_path, "--metrics-listen", f"127.0.0.1:{metrics_port}").start()
    try:
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert wait_until(lambda: b"lightning" in urllib.request.urlopen(url, timeout=5).read(), 20)
        fds_before = server.fds()
        for _ in range(8):  # a report is read at most once a second: scrapes a second apart each read one
            time.sleep(1.05)
            assert b"lightning_collector" in urllib.request.urlopen(url, timeout=5).read()
        assert server.fds() <= fds_before + 2, (fds_before, server.fds())
        status = status_pb2_grpc.CollectorStatusStub(grpc.insecure_channel(server.address))
        status.GetStatus(status_pb2.StatusRequest(), timeout=5)
    finally:
        server.stop()


def test_an_ack_beyond_what_was_sent_is_refused_and_nothing_is_skipped(collector):
    for _ in range(3):
        collector.good_export()
    assert collector.wait_for_good_rollouts()
    channel = grpc.insecure_channel(collector.address)
    for bad_ack in (1_000_000, 2**64 - 1):
        stream = Stream(channel, pb.Subscribe(consumer="trainer", follow=True))
        first = next(stream.call)
        stream.ack(bad_ack)
        error = error_of(stream.call)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"ack.sequence {bad_ack} is beyond the last sequence sent" in error.details()
        assert first.sequence >= 1
    # The consumer's position did not move: it still gets every event from the first.
    stream = Stream(channel, pb.Subscribe(consumer="trainer", follow=False))
    sequences = []
    for event in stream.call:
        if event.HasField("caught_up"):
            break
        sequences.append(event.sequence)
    stream.close()
    assert sequences[0] == 1 and sequences == list(range(1, len(sequences) + 1))
    # A reconnecting consumer re-sends its last ack first, up to its start_after: that one is fair.
    stream = Stream(channel, pb.Subscribe(consumer="resumer", start_after=2, follow=True))
    stream.ack(2)
    next(stream.call)
    time.sleep(1)  # an ack refused would end the call within the stream's 0.5 s poll
    assert not stream.call.done()
    stream.close()
    channel.close()
    collector.good_export()  # the collector is whole


@pytest.mark.parametrize("start_after", [2**63, 2**64 - 1])
def test_start_after_past_what_the_store_can_hold_is_invalid(collector, start_after):
    channel = grpc.insecure_channel(collector.address)
    error = error_of(Stream(channel, pb.Subscribe(start_after=start_after)).call)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "start_after" in error.details()
    channel.close()


@pytest.mark.parametrize(
    ("lease_s", "wait_s", "field"),
    [
        *((lease_s, 0, "lease_s") for lease_s in (math.nan, math.inf, 1e9, -1, 0)),
        *((10, wait_s, "wait_s") for wait_s in (math.nan, -math.inf)),
    ],
)
def test_claim_arguments_are_checked(collector, lease_s, wait_s, field):
    pool = tasks_pb2_grpc.TaskPoolStub(grpc.insecure_channel(collector.address))
    with pytest.raises(grpc.RpcError) as refused:
        pool.Claim(tasks_pb2.ClaimRequest(worker="w", lease_s=lease_s, wait_s=wait_s), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith(field)


def test_a_task_our_workers_could_not_receive_is_refused_at_submit(collector):
    """Before: a 5 MiB input was accepted; each worker that claimed it died, the lease expired, and so on."""
    client = TaskPoolClient(collector.address)
    with pytest.raises(grpc.RpcError) as refused:
        client.submit([("too-big", "x" * (5 * MB))])
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input_json" in refused.value.details() and "at most" in refused.value.details()
    # The largest task accepted reaches a worker through our own client (4 MiB receive limit).
    largest = "y" * (MAX_TASK_BYTES - len("largest") - 2 - 16)
    assert client.submit([("largest", largest)]) == 1
    lease = client.claim("w", lease_s=10, wait_s=1)
    assert lease is not None and len(lease.input_json) == len(largest) + 2


@pytest.mark.parametrize(("tasks", "group_size"), [(1, 5_000_000), (1, 2**32 - 1), (200, 1000)])
def test_group_sizes_are_bounded_and_exports_go_on(collector, tasks, group_size):
    """Before: group_size 5,000,000 blocked every export for 18 s; 2^32-1 ran out of memory."""
    pool = tasks_pb2_grpc.TaskPoolStub(grpc.insecure_channel(collector.address))
    request = tasks_pb2.SubmitTasksRequest(
        tasks=[tasks_pb2.Task(task_id=f"t{n}", input_json="{}", group_size=group_size) for n in range(tasks)]
    )
    with GoodExporter(collector):
        with pytest.raises(grpc.RpcError) as refused:
            pool.Submit(request, timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "group_size" in refused.value.details() or "samples" in refused.value.details()
    assert pool.Stats(tasks_pb2.PoolStatsRequest(), timeout=5).queued == 0


def run_cli(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    command = [*prefix, sys.executable, "-m", "otel_lightning.cli", "collector", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_a_taken_port_is_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for flags in (
            ("--listen", f"127.0.0.1:{port}"),
            ("--listen", "127.0.0.1:0", "--http-listen", f"127.0.0.1:{port}"),
        ):
            result = run_cli(*flags, "--store", str(tmp_path / "c.db"))
            assert result.returncode == 2
            [line] = result.stderr.strip().splitlines()
            assert f"cannot listen on 127.0.0.1:{port}" in line and "Address already in use" in line


def test_a_store_that_cannot_be_written_fails_at_start(tmp_path):
    """Before: it said it was listening, then refused every export forever."""
    store = tmp_path / "ro" / "c.db"
    Store(store).close()
    store.chmod(0o444)
    store.parent.chmod(0o555)
    # root writes anything: drop the capability that lets it, as an ordinary user would not have it.
    prefix = ()
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv to drop CAP_DAC_OVERRIDE")
        prefix = (
            "setpriv",
            "--bounding-set=-dac_override,-dac_read_search",
            "--inh-caps=-dac_override,-dac_read_search",
        )
    try:
        result = run_cli("--listen", "127.0.0.1:0", "--http-listen", "off", "--store", str(store), prefix=prefix)
    finally:
        store.parent.chmod(0o755)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert f"the store {store} cannot be written" in line


def test_store_files_are_private_and_the_cap_counts_the_wal(tmp_path):
    log = tmp_path / "collector.log"
    server = Collector(tmp_path, "--max-store-mb", "5", log=log).start()
    try:
        assert stat.S_IMODE(server.store.parent.stat().st_mode) == 0o700
        refused = 0
        for n in range(200):
            try:
                server.export(big_request(n), timeout=5)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE
                refused += 1
                if refused > 5:
                    break
        assert refused, "the store never filled"
        time.sleep(2.5)  # a checkpoint or two
        files = {p.name: p for p in server.store.parent.iterdir()}
        for name in ("c.db", "c.db-wal", "c.db-shm"):
            if name in files:
                assert stat.S_IMODE(files[name].stat().st_mode) == 0o600, name
        on_disk = sum(p.stat().st_size for name, p in files.items() if name in ("c.db", "c.db-wal"))
        # Before: 13 MB at a 5 MB cap (the WAL was not counted).
        assert on_disk <= 5 * MB, on_disk
    finally:
        server.stop()
    assert "database or disk is full" in log.read_text()
    assert "cannot rollback" not in log.read_text()


def big_request(n: int) -> bytes:
    spans = SpanFactory(rollout_id=f"big-{n}", task_id="big")
    return export_request(spans.llm("p" * 200_000, "a"), spans.reward(1.0), spans.root()).SerializeToString()


def test_tokens_come_from_a_file_not_the_command_line(tmp_path):
    token_file = tmp_path / "exporter.token"
    token_file.write_text("file-secret\n")
    token_file.chmod(0o600)
    server = Collector(tmp_path, "--exporter-token-file", str(token_file))
    server.good_export = lambda timeout_s=1.0: "skipped"  # needs the token
    server.start()
    try:
        assert b"file-secret" not in Path(f"/proc/{server.process.pid}/cmdline").read_bytes()
        with pytest.raises(grpc.RpcError) as refused:
            server.export(rollout_request("no-token"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        server.export(rollout_request("with-token"), timeout=5, metadata=(("authorization", "Bearer file-secret"),))
    finally:
        server.stop()


def test_many_streams_come_and_go_without_growth(collector):
    """A stream's thread keeps its store reader (pool threads are reused); nothing grows per stream."""
    channel = grpc.insecure_channel(collector.address)

    def cycle() -> None:
        streams = [open_when_free(channel) for _ in range(16)]
        for stream in streams:
            stream.close()

    cycle()  # the pool's threads for streams exist from here on
    before = (collector.threads(), collector.fds())
    for _ in range(4):
        cycle()
    channel.close()
    assert wait_until(lambda: collector.threads() <= before[0] + 2, 10), (before, collector.threads())
    assert collector.fds() <= before[1] + 4, (before, collector.fds())


def many_spans_request(count: int) -> bytes:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    spans = SpanFactory(rollout_id="huge", task_id="huge")
    request = ExportTraceServiceRequest.FromString(
        export_request(spans.llm("q", "a"), spans.root()).SerializeToString()
    )
    scope = request.resource_spans[0].scope_spans[0]
    template = scope.spans[0]
    for n in range(count - len(scope.spans)):
        span = scope.spans.add()
        span.CopyFrom(template)
        span.span_id = (n + 1000).to_bytes(8, "big")
    return request.SerializeToString()


def test_a_request_of_more_spans_than_the_backlog_is_refused_for_good(tmp_path):
    """Before: 1,000,001 spans went past the 50k backlog bound (1.5 GB RSS, other exporters refused 26 s)."""
    server = Collector(tmp_path, "--max-pending-spans", "1000").start()
    try:
        raw = many_spans_request(1001)
        with GoodExporter(server), PeakRss(server.psutil) as rss:
            with pytest.raises(grpc.RpcError) as refused:
                server.export(raw, timeout=10)
            status, _ = raw_http(server.http_port, post_head(server.http_port, Content_Length=str(len(raw))), raw)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "the request has 1001 spans; the collector takes at most 1000" in refused.value.details()
        assert status == 413
        assert rss.growth_mb < 100
        server.export(many_spans_request(1000), timeout=10)  # at the bound: taken
        assert server.wait_for_good_rollouts()
    finally:
        server.stop()


def test_errors_are_kept_to_what_a_sample_state_answer_can_carry(collector):
    client = TaskPoolClient(collector.address)
    client.submit([("err", {})])
    lease = client.claim("w", lease_s=10, wait_s=1)
    pool = tasks_pb2_grpc.TaskPoolStub(grpc.insecure_channel(collector.address))
    with pytest.raises(grpc.RpcError) as refused:
        pool.Complete(tasks_pb2.CompleteRequest(lease_id=lease.lease_id, status="x" * 100), timeout=5)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "status" in refused.value.details()
    complete = tasks_pb2.CompleteRequest(
        lease_id=lease.lease_id, status="failed", error_type="Boom", error_message="e" * MB
    )
    assert pool.Complete(complete, timeout=5).accepted
    [state] = pool.SampleStates(tasks_pb2.SampleStatesRequest(task_id="err"), timeout=5).samples
    assert len(state.error.encode()) <= 2048 and state.error.endswith(f"[cut: {MB + 6} bytes]")
