"""`otel-lightning worker`: run an agent for each task of a collector's pool.

otel-lightning worker --collector 127.0.0.1:4317 --openai-base-url URL -- python my_agent.py
otel-lightning worker --collector 127.0.0.1:4317 --concurrency 8 my_agent:run
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import Any


def _load(spec: str) -> Any:
    module, _, attribute = spec.partition(":")
    if not module or not attribute:
        raise SystemExit(f"expected MODULE:FUNCTION (e.g. my_agent:run), got {spec!r}")
    sys.path.insert(0, os.getcwd())
    return getattr(importlib.import_module(module), attribute)


def _setup_tracing(collector: str) -> None:
    """Export this process's spans to the collector unless OTel is configured already."""
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://{collector}")
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    trace.set_tracer_provider(provider)
    try:
        from otel_lightning_instrumentation_openai import OpenAIInstrumentor

        OpenAIInstrumentor().instrument()
    except ImportError:
        pass


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("worker", help="claim tasks from a collector and run an agent on each")
    parser.add_argument("--collector", default=os.environ.get("LIGHTNING_COLLECTOR", "127.0.0.1:4317"))
    parser.add_argument("--concurrency", type=int, default=int(os.environ.get("LIGHTNING_CONCURRENCY", "4")))
    parser.add_argument(
        "--openai-base-url",
        default=os.environ.get("LIGHTNING_POLICY_URL"),
        help="the policy server the agent's OpenAI client should use (env LIGHTNING_POLICY_URL)",
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a rollout may take")
    parser.add_argument("--lease", type=float, default=60.0, help="lease length; heartbeats renew it")
    parser.add_argument(
        "agent",
        nargs=argparse.REMAINDER,
        help="MODULE:FUNCTION for an in-process agent, or -- COMMAND... for a subprocess agent",
    )
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    from otel_lightning.worker import SubprocessAgent, Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    command = args.agent[1:] if args.agent[:1] == ["--"] else args.agent
    if not command:
        raise SystemExit("name the agent: MODULE:FUNCTION, or -- COMMAND ...")
    _setup_tracing(args.collector)
    if len(command) == 1 and ":" in command[0] and not command[0].endswith(".py"):
        if args.openai_base_url:
            os.environ["OPENAI_BASE_URL"] = args.openai_base_url
        agent = _load(command[0])
    else:
        agent = SubprocessAgent(
            command, timeout_s=args.timeout, openai_base_url=args.openai_base_url, collector=args.collector
        )
    worker = Worker(
        args.collector, agent, concurrency=args.concurrency, lease_s=args.lease, task_timeout_s=args.timeout
    )
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    try:
        stats = worker.run()
    except KeyboardInterrupt:
        worker.stop()
        stats = worker.stats
    print(f"worker done: {stats.succeeded} succeeded, {stats.failed} failed, {stats.lost_leases} leases lost")
    return 0
