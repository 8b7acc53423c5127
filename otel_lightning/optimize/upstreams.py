"""Where each candidate's model calls go: its `base_url`, or a policy server started for its checkpoint."""

from __future__ import annotations

import contextlib
import logging
import re
import socket
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from otel_lightning.optimize.candidates import Candidate, PolicyCheckpoint

if TYPE_CHECKING:
    from otel_lightning.train.policy import TorchPolicy
    from otel_lightning.train.policy_server import PolicyServer

logger = logging.getLogger(__name__)

_LAYER_KEY = re.compile(r"^model\.layers\.(\d+)\.")


def load_checkpoint_policy(spec: PolicyCheckpoint) -> TorchPolicy:
    """The policy of a GRPOTrainer checkpoint; a tiny model's size is read from its weights unless given."""
    import torch

    from otel_lightning.train.policies import build_policy
    from otel_lightning.train.trainer import load_policy

    if not spec.checkpoint.exists():
        raise FileNotFoundError(f"checkpoint {spec.checkpoint} does not exist")
    hidden, layers = spec.hidden, spec.layers
    if spec.model == "tiny" and (hidden is None or layers is None):
        weights = torch.load(spec.checkpoint, weights_only=True)["model"]
        hidden = hidden or int(weights["model.embed_tokens.weight"].shape[1])
        layers = layers or 1 + max(int(m.group(1)) for key in weights if (m := _LAYER_KEY.match(key)))
    policy = build_policy(spec.model, hidden=hidden or 64, layers=layers or 2)
    load_policy(policy, spec.checkpoint)
    return policy


def reachable(base_url: str, timeout_s: float = 2.0) -> str | None:
    """None when something listens at `base_url`'s host and port, else why not (a TCP connect, nothing sent)."""
    parts = urlsplit(base_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout_s):
            return None
    except OSError as error:
        return f"{type(error).__name__}: {error}"


class CandidateUpstreams(contextlib.AbstractContextManager):
    """`with CandidateUpstreams(candidates) as upstreams: upstreams.url["trained"]` — policy servers for
    checkpoint candidates run while the block does. A checkpoint that cannot be loaded, or an upstream
    nobody listens at, is logged and kept in `problems` (the candidate's rollouts will fail, counted)."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates
        self.url: dict[str, str] = {}
        self.problems: dict[str, str] = {}
        self.servers: dict[str, PolicyServer] = {}

    def __enter__(self) -> CandidateUpstreams:
        from otel_lightning.train.policy_server import PolicyServer

        by_checkpoint: dict[Path, PolicyServer] = {}
        for candidate in self.candidates:
            if candidate.base_url is not None:
                self.url[candidate.name] = candidate.base_url.rstrip("/")
                problem = reachable(candidate.base_url)
                if problem:
                    self._problem(candidate, f"upstream {candidate.base_url} is unreachable ({problem})")
                continue
            spec = candidate.policy
            assert spec is not None
            server = by_checkpoint.get(spec.checkpoint.resolve())
            if server is None:
                try:
                    server = PolicyServer(load_checkpoint_policy(spec)).start()
                except Exception as error:  # a bad checkpoint fails its candidate, not the evaluation
                    self._problem(candidate, f"cannot serve checkpoint {spec.checkpoint}: {error}")
                    # Calls are refused at once: the rollouts fail and are counted with this reason.
                    self.url[candidate.name] = "http://127.0.0.1:9/v1"
                    continue
                by_checkpoint[spec.checkpoint.resolve()] = server
                self.servers[candidate.name] = server
                logger.info("candidate %s: %s served at %s", candidate.name, spec.checkpoint, server.base_url)
            self.url[candidate.name] = server.base_url
        return self

    def _problem(self, candidate: Candidate, message: str) -> None:
        self.problems[candidate.name] = message
        logger.error("candidate %s: %s; its rollouts will fail and be counted as failed", candidate.name, message)

    def __exit__(self, *exc_info: object) -> None:
        for server in {id(s): s for s in self.servers.values()}.values():
            server.stop()
