"""The Agents SDK's own upload of its traces to OpenAI, switched off where otel-lightning says so.

By default the SDK sends every trace to OpenAI's tracing endpoint from a background processor; an
agent run by otel-lightning's worker (offline, or with a local model's placeholder API key) paid
about 3 s per process for it, in retries at exit. With `LIGHTNING_VENDOR_TRACE_UPLOAD=false` (the
worker sets it) the SDK's default processor — the one exporting to OpenAI — takes nothing in, so it
never starts its thread or sends; processors the agent registers itself, and our spans (read where
the SDK dispatches, ahead of every processor), are untouched.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from otel_lightning import semconv
from otel_lightning.lazy_patches import LazyPatches, Patch

logger = logging.getLogger(__name__)

_PROCESSORS = "agents.tracing.processors"


def vendor_upload_enabled() -> bool:
    return os.environ.get(semconv.ENV_VENDOR_TRACE_UPLOAD, "").strip().lower() not in ("0", "false", "no", "off")


def _uploads_to_vendor(processor: Any) -> bool:
    from agents.tracing.processors import BackendSpanExporter

    return isinstance(getattr(processor, "_exporter", None), BackendSpanExporter)


def _dropped_when_uploading(wrapped: Any, instance: Any, args: tuple, kwargs: dict[str, Any]) -> Any:
    if _uploads_to_vendor(instance):
        return None  # not queued: no thread, no request to the vendor, nothing to flush at exit
    return wrapped(*args, **kwargs)


def no_vendor_upload_patches() -> LazyPatches:
    """Patches of the SDK's batch processor that leave out what would go to its vendor's endpoint."""
    return LazyPatches(
        [
            Patch(_PROCESSORS, f"BatchTraceProcessor.{method}", _dropped_when_uploading)
            for method in ("on_trace_start", "on_span_end")
        ]
    )
