"""OTLP conformance of what the collector answers: partial_success, throttling codes, RetryInfo,
Retry-After, and admission by memory."""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from otel_lightning_collector import CollectorConfig, CollectorServer
from otel_lightning_collector.memory_limiter import MemoryLimiter
from tests.support import SpanFactory, export_request, wait_until

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def exporter(address: str):
    return grpc.insecure_channel(address).unary_unary(
        EXPORT,
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=ExportTraceServiceResponse.FromString,
    )


def post(url: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/x-protobuf"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def http_traces(server: CollectorServer) -> str:
    return f"http://127.0.0.1:{server.http.port}/v1/traces"


def one_span_request() -> bytes:
    return export_request(SpanFactory().llm("q", "a")).SerializeToString()


def request_with_bad_ids():
    spans = SpanFactory(rollout_id="r-partial")
    good = [spans.llm("q", "a"), spans.root()]
    bad = [spans.llm("q", "a"), spans.reward(1.0)]
    bad[0].span_id = b"\x01\x02\x03"  # not 8 bytes
    bad[1].trace_id = bytes(16)  # all zero
    return export_request(*good, *bad)


def test_partial_success_reports_the_rejected_spans_with_the_reason(tmp_path):
    config = CollectorConfig(listen="127.0.0.1:0", http_listen="127.0.0.1:0", store_path=tmp_path / "c.db")
    with CollectorServer(config) as server:
        response = exporter(server.address)(request_with_bad_ids(), timeout=30)
        assert response.partial_success.rejected_spans == 2
        assert "span_id must be 8 bytes" in response.partial_success.error_message
        status, _, body = post(
            f"http://127.0.0.1:{server.http.port}/v1/traces", request_with_bad_ids().SerializeToString()
        )
        assert status == 200
        assert ExportTraceServiceResponse.FromString(body).partial_success.rejected_spans == 2
        # A request with nothing wrong says nothing.
        clean = export_request(SpanFactory(rollout_id="r-clean").llm("q", "a"))
        assert not exporter(server.address)(clean, timeout=30).HasField("partial_success")
        assert server.flush(30)
        # What the acknowledgement reported is what the indexer keeps aside.
        assert server.indexer.counters.spans_rejected == 4
        assert server.intake.counters.spans_rejected_at_ack == 4
        assert len(server.store.rejected_spans()) == 4


def retry_delay_s(error: grpc.RpcError) -> tuple[float, float]:
    """RetryInfo as the status details carry it and as `google.rpc.retryinfo-bin` does."""
    status = rpc_status.from_call(error)
    info = error_details_pb2.RetryInfo()
    assert status.details[0].Unpack(info)
    from_details = info.retry_delay.ToNanoseconds() / 1e9
    raw = dict(error.trailing_metadata())["google.rpc.retryinfo-bin"]
    from_metadata = error_details_pb2.RetryInfo.FromString(raw).retry_delay.ToNanoseconds() / 1e9
    return from_details, from_metadata


def test_over_the_concurrent_export_limit_is_429_and_resource_exhausted_with_retry_info(tmp_path, caplog):
    """The client sends more than it may at once: 429 / RESOURCE_EXHAUSTED, both saying when to retry."""
    config = CollectorConfig(
        listen="127.0.0.1:0",
        http_listen="127.0.0.1:0",
        store_path=tmp_path / "c.db",
        max_concurrent_exports=1,
    )
    with CollectorServer(config) as server, caplog.at_level(logging.WARNING):
        server.intake._slots.acquire()  # the one slot is taken: every export is over the limit
        with pytest.raises(grpc.RpcError) as refused:
            exporter(server.address)(export_request(SpanFactory().llm("q", "a")), timeout=30)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "concurrent export limit" in refused.value.details()
        assert retry_delay_s(refused.value) == (1.0, 1.0)
        status, headers, _ = post(
            f"http://127.0.0.1:{server.http.port}/v1/traces",
            export_request(SpanFactory().llm("q", "a")).SerializeToString(),
        )
        assert (status, headers.get("Retry-After")) == (429, "1")
        server.intake._slots.release()
    assert server.intake.counters.requests_refused == 2
    assert any("refused 1 export request(s)" in r.getMessage() for r in caplog.records)


def test_an_overloaded_collector_is_503_and_unavailable_with_retry_info(tmp_path):
    """No room for more acknowledged spans (indexing is held, as on a slow disk): the collector, not
    the client, is the limit."""
    config = CollectorConfig(
        listen="127.0.0.1:0", http_listen="127.0.0.1:0", store_path=tmp_path / "c.db", max_pending_spans=1
    )
    with CollectorServer(config) as server:
        disk = threading.Event()
        ingest = server.store.ingest

        def slow_ingest(*args, **kwargs):
            disk.wait(30)
            return ingest(*args, **kwargs)

        server.store.ingest = slow_ingest  # type: ignore[method-assign]
        exporter(server.address)(export_request(SpanFactory().llm("q", "a")), timeout=30)  # fills the backlog
        assert wait_until(lambda: server.indexer.pending_spans == 1, timeout_s=10)
        with pytest.raises(grpc.RpcError) as refused:
            exporter(server.address)(export_request(SpanFactory().llm("q", "a")), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "waiting to be indexed" in refused.value.details()
        assert retry_delay_s(refused.value) == (1.0, 1.0)
        status, headers, _ = post(http_traces(server), one_span_request())
        assert (status, headers.get("Retry-After")) == (503, "1")
        disk.set()


def test_memory_over_the_soft_limit_refuses_while_a_backlog_drains(caplog):
    rss = [100 << 20]
    held = [0]
    limiter = MemoryLimiter(50 << 20, held=lambda: held[0], check_interval_s=0.0, rss=lambda: rss[0])
    with caplog.at_level(logging.WARNING):
        # Over the limit with nothing held: refusing would not free anything; accepted, with a warning.
        assert limiter.refusal() is None
    assert any("below this process's resting size" in r.getMessage() for r in caplog.records)
    held[0] = 5000
    reason = limiter.refusal()
    assert reason is not None and "over its soft limit 50 MB" in reason and "5000" in reason
    rss[0] = 40 << 20
    assert limiter.refusal() is None


def test_memory_limit_refuses_exports_retryably_end_to_end(tmp_path):
    """A real collector with a limit below its RSS: while acknowledged spans wait to be indexed (the
    store's writes are held, as on a slow disk), exports are refused UNAVAILABLE with RetryInfo; once
    the backlog is indexed, exports are accepted again and nothing acknowledged is lost."""
    config = CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "c.db", memory_limit_bytes=1 << 20)
    with CollectorServer(config) as server:
        export = exporter(server.address)
        disk = threading.Event()
        ingest = server.store.ingest

        def slow_ingest(*args, **kwargs):
            disk.wait(30)
            return ingest(*args, **kwargs)

        server.store.ingest = slow_ingest  # type: ignore[method-assign]
        spans = SpanFactory(rollout_id="r-mem")
        export(export_request(spans.llm("q", "a")), timeout=30)  # acknowledged: nothing was held yet
        assert wait_until(lambda: server.indexer.pending_spans == 1, timeout_s=10)
        with pytest.raises(grpc.RpcError) as refused:
            export(export_request(spans.root()), timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "soft limit" in refused.value.details()
        assert retry_delay_s(refused.value)[0] == 2.0
        assert server.intake.counters.requests_refused_memory == 1
        disk.set()
        assert server.flush(30)
        export(export_request(spans.root()), timeout=30)  # accepted again: nothing is held
        assert server.flush(30)
        assert server.indexer.counters.spans_stored == 2
