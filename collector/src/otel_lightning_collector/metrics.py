"""The collector's own metrics, as OpenTelemetry metrics: on a Prometheus endpoint and/or pushed
over OTLP, so a collector is watched like any other service.

Every figure comes from the StatusReporter (the same report `otel-lightning status` shows),
read at most once per second however many instruments ask.
"""

from __future__ import annotations

import socketserver
import ssl
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource

from otel_lightning.v1 import status_pb2 as pb
from otel_lightning_collector.auth import TokenCheck
from otel_lightning_collector.status_report import StatusReporter
from otel_lightning_collector.tls import HandshakeOnConnectionThread
from otel_lightning_collector.version import __version__

_FRESH_S = 1.0
PREFIX = "lightning.collector"


class CollectorMetrics:
    def __init__(
        self,
        reporter: StatusReporter,
        *,
        prometheus_listen: str | None = None,
        otlp_endpoint: str | None = None,
        tokens: TokenCheck | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.reporter = reporter
        self._report: pb.StatusReport | None = None
        self._read_at = 0.0
        self._lock = threading.Lock()
        # Reports are read on one thread of their own: the store opens a reader per thread, and
        # each scrape comes on a new thread, so reading there left an open file per scrape.
        self._reading = ThreadPoolExecutor(1, thread_name_prefix="metrics-report")
        self._http = None
        readers: list[MetricReader] = []
        if prometheus_listen:
            from opentelemetry.exporter.prometheus import PrometheusMetricReader
            from prometheus_client import CollectorRegistry

            # A registry of its own: several collectors in one process do not mix their metrics.
            registry = CollectorRegistry()
            readers.append(PrometheusMetricReader(registry=registry))
            self._http = serve_metrics(registry, prometheus_listen, tokens or TokenCheck({}), tls)
            self.prometheus_port = self._http.server_port
        if otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=otlp_endpoint, insecure=True)))
        resource = Resource.create({"service.name": "otel-lightning-collector", "service.version": __version__})
        self.provider = MeterProvider(metric_readers=readers, resource=resource)
        meter = self.provider.get_meter("otel_lightning_collector", __version__)
        meter.create_observable_counter(
            f"{PREFIX}.rollouts", [self._rollouts], unit="{rollout}", description="rollouts completed, by status"
        )
        meter.create_observable_gauge(f"{PREFIX}.rollouts.open", [self._open], unit="{rollout}")
        meter.create_observable_gauge(
            f"{PREFIX}.pool.samples", [self._pool], unit="{sample}", description="task pool samples, by state"
        )
        meter.create_observable_gauge(
            f"{PREFIX}.spans.pending", [self._pending], unit="{span}", description="acknowledged, not yet indexed"
        )
        meter.create_observable_gauge(
            f"{PREFIX}.consumer.lag", [self._lag], unit="{event}", description="events not yet acked, by consumer"
        )
        meter.create_observable_counter(
            f"{PREFIX}.events", [self._counters], unit="1", description="intake, indexing and forwarding counters"
        )

    def report(self) -> pb.StatusReport:
        with self._lock:
            if self._report is None or time.monotonic() - self._read_at > _FRESH_S:
                self._report = self._reading.submit(self.reporter.report).result()
                self._read_at = time.monotonic()
            return self._report

    def _rollouts(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c.total, {"status": c.status}) for c in self.report().statuses]

    def _open(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.report().open_rollouts)]

    def _pool(self, options: CallbackOptions) -> Iterable[Observation]:
        report = self.report()
        return [
            Observation(report.pool_queued, {"state": "queued"}),
            Observation(report.pool_leased, {"state": "leased"}),
            Observation(report.pool_done, {"state": "done"}),
            Observation(report.pool_failed, {"state": "failed"}),
        ]

    def _pending(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(self.report().spans_pending)]

    def _lag(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(c.lag, {"consumer": c.consumer}) for c in self.report().consumers]

    def _counters(self, options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(value, {"counter": name}) for name, value in sorted(self.report().counters.items())]

    def stop(self) -> None:
        self.provider.shutdown()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        self._reading.shutdown(wait=True)


class _MetricsServer(HandshakeOnConnectionThread, socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    timeout = 10  # seconds a read may wait: a slow client does not hold its thread for ever

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_metrics(registry: Any, listen: str, tokens: TokenCheck, tls: ssl.SSLContext | None) -> WSGIServer:
    """The Prometheus text endpoint (`/metrics`), behind the collector's tokens (any role) and TLS."""
    from prometheus_client import make_wsgi_app

    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if tokens.enabled and tokens.role_of(environ.get("HTTP_AUTHORIZATION")) is None:
            start_response("401 Unauthorized", [("WWW-Authenticate", "Bearer"), ("Content-Type", "text/plain")])
            return [b"send 'Authorization: Bearer <token>' with a token of this collector\n"]
        return metrics_app(environ, start_response)

    host, _, port = listen.rpartition(":")
    server = make_server(host.strip("[]") or "127.0.0.1", int(port), app, _MetricsServer, handler_class=_QuietHandler)
    server.tls = tls
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
