"""CollectorServer: the store, the pipeline behind it, the gRPC services on one port, OTLP/HTTP on another."""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from otel_lightning.listen import check_listen
from otel_lightning.v1 import status_pb2_grpc as status_grpc
from otel_lightning.v1 import tasks_pb2_grpc as pb_grpc
from otel_lightning_collector.assembler import RolloutAssembler
from otel_lightning_collector.auth import BearerTokenInterceptor, TokenCheck
from otel_lightning_collector.export_activity import ExportActivity
from otel_lightning_collector.forwarder import OtlpForwarder, RetryPolicy
from otel_lightning_collector.indexer import SpanIndexer
from otel_lightning_collector.memory_limiter import MemoryLimiter
from otel_lightning_collector.metrics import CollectorMetrics
from otel_lightning_collector.notifier import Notifier
from otel_lightning_collector.otlp_http import HttpLimits, OtlpHttpReceiver
from otel_lightning_collector.otlp_receiver import ExportTicketInterceptor, OtlpTraceReceiver
from otel_lightning_collector.retention import RetentionPolicy, RetentionSweeper
from otel_lightning_collector.status_report import CollectorStatusService, StatusReporter, counters_of
from otel_lightning_collector.store import Completion, Store
from otel_lightning_collector.stream_service import DEFAULT_MAX_STREAMS, TransitionStreamService
from otel_lightning_collector.task_pool import TaskPool
from otel_lightning_collector.task_pool_service import DEFAULT_MAX_WAITING_CLAIMS, TaskPoolService
from otel_lightning_collector.tls import server_context
from otel_lightning_collector.trace_extras import TraceExtras, TraceExtrasConfig
from otel_lightning_collector.trace_intake import TraceIntake
from otel_lightning_collector.transitions import LLM_ERROR

logger = logging.getLogger(__name__)


@dataclass
class CollectorConfig:
    listen: str = "127.0.0.1:4317"
    store_path: str | Path = "otel-lightning.db"
    credit: str = "auto"
    settle_s: float = 0.0
    rollout_timeout_s: float = 600.0
    durability: str = "normal"  # "normal": survives a killed process; "full": also power loss
    # Listening on anything but the loopback interface must be asked for (the data holds prompts).
    allow_remote: bool = False
    # Bearer tokens by role (exporter, worker, trainer); none: no checks.
    tokens: dict[str, str] = field(default_factory=dict)
    # TLS for every endpoint (gRPC, OTLP/HTTP, metrics): PEM certificate chain and private key files.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    # The most the store file may grow to (None: the disk's free space); when full, exports are refused.
    max_store_bytes: int | None = None
    # gRPC threads for short calls (exports, heartbeats, status). Long-lived calls get threads of
    # their own on top, a bounded number per role (see CollectorServer): they never take these.
    max_workers: int = 32
    max_streams: int = DEFAULT_MAX_STREAMS
    max_waiting_claims: int = DEFAULT_MAX_WAITING_CLAIMS
    # OTLP/HTTP bounds: JSON body size, read timeouts, connections (see otlp_http.HttpLimits).
    http_limits: HttpLimits = field(default_factory=HttpLimits)
    max_concurrent_exports: int = 16
    # OTLP/HTTP (`/v1/traces`) on this host:port too; None: gRPC only.
    http_listen: str | None = None
    # Pass every export request on to this OTLP endpoint (host:port for gRPC, http://.../v1/traces).
    forward_to: str | None = None
    forward_queue_bytes: int = 64 * 1024 * 1024
    # Forwarding (OtlpForwarder): its queue on disk beside the store (`<store>.forward.db`; a store in
    # memory: in memory), consumers sending at once, how long one request is retried (0: forever), gzip.
    forward_consumers: int = 4
    forward_max_elapsed_s: float = 300.0
    forward_compression: str = "gzip"
    # The collector's own metrics: a Prometheus endpoint on this host:port, and/or OTLP pushes here.
    metrics_listen: str | None = None
    metrics_otlp_endpoint: str | None = None
    # Acknowledged spans held in memory until indexed; beyond it exports are refused (retryable).
    max_pending_spans: int = 50_000
    # Soft limit on the process's resident memory: above it exports are refused (retryable) until the
    # acknowledged backlog drains (MemoryLimiter). None: no limit (a collector embedded in a trainer
    # shares its process with the model; the CLI's --memory-limit-mb sets one).
    memory_limit_bytes: int | None = None
    # Retention (RetentionSweeper): completed rollouts' spans and acknowledged events older than this go;
    # a byte budget for the store's pages in use; None: kept forever.
    retain_s: float | None = None
    retain_bytes: int | None = None
    retention_interval_s: float = 10.0
    max_message_bytes: int = 64 * 1024 * 1024
    max_attempts: int = 3
    # Wait before a requeued sample can be claimed again; doubles with each attempt (at most 60 s).
    retry_backoff_s: float = 1.0
    # Name patterns of the agents whose LLM calls become transitions (empty: all of them).
    train_agents: tuple[str, ...] = ()
    # A rollout without a reward span is `malformed` (else it trains with reward 0, has_reward false).
    require_reward: bool = False
    # Traces with LLM calls and no rollout become episodes once quiet for episode_idle_s (trace_extras).
    episodes: bool = False
    episode_idle_s: float = 30.0
    # Hold each completion this long after its root arrives, so late rewards are part of it.
    feedback_wait_s: float = 0.0


def check_port_free(listen: str, what: str) -> None:
    """OSError with one clear line when `listen` is taken (gRPC would say it in twenty, at start)."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, int(port)))
        except OSError as error:
            raise OSError(
                f"cannot listen on {listen} for {what}: {error.strerror or error} (another collector running?"
                " choose other ports with --listen / --http-listen)"
            ) from None


def prepare_store_path(path: str | Path) -> None:
    """A new store (it holds prompts and answers) is created readable by its owner only: its folder
    0700, its file 0600 (SQLite gives the WAL and shared-memory files the same mode)."""
    if str(path) == ":memory:":
        return
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def forward_queue_path(store_path: str | Path) -> Path | None:
    """The forwarding queue's file, beside the store (None: the store is in memory, so is the queue)."""
    if str(store_path) == ":memory:":
        return None
    path = Path(f"{store_path}.forward.db")
    prepare_store_path(path)
    return path


def check_writable(store: Store) -> None:
    """OSError when the store cannot be written: fail at start with the reason, not at every export."""
    try:
        with store.transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.execute(f"PRAGMA user_version = {int(version)}")
    except sqlite3.Error as error:
        raise OSError(f"the store {store.path} cannot be written ({error}); check its permissions and disk") from None


class CollectorServer:
    """Start with `start()` (or as a context manager); `port` is the bound port (listen on :0 for any)."""

    def __init__(self, config: CollectorConfig) -> None:
        self.config = config
        for listen in filter(None, (config.listen, config.http_listen, config.metrics_listen)):
            check_listen(listen.rpartition(":")[0], config.allow_remote, "the collector holds prompts and answers")
        if bool(config.tls_cert_file) != bool(config.tls_key_file):
            raise ValueError("TLS needs both a certificate file and its private key file")
        self.tokens = TokenCheck(config.tokens)
        self.tls = server_context(config.tls_cert_file, config.tls_key_file)  # for the HTTP endpoints
        for listen, what in (
            (config.listen, "gRPC"),
            (config.http_listen, "OTLP/HTTP"),
            (config.metrics_listen, "metrics"),
        ):
            if listen:
                check_port_free(listen, what)
        prepare_store_path(config.store_path)
        try:
            self.store = Store(
                config.store_path, synchronous=config.durability.upper(), max_bytes=config.max_store_bytes
            )
        except sqlite3.Error as error:
            raise OSError(f"the store {config.store_path} cannot be written ({error}); check its permissions") from None
        try:
            check_writable(self.store)
            self._build(config)
        except BaseException:
            self.store.close()
            raise

    def _build(self, config: CollectorConfig) -> None:
        self.notifier = Notifier()
        self.activity = ExportActivity()
        self.assembler = RolloutAssembler(
            self.store,
            self.notifier,
            credit=config.credit,
            settle_s=config.settle_s + config.feedback_wait_s,
            rollout_timeout_s=config.rollout_timeout_s,
            train_agents=config.train_agents,
            activity=self.activity,
            require_reward=config.require_reward,
        )
        self.indexer = SpanIndexer(
            self.store, self.assembler, max_pending_spans=config.max_pending_spans, activity=self.activity
        )
        self.activity.backlog = lambda: self.indexer.pending_spans
        self.forwarder = (
            OtlpForwarder(
                config.forward_to,
                max_queue_bytes=config.forward_queue_bytes,
                queue_path=forward_queue_path(config.store_path),
                consumers=config.forward_consumers,
                retry=RetryPolicy(max_elapsed_s=config.forward_max_elapsed_s),
                compression=config.forward_compression,
            )
            if config.forward_to
            else None
        )
        self.intake = TraceIntake(
            self.store,
            self.indexer,
            max_concurrent_exports=config.max_concurrent_exports,
            forward=self.forwarder,
            activity=self.activity,
            memory=(
                MemoryLimiter(config.memory_limit_bytes, held=lambda: self.indexer.pending_spans)
                if config.memory_limit_bytes
                else None
            ),
        )
        retention = RetentionPolicy(config.retain_s, config.retain_bytes, config.retention_interval_s)
        self.retention = RetentionSweeper(self.store, retention) if retention.enabled else None
        self.receiver = OtlpTraceReceiver(self.intake)
        self.stream = TransitionStreamService(self.store, self.notifier, max_streams=config.max_streams)
        self.task_pool = TaskPool(
            self.store,
            max_attempts=config.max_attempts,
            on_abandoned=self.assembler.abandon,
            retry_backoff_s=config.retry_backoff_s,
        )
        self.assembler.retry_decider = self._retry_failed_model_calls
        # Long-lived calls (transition streams, claims waiting for work) hold a thread each for as long
        # as they last. They get threads of their own: the pool has max_workers for short calls plus
        # one per stream and waiting claim allowed, and each of those roles is bounded (a stream past
        # its bound is refused RESOURCE_EXHAUSTED; a claim past its bound does not wait). So no number
        # of followers or waiting workers can take the threads exports need. Chosen over a second
        # server (another port for every client to learn) and over grpc.aio (every service rewritten):
        # one port, the same services, and the bound is plain to read here.
        threads = config.max_workers + config.max_streams + config.max_waiting_claims
        self._server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="collector-rpc"),
            interceptors=[
                # Outermost: numbers trace exports as they arrive, whatever the token check answers.
                ExportTicketInterceptor(self.activity),
                *([BearerTokenInterceptor(self.tokens)] if self.tokens.enabled else []),
            ],
            options=[
                ("grpc.max_receive_message_length", config.max_message_bytes),
                ("grpc.so_reuseport", 0),
            ],
        )
        self._server.add_generic_rpc_handlers((*self.receiver.handlers(), self.stream.handler()))
        pool_service = TaskPoolService(self.task_pool, max_waiting_claims=config.max_waiting_claims)
        pb_grpc.add_TaskPoolServicer_to_server(pool_service, self._server)
        self.status = StatusReporter(
            self.store, self.task_pool, counters=self._counters, pending=lambda: self.indexer.pending_spans
        )
        status_grpc.add_CollectorStatusServicer_to_server(CollectorStatusService(self.status), self._server)
        self.metrics: CollectorMetrics | None = None
        if config.tls_cert_file:
            credentials = grpc.ssl_server_credentials(
                [(Path(config.tls_key_file).read_bytes(), Path(config.tls_cert_file).read_bytes())]
            )
            self.port = self._server.add_secure_port(config.listen, credentials)
        else:
            self.port = self._server.add_insecure_port(config.listen)
        if self.port == 0:
            raise OSError(f"could not listen on {config.listen}: the address is taken or invalid")
        host = config.listen.rsplit(":", 1)[0]
        self.address = f"{host}:{self.port}"
        self.http = (
            OtlpHttpReceiver(
                self.intake,
                config.http_listen,
                max_body_bytes=config.max_message_bytes,
                tokens=self.tokens,
                tls=self.tls,
                limits=config.http_limits,
            )
            if config.http_listen
            else None
        )
        self.extras = TraceExtras(
            self.store,
            self.notifier,
            self.intake,
            self.assembler,
            self.receiver,
            TraceExtrasConfig(
                episodes=config.episodes,
                episode_idle_s=config.episode_idle_s,
                loose_keep_s=config.rollout_timeout_s,
                forward_to=config.forward_to,
                forward_queue_bytes=config.forward_queue_bytes,
            ),
            workers_active=lambda: self.task_pool.stats()["leased"] > 0,
        )
        self.extras.serve(self._server, self.http)

    def _counters(self) -> dict[str, int]:
        forwarded = self.forwarder.counters if self.forwarder is not None else None
        found = counters_of("intake", self.intake.counters, "index", self.indexer.counters, "forward", forwarded)
        if self.retention is not None:
            found.update(counters_of("retention", self.retention.counters))
        return {**found, **self.extras.counters()}

    def _retry_failed_model_calls(self, completions: list[Completion]) -> set[str]:
        # The model server failed, not the agent: the sample gets another try (up to max_attempts).
        retry = [(c.rollout_id, f"{c.error_type}: {c.error_message}") for c in completions if c.status == LLM_ERROR]
        return self.task_pool.retry_rollouts(retry) if retry else set()

    def start(self) -> CollectorServer:
        if self.forwarder is not None:
            self.forwarder.start()
        self.extras.start()
        self.indexer.start()
        self.assembler.start()
        self.task_pool.start_reaper()
        if self.retention is not None:
            self.retention.start()
        self._server.start()
        if self.http is not None:
            self.http.start()
        if self.config.metrics_listen or self.config.metrics_otlp_endpoint:
            self.metrics = CollectorMetrics(
                self.status,
                prometheus_listen=self.config.metrics_listen,
                otlp_endpoint=self.config.metrics_otlp_endpoint,
                tokens=self.tokens,
                tls=self.tls,
            )
        logger.info("otel-lightning collector listening on %s, store %s", self.address, self.store.path)
        return self

    def stop(self, grace_s: float = 1.0) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        if self.http is not None:
            self.http.stop()
        self._server.stop(grace_s).wait()
        if self.forwarder is not None:
            self.forwarder.stop()
        self.extras.stop()
        if self.retention is not None:
            self.retention.stop()
        self.task_pool.stop_reaper()
        self.indexer.stop()
        self.assembler.stop()
        self.store.close()

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every acknowledged span is stored and its rollout, if ready, handed on."""
        return self.indexer.flush(timeout_s)

    def wait(self) -> None:
        self._server.wait_for_termination()

    def __enter__(self) -> CollectorServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
