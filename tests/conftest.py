"""Shared fixtures: one global SDK TracerProvider whose export target each test chooses."""

from __future__ import annotations

import asyncio
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as OTLPHttpSpanExporter
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_lightning import ensure_rollout_processor
from otel_lightning.testing.openai_stub import StubOpenAIServer
from otel_lightning.train.policies import build_policy
from otel_lightning.train.policy import TorchPolicy
from otel_lightning.train.policy_server import PolicyServer
from otel_lightning_collector import CollectorConfig, CollectorServer


class SwitchableProcessor(SpanProcessor):
    """The global provider can be set once per process; tests swap the processor behind it."""

    def __init__(self) -> None:
        self.current: SpanProcessor | None = None
        self._lock = threading.Lock()

    def on_start(self, span: Span, parent_context=None) -> None:
        if self.current is not None:
            self.current.on_start(span, parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.current is not None:
            self.current.on_end(span)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.current.force_flush(timeout_millis) if self.current else True

    def shutdown(self) -> None:
        return None


# Agent subprocesses of the tests run under `opentelemetry-instrument`, which starts every installed
# instrumentor. OpenInference's Agents SDK instrumentor (installed to test composing with it, which
# one test does by hand) imports the SDK in each of them (~2 s); agents that never use it skip that.
os.environ.setdefault("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "openai_agents")

_SWITCH = SwitchableProcessor()
_PROVIDER = TracerProvider()
ensure_rollout_processor(_PROVIDER)
_PROVIDER.add_span_processor(_SWITCH)
trace.set_tracer_provider(_PROVIDER)


@pytest.fixture(autouse=True)
def _close_the_event_loop_a_test_left() -> Iterator[None]:
    """A library may leave an event loop open as the thread's default: the Agents SDK's `Runner.run_sync`
    does, on purpose (for loop-bound helpers between runs). A later `asyncio.run` drops it unclosed, and
    the garbage collector may then close its self-pipe before the loop ("Exception ignored in
    BaseEventLoop.__del__ ... Invalid file descriptor: -1" at the end of a CI run). Closed after each
    test instead. (verl's agent loops keep theirs where this cannot see it: the verl tests close those.)"""
    yield
    policy = asyncio.get_event_loop_policy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            loop = policy.get_event_loop()
        except RuntimeError:  # none left
            return
    if not loop.is_running() and not loop.is_closed():
        loop.close()
    policy.set_event_loop(None)


@pytest.fixture
def memory_exporter() -> Iterator[InMemorySpanExporter]:
    """Spans of the test, kept in memory (exported synchronously as each span ends)."""
    exporter = InMemorySpanExporter()
    _SWITCH.current = SimpleSpanProcessor(exporter)
    yield exporter
    _SWITCH.current = None


@pytest.fixture
def collector(tmp_path: Path) -> Iterator[CollectorServer]:
    server = CollectorServer(CollectorConfig(listen="127.0.0.1:0", store_path=tmp_path / "collector.db"))
    with server:
        yield server


class OtlpExport:
    """The test's spans go over real OTLP (gRPC, or HTTP to an `http://.../v1/traces` URL) to a
    collector; `flush()` waits for the acks."""

    def __init__(self, address: str) -> None:
        if address.startswith("http://"):
            exporter = OTLPHttpSpanExporter(endpoint=address)
        else:
            exporter = OTLPSpanExporter(endpoint=f"http://{address}", insecure=True)
        self.processor = BatchSpanProcessor(exporter, schedule_delay_millis=50)

    def flush(self) -> None:
        assert self.processor.force_flush(10_000), "spans were not exported within 10 s"


@pytest.fixture
def otlp_export(collector: CollectorServer) -> Iterator[OtlpExport]:
    export = OtlpExport(collector.address)
    _SWITCH.current = export.processor
    yield export
    _SWITCH.current = None
    export.processor.shutdown()


@pytest.fixture(scope="session")
def openai_stub() -> Iterator[StubOpenAIServer]:
    with StubOpenAIServer() as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def _openai_instrumented() -> Iterator[None]:
    from otel_lightning_instrumentation_openai import OpenAIInstrumentor

    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument()
    yield
    instrumentor.uninstrument()


@pytest.fixture
def route_spans() -> Iterator:
    """`route(address)` sends the test's spans over OTLP to that collector (for code that starts its own;
    an `http://.../v1/traces` address: over OTLP/HTTP)."""
    exports: list[OtlpExport] = []

    def route(address: str) -> BatchSpanProcessor:
        export = OtlpExport(address)
        exports.append(export)
        _SWITCH.current = export.processor
        return export.processor

    yield route
    _SWITCH.current = None
    for export in exports:
        export.processor.shutdown()


@pytest.fixture
def policy() -> TorchPolicy:
    """A tiny randomly initialised policy (what the demo starts from, smaller)."""
    return build_policy("tiny", hidden=32, layers=1, seed=1)


@pytest.fixture
def policy_server(policy: TorchPolicy) -> Iterator[PolicyServer]:
    with PolicyServer(policy) as server:
        yield server
