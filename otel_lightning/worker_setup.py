"""What a worker process sets up before it claims tasks: tracing to the collector and the agent."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otel_lightning.channels import ENV_TLS_CA
from otel_lightning.loading import LoadError, load_callable
from otel_lightning.reward_function import RolloutRewardFunction
from otel_lightning.worker_gateway import WorkerGateway


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
    _instrument_in_process_agents()


def _instrument_in_process_agents() -> None:
    """What `opentelemetry-instrument` gives a subprocess agent, for agents run in this process: the OpenAI
    client's calls (with the W3C headers the gateway reads) and the Agents SDK's agent, tool and handoff spans,
    without the SDK's upload of its traces to OpenAI."""
    from otel_lightning import semconv

    os.environ.setdefault(semconv.ENV_VENDOR_TRACE_UPLOAD, "false")
    for module, name in (
        ("otel_lightning_instrumentation_openai", "OpenAIInstrumentor"),
        ("otel_lightning_instrumentation_openai_agents", "OpenAIAgentsInstrumentor"),  # waits for the SDK's import
    ):
        try:
            instrumentor = getattr(importlib.import_module(module), name)()
        except ImportError:
            continue
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument()


def flush_worker_tracing(timeout_ms: int = 10_000) -> bool:
    from opentelemetry import trace

    flush = getattr(trace.get_tracer_provider(), "force_flush", None)
    return flush(timeout_ms) if flush else True


def is_function_spec(command: Sequence[str]) -> bool:
    return len(command) == 1 and ":" in command[0] and not command[0].endswith(".py")


def load_agent(command: Sequence[str], *, collector: str, openai_base_url: str | None, timeout_s: float) -> Any:
    """`["my_agent:run"]`: that function, in this process; anything else: a command run per task.

    An in-process agent's OpenAI client reads OPENAI_BASE_URL when it is made: `openai_base_url` (the
    gateway's, when there is one) is set before the agent's module is imported."""
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


@dataclass
class WorkerParts:
    agent: Any
    gateway: WorkerGateway | None
    reward: RolloutRewardFunction | None


def build_worker_parts(
    command: Sequence[str],
    *,
    collector: str,
    openai_base_url: str | None,
    timeout_s: float,
    gateway: bool = True,
    reward: str | None = None,
    auto_instrument: bool = True,
) -> WorkerParts:
    """The agent, the model gateway in front of the model server (unless `gateway` is False) and the
    reward function (`MODULE:FUNCTION`), as `otel-lightning worker` and its Ray actors use them."""
    reward_function = None
    if reward:
        try:
            reward_function = RolloutRewardFunction(load_callable(reward, "reward function"), name=reward)
        except LoadError as error:
            raise SystemExit(str(error)) from None
    worker_gateway = None
    if gateway:
        # In front of the worker's model server, else the one the environment names; tasks may name their own.
        worker_gateway = WorkerGateway(openai_base_url or os.environ.get("OPENAI_BASE_URL")).start()
    # In-process agents share this process's OPENAI_BASE_URL: the gateway's (calls attributed by their
    # W3C headers, which the OpenAI instrumentor sends); subprocess agents get a URL per rollout.
    agent_base_url = (worker_gateway.base_url if worker_gateway else None) or openai_base_url
    agent = load_agent(command, collector=collector, openai_base_url=agent_base_url, timeout_s=timeout_s)
    if not is_function_spec(command):
        agent.auto_instrument = auto_instrument
        if worker_gateway is not None:
            agent.openai_base_url = openai_base_url  # a rollout's URL comes from its gateway route
    return WorkerParts(agent, worker_gateway, reward_function)
