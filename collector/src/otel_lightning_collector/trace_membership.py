"""Which export requests with no rollout span the collector keeps: a rollout is a trace.

A request whose spans carry no `lightning.rollout.id` is kept when one of its traces already belongs
to a rollout (an agent in another language, or a span whose rollout id the SDK's attribute limit
evicted, exporting separately from the rollout's other spans), while workers hold leases (their
agents' spans may come before any span that names the rollout: kept loose, claimed by the rollout's
trace or dropped with the reason), or when `--episodes` keeps all traffic. The check is one indexed
lookup per request; requests with rollout spans skip it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from otel_lightning_collector import store_traces
from otel_lightning_collector.store import Store

# Enough distinct traces per request for the check; a request with more is looked up by these.
_MAX_TRACES_CHECKED = 256
# How long "workers hold leases" is trusted before it is asked again.
_ACTIVE_TTL_S = 0.5


class TraceMembership:
    def __init__(
        self, store: Store, *, keep_all: bool = False, workers_active: Callable[[], bool] | None = None
    ) -> None:
        self.store = store
        self.keep_all = keep_all
        self.workers_active = workers_active
        self._active = (False, 0.0)

    def _workers_active(self) -> bool:
        if self.workers_active is None:
            return False
        active, at = self._active
        if time.monotonic() - at > _ACTIVE_TTL_S:
            active = self.workers_active()
            self._active = (active, time.monotonic())
        return active

    def keeps(self, request: ExportTraceServiceRequest) -> bool:
        if self.keep_all or self._workers_active():
            return True
        traces: set[str] = set()
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    if len(span.trace_id) == 16:
                        traces.add(span.trace_id.hex())
                if len(traces) >= _MAX_TRACES_CHECKED:
                    break
        return bool(traces) and bool(store_traces.owners(self.store.reader(), traces))
