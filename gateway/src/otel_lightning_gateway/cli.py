"""`otel-lightning gateway`: the model gateway in the foreground (registered through the
otel_lightning.commands entry point)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from opentelemetry.trace import TracerProvider

ENV_TOKEN = "LIGHTNING_TOKEN"
ENV_TLS_CA = "LIGHTNING_TLS_CA"


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "gateway",
        help="OpenAI-compatible proxy in front of a model server: every model call becomes a span with its token ids",
    )
    parser.add_argument(
        "--listen",
        default=_env("LIGHTNING_GATEWAY_LISTEN", "127.0.0.1:8100"),
        help="host:port (env LIGHTNING_GATEWAY_LISTEN)",
    )
    parser.add_argument(
        "--upstream",
        default=_env("LIGHTNING_GATEWAY_UPSTREAM", ""),
        required=not _env("LIGHTNING_GATEWAY_UPSTREAM", ""),
        help="base URL of the OpenAI-compatible model server, e.g. http://127.0.0.1:8000/v1"
        " (env LIGHTNING_GATEWAY_UPSTREAM)",
    )
    parser.add_argument(
        "--collector",
        default=_env("LIGHTNING_COLLECTOR", ""),
        help="collector address (OTLP/gRPC) the spans go to; with LIGHTNING_TOKEN / LIGHTNING_TLS_CA like other"
        " clients (env LIGHTNING_COLLECTOR; none: the OTEL_EXPORTER_OTLP_* settings, if any)",
    )
    parser.add_argument(
        "--responses-via-chat",
        choices=("on", "off"),
        default=_env("LIGHTNING_GATEWAY_RESPONSES_VIA_CHAT", "on"),
        help="serve /v1/responses through the model server's chat completions, which give token ids (vLLM's"
        " Responses API gives none); off: pass it on as it is (env LIGHTNING_GATEWAY_RESPONSES_VIA_CHAT)",
    )
    parser.add_argument(
        "--no-token-ids",
        action="store_true",
        help="do not ask the model server for token ids and logprobs (for servers that refuse vLLM's return_token_ids)",
    )
    parser.add_argument(
        "--upstream-no-stream",
        action="store_true",
        help="the model server cannot stream (otel-lightning policy-server): ask it in one piece and stream"
        " the whole answer to callers that asked for a stream",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        default=_env("LIGHTNING_ALLOW_REMOTE", "") in ("1", "true", "yes"),
        help="allow listening on addresses other machines can reach (env LIGHTNING_ALLOW_REMOTE=1)",
    )
    parser.add_argument("--log-level", default="INFO")
    parser.set_defaults(run=_run)


def tracer_provider_for(collector: str) -> TracerProvider:
    """The gateway's own provider exporting to `collector`: TLS when LIGHTNING_TLS_CA is set, the bearer
    token of LIGHTNING_TOKEN on every export."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    options: dict = {"insecure": True}
    tls_ca = _env(ENV_TLS_CA, "")
    if tls_ca:
        import grpc

        options = {"credentials": grpc.ssl_channel_credentials(Path(tls_ca).read_bytes())}
    token = _env(ENV_TOKEN, "")
    if token:
        options["headers"] = {"authorization": f"Bearer {token}"}
    endpoint = collector if "://" in collector else f"{'https' if tls_ca else 'http'}://{collector}"
    provider = SDKTracerProvider(resource=Resource.create({"service.name": "otel-lightning-gateway"}))
    # A rollout is waited for by a trainer: its spans go out within 0.2 s, not the SDK's default 5 s.
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, **options), schedule_delay_millis=200)
    )
    return provider


def _global_provider_from_environment() -> TracerProvider | None:
    """Without --collector: the standard OTEL_EXPORTER_OTLP_* settings, if the user gave some."""
    if not (_env("OTEL_EXPORTER_OTLP_ENDPOINT", "") or _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")):
        return None
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = SDKTracerProvider(resource=Resource.create({"service.name": "otel-lightning-gateway"}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def _run(args: argparse.Namespace) -> int:
    from otel_lightning_gateway.server import Gateway

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, _, port = args.listen.rpartition(":")
    provider = tracer_provider_for(args.collector) if args.collector else _global_provider_from_environment()
    if provider is None:
        logging.getLogger("otel_lightning_gateway").warning(
            "no --collector (nor OTEL_EXPORTER_OTLP_ENDPOINT): model calls are proxied but their spans go nowhere"
        )
    try:
        gateway = Gateway(
            upstream=args.upstream,
            tracer_provider=provider,
            host=host or "127.0.0.1",
            port=int(port),
            responses_via_chat=args.responses_via_chat == "on",
            request_token_ids=not args.no_token_ids,
            upstream_streams=not args.upstream_no_stream,
            allow_remote=args.allow_remote,
        )
    except ValueError as error:
        raise SystemExit(f"otel-lightning gateway: {error}") from None
    print(f"otel-lightning gateway on {gateway.address} -> {args.upstream}", flush=True)
    try:
        gateway.serve_forever()
    finally:
        if provider is not None and hasattr(provider, "shutdown"):
            provider.shutdown()
    return 0
