"""OTLP logs and metrics, whatever carried them (gRPC or HTTP).

Logs are kept, by trace: the GenAI conventions put message events (`gen_ai.user.message`,
`gen_ai.choice`...) and their only feedback construct, `gen_ai.evaluation.result`, in log records.
A record is committed before the export is acknowledged; an evaluation with a numeric score becomes
a reward (feedback.py: part of its rollout's completion, or a RewardUpdate once it is complete). A
record with no trace id cannot belong to a rollout: counted, not kept. With --forward-to, logs and
metrics are passed on like traces; metrics are not kept here.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otel_lightning_collector import evaluations, store_traces
from otel_lightning_collector.feedback import EVALUATION, FeedbackRecorder
from otel_lightning_collector.spans import attributes
from otel_lightning_collector.store import Store
from otel_lightning_collector.trace_intake import ExportRefusedError

logger = logging.getLogger(__name__)

LOGS, METRICS = "logs", "metrics"


class BadSignalRequestError(ValueError):
    """A logs or metrics request that cannot be decoded."""


@dataclass
class SignalCounters:
    log_requests: int = 0
    log_records_stored: int = 0
    # Records with no (valid) trace id: they cannot belong to a rollout.
    log_records_without_trace: int = 0
    evaluations_recorded: int = 0
    metric_requests: int = 0


def _hex_ids_to_base64(record: dict[str, Any]) -> None:
    for name in ("traceId", "spanId"):
        value = record.get(name)
        if isinstance(value, str) and value:
            try:
                record[name] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError as error:
                raise BadSignalRequestError(f"{name} {value[:40]!r} is not hex: {error}") from None


def parse_logs_json(body: bytes) -> ExportLogsServiceRequest:
    """An ExportLogsServiceRequest from OTLP/JSON (ids in hex, as the spec writes them)."""
    try:
        document = json.loads(body)
        for resource_logs in document.get("resourceLogs") or ():
            for scope_logs in resource_logs.get("scopeLogs") or ():
                for record in scope_logs.get("logRecords") or ():
                    _hex_ids_to_base64(record)
        return json_format.ParseDict(document, ExportLogsServiceRequest(), ignore_unknown_fields=True)
    except BadSignalRequestError:
        raise
    except (ValueError, AttributeError, TypeError, RecursionError, json_format.ParseError) as error:
        raise BadSignalRequestError(f"malformed OTLP/JSON ExportLogsServiceRequest: {error}") from None


class SignalIntake:
    def __init__(
        self,
        store: Store,
        recorder: FeedbackRecorder,
        *,
        forward: dict[str, Callable[[bytes], None]] | None = None,
    ) -> None:
        self.store = store
        self.recorder = recorder
        self.forward = forward or {}
        self.counters = SignalCounters()

    def export(self, signal: str, body: bytes, as_json: bool = False) -> None:
        """Take one logs or metrics export request (protobuf bytes, or OTLP/JSON for logs over HTTP).
        Raises BadSignalRequestError (malformed) or ExportRefusedError (the store cannot take it)."""
        if signal == METRICS:
            self.counters.metric_requests += 1
            if METRICS in self.forward:
                self.forward[METRICS](body)  # metrics in JSON are passed on as they came only over gRPC/protobuf
            return
        if as_json:
            request = parse_logs_json(body)
            raw = request.SerializeToString()
        else:
            try:
                request, raw = ExportLogsServiceRequest.FromString(body), body
            except Exception as error:
                raise BadSignalRequestError(f"malformed OTLP ExportLogsServiceRequest: {error}") from None
        self.export_logs(request)
        if LOGS in self.forward:
            self.forward[LOGS](raw)

    def export_logs(self, request: ExportLogsServiceRequest) -> None:
        self.counters.log_requests += 1
        rows: list[tuple[str, str, int, bytes]] = []
        rated: list[tuple[str, str, int, dict[str, Any]]] = []
        for resource_logs in request.resource_logs:
            for scope_logs in resource_logs.scope_logs:
                for record in scope_logs.log_records:
                    if len(record.trace_id) != 16 or not any(record.trace_id):
                        self.counters.log_records_without_trace += 1
                        continue
                    time_ns = record.time_unix_nano or record.observed_time_unix_nano
                    trace_id, span_id = record.trace_id.hex(), record.span_id.hex()
                    found = attributes(record.attributes)
                    if evaluations.is_evaluation(record.event_name, found):
                        rated.append((trace_id, span_id, time_ns, found))
                    else:
                        rows.append((trace_id, span_id, time_ns, record.SerializeToString()))
        try:
            if rows:
                with self.store.transaction() as db:
                    store_traces.add_logs(db, rows, time.time_ns())
            for trace_id, span_id, time_ns, found in rated:
                item = evaluations.evaluation(found, time_ns)
                if item is None:
                    continue  # a label without a score is not a reward
                self.recorder.record(
                    score=item.score,
                    name=item.name,
                    trace_id=trace_id,
                    response_id=item.response_id,
                    span_id=span_id,
                    origin=EVALUATION,
                    time_ns=time_ns,
                )
                self.counters.evaluations_recorded += 1
        except sqlite3.Error as error:
            logger.error("store %s refused log records: %s", self.store.path, error)
            raise ExportRefusedError(f"collector store is not writable ({error}); retry later") from None
        self.counters.log_records_stored += len(rows)
