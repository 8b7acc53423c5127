"""What a worker process sets up before it claims tasks: tracing to the collector and the agent."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from otel_lightning.channels import ENV_TLS_CA


def setup_worker_tracing(collector: str) -> None:
    """Export this process's spans to the collector unless OTel is configured already."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{collector}")
    exporter_options: dict = {"insecure": True}
    tls_ca = os.environ.get(ENV_TLS_CA)
    if tls_ca:  # the collector speaks TLS: trust its CA (the exporter's token comes from OTEL_EXPORTER_OTLP_HEADERS)
        import grpc

        exporter_options = {"credentials": grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())}
    provider = TracerProvider()
    # A rollout is waited for by a trainer: its spans go out within 0.2 s, not the SDK's default 5 s.
    delay_ms = None if "OTEL_BSP_SCHEDULE_DELAY" in os.environ else 200
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, **exporter_options), schedule_delay_millis=delay_ms)
    )
    trace.set_tracer_provider(provider)
    try:
        from otel_lightning_instrumentation_openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument()
    except ImportError:
        pass


def flush_worker_tracing(timeout_ms: int = 10_000) -> bool:
    from opentelemetry import trace

    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    return flush(timeout_ms) if flush else True


def is_function_spec(command: Sequence[str]) -> bool:
    return len(command) == 1 and ":" in command[0] and not command[0].endswith(".py")


def load_agent(command: Sequence[str], *, collector: str, openai_base_url: str | None, timeout_s: float) -> Any:
    """`["my_agent:run"]`: that function, in this process; anything else: a command run per task."""
    from otel_lightning.worker import SubprocessAgent

    if is_function_spec(command):
        module, _, attribute = command[0].partition(":")
        if not module or not attribute:
            raise SystemExit(f"expected MODULE:FUNCTION (e.g. my_agent:run), got {command[0]!r}")
        if openai_base_url:
            os.environ["OPENAI_BASE_URL"] = openai_base_url
        sys.path.insert(0, os.getcwd())
        return getattr(importlib.import_module(module), attribute)
    return SubprocessAgent(list(command), timeout_s=timeout_s, openai_base_url=openai_base_url, collector=collector)
