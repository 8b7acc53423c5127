"""The worker's model gateway: every model call of every rollout passes it, so token ids are captured
at the model server's door and each call is attributed to its rollout, whatever the agent is written in.

One gateway per worker process, in front of the worker's model server (`--openai-base-url`, else the
environment's OPENAI_BASE_URL); a task that names its own server gets a route to it. Each rollout is
handed `http://127.0.0.1:P/rollout/<id>/v1` as its OPENAI_BASE_URL, and its route (task, attempt, the
rollout span as parent, the policy version) is registered for as long as the agent runs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import Any

from opentelemetry import trace

from otel_lightning import semconv

logger = logging.getLogger(__name__)


class WorkerGateway:
    def __init__(self, upstream: str | None = None, tracer_provider: Any = None) -> None:
        self.upstream = upstream
        self.tracer_provider = tracer_provider
        self._gateway: Any = None
        self._lock = threading.Lock()

    def _started(self, upstream: str) -> Any:
        with self._lock:
            if self._gateway is None:
                from otel_lightning_gateway import Gateway

                self._gateway = Gateway(upstream=self.upstream or upstream, tracer_provider=self.tracer_provider)
                self._gateway.start()
                logger.info("model gateway %s in front of %s", self._gateway.base_url, self.upstream or upstream)
            return self._gateway

    def start(self) -> WorkerGateway:
        """Start now (not at the first rollout) when the default model server is known."""
        if self.upstream:
            self._started(self.upstream)
        return self

    @property
    def base_url(self) -> str | None:
        return self._gateway.base_url if self._gateway is not None else None

    @contextlib.contextmanager
    def rollout_route(self, lease: Any, task_upstream: str | None) -> Iterator[str | None]:
        """The rollout's base URL through the gateway while the agent runs (None: no model server known).

        Call inside the rollout: the current span is the rollout span, the parent of the gateway's spans
        of calls that carry no `traceparent` (an agent without OpenTelemetry).
        """
        upstream = task_upstream or self.upstream
        if not upstream:
            yield None
            return
        from otel_lightning_gateway import RolloutRoute

        gateway = self._started(upstream)
        attributes = {semconv.POLICY_VERSION: lease.policy_version} if lease.policy_version else {}
        gateway.register_rollout(
            RolloutRoute(
                rollout_id=lease.rollout_id,
                task_id=lease.task_id,
                attempt=lease.attempt,
                parent=trace.get_current_span().get_span_context(),
                attributes=attributes,
                upstream=task_upstream if task_upstream and task_upstream != gateway.config.upstream else None,
            )
        )
        try:
            yield gateway.rollout_base_url(lease.rollout_id)
        finally:
            gateway.unregister_rollout(lease.rollout_id)

    def stop(self) -> None:
        with self._lock:
            if self._gateway is not None:
                self._gateway.stop()
                self._gateway = None
