"""Gateway test fixtures: the real gateway (its own HTTP server on 127.0.0.1) in front of the real vLLM-like stub,
recording into its own SDK TracerProvider with an in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_lightning.testing.openai_stub import StubOpenAIServer
from otel_lightning_gateway import Gateway


@pytest.fixture(scope="module")
def vllm_stub() -> Iterator[StubOpenAIServer]:
    """Like vLLM: token ids only when asked, none on /v1/responses, no policy version."""
    with StubOpenAIServer(policy_version=None) as server:
        yield server


@pytest.fixture
def gateway_exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def gateway_provider(gateway_exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(gateway_exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def gateway(vllm_stub: StubOpenAIServer, gateway_provider: TracerProvider) -> Iterator[Gateway]:
    with Gateway(vllm_stub.base_url, tracer_provider=gateway_provider) as running:
        yield running
