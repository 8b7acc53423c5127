"""The gateway's settings and its counters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from otel_lightning_gateway.routes import Rewrite


@dataclass
class GatewayConfig:
    upstream: str
    rewrite: Rewrite | None = None
    span_attributes: Mapping[str, Any] = field(default_factory=dict)
    # Serve /v1/responses through the upstream's chat completions (token ids); False: pass it on as it is.
    responses_via_chat: bool = True
    # Ask the upstream for token ids and logprobs (vLLM's `return_token_ids`); off for servers that refuse it.
    request_token_ids: bool = True
    # False for servers that cannot stream (our embedded policy server): streamed calls are asked for in
    # one piece and the caller gets its stream made from the whole answer.
    upstream_streams: bool = True
    connect_timeout_s: float = 3.0
    read_timeout_s: float | None = 600.0


@dataclass
class GatewayStats:
    """Counts `otel-lightning status` and the logs can show; nothing the gateway sees goes uncounted."""

    calls: int = 0
    failed: int = 0
    cancelled: int = 0
    upstream_unavailable: int = 0
    unknown_rollouts: int = 0
    proxied: int = 0

    def count(self, name: str) -> None:
        setattr(self, name, getattr(self, name) + 1)  # only the gateway's loop thread counts: no lock

    def as_dict(self) -> dict[str, int]:
        return {key: value for key, value in vars(self).items() if not key.startswith("_")}
