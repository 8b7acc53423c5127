"""`otel-lightning collector`: run the collector (registered through the otel_lightning.commands entry point)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sqlite3
import stat
import sys
from pathlib import Path

from otel_lightning_collector.auth import ROLES
from otel_lightning_collector.credit import CREDIT_RULES
from otel_lightning_collector.otlp_http import HttpLimits
from otel_lightning_collector.server import CollectorConfig, CollectorServer

logger = logging.getLogger(__name__)


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("collector", help="run the OTLP collector that builds and streams transitions")
    parser.add_argument(
        "--listen",
        default=_env("LIGHTNING_COLLECTOR_LISTEN", "127.0.0.1:4317"),
        help="host:port for OTLP/gRPC and the transition stream (env LIGHTNING_COLLECTOR_LISTEN)",
    )
    parser.add_argument(
        "--http-listen",
        default=_env("LIGHTNING_COLLECTOR_HTTP_LISTEN", "127.0.0.1:4318"),
        help="host:port for OTLP/HTTP (/v1/traces, protobuf or JSON); 'off' to disable"
        " (env LIGHTNING_COLLECTOR_HTTP_LISTEN)",
    )
    parser.add_argument(
        "--forward-to",
        default=_env("LIGHTNING_FORWARD_TO", ""),
        help="also pass every span received on to this OTLP endpoint: host:port (gRPC) or"
        " http://host:4318/v1/traces (env LIGHTNING_FORWARD_TO)",
    )
    parser.add_argument(
        "--forward-queue-mb",
        type=float,
        default=float(_env("LIGHTNING_FORWARD_QUEUE_MB", "256")),
        help="bound of the forwarding queue on disk (<store>.forward.db), in MB: beyond it the oldest requests are"
        " dropped, counted and logged (env LIGHTNING_FORWARD_QUEUE_MB)",
    )
    parser.add_argument(
        "--forward-consumers",
        type=int,
        default=int(_env("LIGHTNING_FORWARD_CONSUMERS", "4")),
        help="requests forwarded at once (env LIGHTNING_FORWARD_CONSUMERS)",
    )
    parser.add_argument(
        "--forward-max-elapsed-s",
        type=float,
        default=float(_env("LIGHTNING_FORWARD_MAX_ELAPSED_S", "300")),
        help="how long one request is retried (backoff with jitter, or what the upstream asks for) before it is"
        " dropped, counted and logged; 0: forever (env LIGHTNING_FORWARD_MAX_ELAPSED_S)",
    )
    parser.add_argument(
        "--forward-compression",
        choices=("gzip", "none"),
        default=_env("LIGHTNING_FORWARD_COMPRESSION", "gzip"),
        help="compression of forwarded requests (env LIGHTNING_FORWARD_COMPRESSION)",
    )
    parser.add_argument(
        "--metrics-listen",
        default=_env("LIGHTNING_METRICS_LISTEN", "off"),
        help="host:port of a Prometheus endpoint with the collector's own metrics (e.g. 127.0.0.1:9464);"
        " 'off' (default) for none (env LIGHTNING_METRICS_LISTEN)",
    )
    parser.add_argument(
        "--metrics-otlp",
        default=_env("LIGHTNING_METRICS_OTLP", ""),
        help="also push the collector's metrics over OTLP/gRPC to this endpoint (env LIGHTNING_METRICS_OTLP)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        default=_env("LIGHTNING_ALLOW_REMOTE", "") in ("1", "true", "yes"),
        help="allow listening on addresses other machines can reach (the store holds prompts; use tokens and TLS)"
        " (env LIGHTNING_ALLOW_REMOTE=1)",
    )
    for role in ROLES:
        parser.add_argument(
            f"--{role}-token-file",
            default=_env(f"LIGHTNING_{role.upper()}_TOKEN_FILE", ""),
            help=f"file holding the bearer token the {role}s must send (env LIGHTNING_{role.upper()}_TOKEN_FILE,"
            f" or the token itself in env LIGHTNING_{role.upper()}_TOKEN; none: no check)",
        )
        parser.add_argument(
            f"--{role}-token",
            default=_env(f"LIGHTNING_{role.upper()}_TOKEN", ""),
            help="the token itself; avoid: any local user sees command lines (ps). Use the file or env",
        )
    parser.add_argument(
        "--tls-cert", default=_env("LIGHTNING_TLS_CERT", ""), help="PEM certificate chain: TLS on every endpoint"
    )
    parser.add_argument("--tls-key", default=_env("LIGHTNING_TLS_KEY", ""), help="PEM private key of --tls-cert")
    parser.add_argument(
        "--store",
        default=_env("LIGHTNING_STORE", "otel-lightning.db"),
        help="SQLite file holding spans, rollouts and transitions (env LIGHTNING_STORE)",
    )
    parser.add_argument(
        "--credit",
        default=_env("LIGHTNING_CREDIT", "auto"),
        choices=sorted(CREDIT_RULES),
        help="credit-assignment rule for rewards (env LIGHTNING_CREDIT)",
    )
    parser.add_argument(
        "--settle-ms",
        type=float,
        default=float(_env("LIGHTNING_SETTLE_MS", "0")),
        help="wait this long after a rollout's root span before completing it (env LIGHTNING_SETTLE_MS)",
    )
    parser.add_argument(
        "--rollout-timeout",
        type=float,
        default=float(_env("LIGHTNING_ROLLOUT_TIMEOUT", "600")),
        help="seconds without spans after which a rollout with no root is completed as incomplete",
    )
    parser.add_argument(
        "--durability",
        choices=("normal", "full"),
        default=_env("LIGHTNING_DURABILITY", "normal"),
        help="normal: survives a killed collector; full: also survives power loss (slower)",
    )
    parser.add_argument(
        "--max-store-mb",
        type=float,
        default=float(_env("LIGHTNING_MAX_STORE_MB", "0")),
        help="the most the store file may grow to, in MB (0: no limit but the disk); when full, exports are"
        " refused with a retryable error and what is stored is kept (env LIGHTNING_MAX_STORE_MB)",
    )
    parser.add_argument(
        "--retain-hours",
        type=float,
        default=float(_env("LIGHTNING_RETAIN_HOURS", "0")),
        help="delete completed rollouts' spans, and events every durable consumer has acknowledged, this many hours"
        " after they were written, in the background; 0: keep them (env LIGHTNING_RETAIN_HOURS)",
    )
    parser.add_argument(
        "--retain-mb",
        type=float,
        default=float(_env("LIGHTNING_RETAIN_MB", "0")),
        help="byte budget of the store: above it the oldest completed rollouts and acknowledged events go first,"
        " whatever their age (never what a consumer has not acknowledged); 0: none (env LIGHTNING_RETAIN_MB)",
    )
    parser.add_argument(
        "--memory-limit-mb",
        type=float,
        default=float(_env("LIGHTNING_MEMORY_LIMIT_MB", "2048")),
        help="soft limit on the collector's resident memory, in MB: above it exports are refused with a retryable"
        " error until the acknowledged backlog is indexed; 0: none (env LIGHTNING_MEMORY_LIMIT_MB; default 2048)",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        default=int(_env("LIGHTNING_MAX_ATTEMPTS", "3")),
        help="tries of a task sample (lease expired, worker crashed) before it is failed (env LIGHTNING_MAX_ATTEMPTS)",
    )
    parser.add_argument(
        "--require-reward",
        action="store_true",
        default=_env("LIGHTNING_REQUIRE_REWARD", "") in ("1", "true", "yes"),
        help="a rollout that recorded no reward is malformed, not trained on (env LIGHTNING_REQUIRE_REWARD=1)",
    )
    parser.add_argument(
        "--train-agents",
        default=_env("LIGHTNING_TRAIN_AGENTS", ""),
        help="multi-agent runs: comma-separated name patterns (e.g. 'coder,math*') of the agents to train;"
        " the others' turns stay in the conversation as state (env LIGHTNING_TRAIN_AGENTS; default: all)",
    )
    parser.add_argument(
        "--episodes",
        action="store_true",
        default=_env("LIGHTNING_EPISODES", "") in ("1", "true", "yes"),
        help="production traffic: every trace with an LLM call and no rollout becomes an episode, streamed like a"
        " rollout (source: episode) once quiet for --episode-idle-s (env LIGHTNING_EPISODES=1)",
    )
    parser.add_argument(
        "--episode-idle-s",
        type=float,
        default=float(_env("LIGHTNING_EPISODE_IDLE_S", "30")),
        help="an episode is complete once its trace has had no new span this long (env LIGHTNING_EPISODE_IDLE_S)",
    )
    parser.add_argument(
        "--feedback-wait-s",
        type=float,
        default=float(_env("LIGHTNING_FEEDBACK_WAIT_S", "0")),
        help="hold each rollout's completion this long after its root span, so late rewards (feedback,"
        " evaluations) are part of it rather than reward_update events (env LIGHTNING_FEEDBACK_WAIT_S)",
    )
    limits = parser.add_argument_group("limits (see the README's Security section)")
    limits.add_argument(
        "--max-request-mb",
        type=float,
        default=float(_env("LIGHTNING_MAX_REQUEST_MB", "64")),
        help="largest export request, gRPC or HTTP, after decompression (env LIGHTNING_MAX_REQUEST_MB)",
    )
    limits.add_argument(
        "--max-json-mb",
        type=float,
        default=float(_env("LIGHTNING_MAX_JSON_MB", "16")),
        help="largest OTLP/JSON request body; JSON costs ~25x its size to parse (env LIGHTNING_MAX_JSON_MB)",
    )
    limits.add_argument(
        "--http-read-timeout",
        type=float,
        default=float(_env("LIGHTNING_HTTP_READ_TIMEOUT", "10")),
        help="seconds an OTLP/HTTP read may wait; a whole request gets 6x that (env LIGHTNING_HTTP_READ_TIMEOUT)",
    )
    limits.add_argument(
        "--http-max-connections",
        type=int,
        default=int(_env("LIGHTNING_HTTP_MAX_CONNECTIONS", "256")),
        help="OTLP/HTTP connections served at once; one more gets 503 (env LIGHTNING_HTTP_MAX_CONNECTIONS)",
    )
    limits.add_argument(
        "--max-streams",
        type=int,
        default=int(_env("LIGHTNING_MAX_STREAMS", "16")),
        help="transition streams served at once; one more gets RESOURCE_EXHAUSTED (env LIGHTNING_MAX_STREAMS)",
    )
    limits.add_argument(
        "--max-waiting-claims",
        type=int,
        default=int(_env("LIGHTNING_MAX_WAITING_CLAIMS", "64")),
        help="task claims waiting for work at once; one more is answered at once (env LIGHTNING_MAX_WAITING_CLAIMS)",
    )
    limits.add_argument(
        "--max-pending-spans",
        type=int,
        default=int(_env("LIGHTNING_MAX_PENDING_SPANS", "50000")),
        help="acknowledged spans waiting to be indexed; beyond it exports are refused (retryable), and one"
        " request of more spans than this is refused for good (env LIGHTNING_MAX_PENDING_SPANS)",
    )
    parser.set_defaults(run=_run)


def _token(args: argparse.Namespace, role: str) -> str:
    """The role's token: from its file, else the flag or env value (a flag is warned about: ps shows it)."""
    path = getattr(args, f"{role}_token_file")
    if path:
        file = Path(path)
        token = file.read_text().strip()
        if not token:
            raise ValueError(f"the {role} token file {path} is empty")
        if file.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            logger.warning("the %s token file %s can be read by other users; chmod 600 it", role, path)
        return token
    token = getattr(args, f"{role}_token")
    if token and token != os.environ.get(f"LIGHTNING_{role.upper()}_TOKEN"):
        logger.warning(
            "--%s-token on the command line is visible to every local user (ps); use --%s-token-file or"
            " LIGHTNING_%s_TOKEN",
            role,
            role,
            role.upper(),
        )
    return token


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server, config = _start(args)
    except (OSError, ValueError, sqlite3.Error) as error:
        # Errors at start are one line that says what to do, not a traceback.
        print(f"otel-lightning collector: cannot start: {error}", file=sys.stderr, flush=True)
        return 2
    http = f", OTLP/HTTP on {server.http.endpoint}" if server.http else ""
    forward = f", forwarding to {config.forward_to}" if config.forward_to else ""
    print(
        f"otel-lightning collector listening on {server.address}{http}{forward} (store: {config.store_path})",
        flush=True,
    )
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


def _start(args: argparse.Namespace) -> tuple[CollectorServer, CollectorConfig]:
    config = CollectorConfig(
        listen=args.listen,
        http_listen=None if args.http_listen.lower() in ("", "off", "none") else args.http_listen,
        forward_to=args.forward_to or None,
        forward_queue_bytes=int(args.forward_queue_mb * 1024 * 1024),
        forward_consumers=args.forward_consumers,
        forward_max_elapsed_s=args.forward_max_elapsed_s,
        forward_compression=args.forward_compression,
        metrics_listen=None if args.metrics_listen.lower() in ("", "off", "none") else args.metrics_listen,
        metrics_otlp_endpoint=args.metrics_otlp or None,
        allow_remote=args.allow_remote,
        tokens={role: token for role in ROLES if (token := _token(args, role))},
        tls_cert_file=args.tls_cert or None,
        tls_key_file=args.tls_key or None,
        store_path=args.store,
        credit=args.credit,
        settle_s=args.settle_ms / 1000.0,
        rollout_timeout_s=args.rollout_timeout,
        durability=args.durability,
        max_attempts=args.max_attempts,
        max_store_bytes=int(args.max_store_mb * 1024 * 1024) or None,
        memory_limit_bytes=int(args.memory_limit_mb * 1024 * 1024) or None,
        retain_s=args.retain_hours * 3600 or None,
        retain_bytes=int(args.retain_mb * 1024 * 1024) or None,
        require_reward=args.require_reward,
        episodes=args.episodes,
        episode_idle_s=args.episode_idle_s,
        feedback_wait_s=args.feedback_wait_s,
        train_agents=tuple(p.strip() for p in args.train_agents.split(",") if p.strip()),
        max_message_bytes=int(args.max_request_mb * 1024 * 1024),
        max_pending_spans=args.max_pending_spans,
        max_streams=args.max_streams,
        max_waiting_claims=args.max_waiting_claims,
        http_limits=HttpLimits(
            max_json_bytes=int(args.max_json_mb * 1024 * 1024),
            read_timeout_s=args.http_read_timeout,
            request_timeout_s=6 * args.http_read_timeout,
            max_connections=args.http_max_connections,
        ),
    )
    return CollectorServer(config).start(), config
