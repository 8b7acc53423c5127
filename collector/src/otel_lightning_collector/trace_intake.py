"""TraceIntake: what an OTLP trace export does, whatever carried it (gRPC or HTTP).

Decode, commit the request whole, acknowledge; the spans are checked and stored one by one later
by the SpanIndexer. Limits and store failures raise `ExportRefusedError`, which each transport maps to
its retryable answer (the OTLP spec's throttling: gRPC UNAVAILABLE or RESOURCE_EXHAUSTED with
RetryInfo, HTTP 503 or 429 with Retry-After): nothing is acknowledged that was not committed.

What the acknowledgement says about single spans (`partial_success`): the spans that are unusable
whatever their attributes (bad ids, impossible times) are found here, cheaply, and reported as
rejected with the reason. A rollout span whose rollout attributes are unusable (a rollout id that is
no string, ...) is only found when the request is indexed, after the acknowledgement: it is kept
aside in `rejected_spans` with the reason, logged and counted (`spans_rejected` in `otel-lightning
status`); both kinds are kept there, so nothing received is lost unseen.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from otel_lightning_collector.export_activity import ExportActivity
from otel_lightning_collector.export_tickets import ExportTicket
from otel_lightning_collector.indexer import SpanIndexer
from otel_lightning_collector.memory_limiter import MemoryLimiter
from otel_lightning_collector.spans import has_rollout_spans, id_or_time_problem, rollout_attributes
from otel_lightning_collector.store import Store

logger = logging.getLogger(__name__)

# Refusals are logged once per this many seconds (with how many since), not once per request.
_LOG_REFUSALS_EVERY_S = 10.0


class RequestTooLargeError(ValueError):
    """The request has more spans than the collector ever holds waiting to be indexed: it can never
    be admitted, so it is refused for good (HTTP 413, gRPC INVALID_ARGUMENT), not retried."""


class ExportRefusedError(Exception):
    """The request was not accepted and may be sent again after `retry_after_s` (the exporter retries).

    `throttled`: the client sent more than it is allowed at once (the concurrent export limit): HTTP
    429 / gRPC RESOURCE_EXHAUSTED. Otherwise the collector cannot take it now (memory, indexing
    backlog, store): HTTP 503 / gRPC UNAVAILABLE.
    """

    def __init__(self, reason: str, *, throttled: bool = False, retry_after_s: float = 1.0) -> None:
        super().__init__(reason)
        self.throttled = throttled
        self.retry_after_s = retry_after_s


@dataclass
class IntakeCounters:
    requests: int = 0
    # Spans of requests committed for indexing (some may turn out foreign or rejected there).
    spans_accepted: int = 0
    # Spans of requests with no rollout span at all: forwarded if configured, not kept.
    spans_foreign: int = 0
    requests_malformed: int = 0
    requests_refused: int = 0
    # Of requests_refused: for memory over the soft limit (--memory-limit-mb).
    requests_refused_memory: int = 0
    # Spans reported rejected in a partial_success (also kept aside and counted again at indexing).
    spans_rejected_at_ack: int = 0
    other_signal_requests: int = 0


class TraceIntake:
    def __init__(
        self,
        store: Store,
        indexer: SpanIndexer,
        *,
        max_concurrent_exports: int = 16,
        forward: Callable[[bytes], None] | None = None,
        activity: ExportActivity | None = None,
        memory: MemoryLimiter | None = None,
    ) -> None:
        # Each transport marks its whole request (decoding included) as an export in flight.
        self.activity = activity or ExportActivity()
        self.store = store
        self.indexer = indexer
        self.forward = forward
        self.memory = memory
        self._refusals_unlogged = 0
        self._refusal_logged_at = 0.0
        self.counters = IntakeCounters()
        # A rollout is a trace: a request with no rollout span is kept too when this says so (a span
        # of it belongs to a known rollout trace, or --episodes keeps all traffic); see trace_membership.
        self.keeps: Callable[[ExportTraceServiceRequest], bool] | None = None
        # Told the spans not kept (counted, logged at most once a minute, shown by status).
        self.not_kept: Callable[[int], None] | None = None
        self._slots = threading.BoundedSemaphore(max_concurrent_exports)
        self._counter_lock = threading.Lock()

    def export(
        self, request: ExportTraceServiceRequest, raw: bytes | None = None, ticket: ExportTicket | None = None
    ) -> ExportTraceServiceResponse:
        """Accept a parsed request (`raw`: its wire bytes, if it came as protobuf).

        Only what acknowledging needs is done here: the request is committed whole when any span
        may belong to a rollout. Each span is checked when it is indexed; one that cannot be used is
        kept aside with the reason (`rejected_spans` in the store), logged and counted, so per-span
        problems do not come back as a `partial_success`. `ticket`: the one its transport opened
        (`ExportActivity.exporting`); without one, the request is marked in flight here.
        """
        if ticket is None:
            with self.activity.exporting() as own_ticket:
                return self.export(request, raw, own_ticket)
        if raw is None:
            raw = request.SerializeToString()
        span_count = sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)
        if span_count > self.indexer.max_pending_spans:
            # Admission per request: one request of 1,000,001 spans went past the 50k backlog bound.
            reason = (
                f"the request has {span_count} spans; the collector takes at most {self.indexer.max_pending_spans}"
                " per request (--max-pending-spans): send smaller batches"
            )
            self.count(requests_refused=1)
            self._log_refusal(reason)
            raise RequestTooLargeError(reason)
        if not self._slots.acquire(blocking=False):
            self.refuse("collector is at its concurrent export limit; retry later", throttled=True)
        response = ExportTraceServiceResponse()
        try:
            if has_rollout_spans(raw) or (self.keeps is not None and self.keeps(request)):
                if not self.indexer.has_room():
                    self.refuse(f"collector has {self.indexer.pending_spans} spans waiting to be indexed; retry later")
                memory_refusal = self.memory.refusal() if self.memory is not None else None
                if memory_refusal is not None:
                    self.count(requests_refused_memory=1)
                    self.refuse(memory_refusal, retry_after_s=2.0)
                try:
                    batch_id = self.store.append_batch(raw)
                except sqlite3.Error as error:
                    logger.error("store %s refused an export request: %s", self.store.path, error)
                    self.refuse(f"collector store is not writable ({error}); retry later")
                self._report_rejected(request, response)
                # From here the indexer closes the ticket, once the request's spans are stored.
                ticket.handed_over = True
                self.indexer.submit(batch_id, request, span_count, ticket)
                self.count(requests=1, spans_accepted=span_count)
            else:
                self.count(requests=1, spans_foreign=span_count)
                if self.not_kept is not None:
                    self.not_kept(span_count)
        finally:
            self._slots.release()
        if self.forward is not None:
            self.forward(raw)
        return response

    def _report_rejected(self, request: ExportTraceServiceRequest, response: ExportTraceServiceResponse) -> None:
        """`partial_success` for the rollout spans unusable whatever their attributes (see the module doc)."""
        rejected = 0
        first_problem = ""
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    problem = id_or_time_problem(span)
                    if problem is not None and rollout_attributes(span.attributes) is not None:
                        rejected += 1
                        first_problem = first_problem or f"span {span.name!r}: {problem}"
        if rejected:
            self.count(spans_rejected_at_ack=rejected)
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = (
                f"{rejected} span(s) rejected, e.g. {first_problem}; kept aside in the collector's rejected_spans"
            )

    def refuse(self, reason: str, *, throttled: bool = False, retry_after_s: float = 1.0) -> None:
        self.count(requests_refused=1)
        self._log_refusal(reason)
        raise ExportRefusedError(reason, throttled=throttled, retry_after_s=retry_after_s)

    def _log_refusal(self, reason: str) -> None:
        now = time.monotonic()
        with self._counter_lock:
            self._refusals_unlogged += 1
            if now - self._refusal_logged_at < _LOG_REFUSALS_EVERY_S:
                return
            count, self._refusals_unlogged, self._refusal_logged_at = self._refusals_unlogged, 0, now
        logger.warning("refused %d export request(s) (retryable) since the last report; latest: %s", count, reason)

    def count(self, **increments: int) -> None:
        with self._counter_lock:
            for name, value in increments.items():
                setattr(self.counters, name, getattr(self.counters, name) + value)
