"""The collector's parts for traces from anyone (issue 13), set up beside the core pipeline:
membership by trace, logs and metrics, feedback, episodes, and what is not kept."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import grpc

from otel_lightning.v1 import feedback_pb2_grpc as fb_grpc
from otel_lightning_collector.annotations import SpanAnnotationService
from otel_lightning_collector.assembler import RolloutAssembler
from otel_lightning_collector.episodes import NO_ROLLOUT, LooseTraces
from otel_lightning_collector.feedback import FeedbackRecorder
from otel_lightning_collector.feedback_service import FeedbackService
from otel_lightning_collector.forwarder import OtlpForwarder
from otel_lightning_collector.not_kept import NotKept
from otel_lightning_collector.notifier import Notifier
from otel_lightning_collector.otlp_http import OtlpHttpReceiver
from otel_lightning_collector.otlp_receiver import OtlpTraceReceiver
from otel_lightning_collector.signal_intake import LOGS, METRICS, SignalIntake
from otel_lightning_collector.store import Store
from otel_lightning_collector.trace_intake import TraceIntake
from otel_lightning_collector.trace_membership import TraceMembership


@dataclass
class TraceExtrasConfig:
    # Turn traces with LLM calls and no rollout into episodes (production traffic).
    episodes: bool = False
    # An episode is complete once its trace has been quiet this long.
    episode_idle_s: float = 30.0
    # How long spans with no rollout wait for one before they are dropped (without --episodes).
    loose_keep_s: float = 600.0
    forward_to: str | None = None
    forward_queue_bytes: int = 64 * 1024 * 1024


class TraceExtras:
    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        intake: TraceIntake,
        assembler: RolloutAssembler,
        receiver: OtlpTraceReceiver,
        config: TraceExtrasConfig,
        workers_active: Callable[[], bool] | None = None,
    ) -> None:
        self.not_kept = NotKept()
        self.recorder = FeedbackRecorder(store, notifier)
        self.forwarders = (
            {
                signal: OtlpForwarder(config.forward_to, max_queue_bytes=config.forward_queue_bytes // 2, signal=signal)
                for signal in (LOGS, METRICS)
            }
            if config.forward_to
            else {}
        )
        self.signals = SignalIntake(store, self.recorder, forward=dict(self.forwarders))
        self.feedback = FeedbackService(self.recorder)
        self.annotations = SpanAnnotationService(store, self.recorder, wait_indexed=intake.indexer.flush)
        self.membership = TraceMembership(store, keep_all=config.episodes, workers_active=workers_active)
        intake.keeps = self.membership.keeps
        intake.not_kept = lambda spans: self.not_kept.note(NO_ROLLOUT, spans)
        receiver.signals = self.signals
        assembler.inputs.recorder = self.recorder
        self.loose = LooseTraces(
            store,
            assembler.complete,
            episodes=config.episodes,
            idle_s=config.episode_idle_s,
            keep_s=config.loose_keep_s,
            not_kept=self.not_kept,
        )
        assembler.loose = self.loose
        self.assembler = assembler

    def serve(self, server: grpc.Server, http: OtlpHttpReceiver | None) -> None:
        fb_grpc.add_FeedbackServicer_to_server(self.feedback, server)
        if http is not None:
            http._server.signals = self.signals
            http._server.feedback = self.feedback
            http._server.annotations = self.annotations

    def start(self) -> None:
        for forwarder in self.forwarders.values():
            forwarder.start()
        self.annotations.start()

    def stop(self) -> None:
        self.annotations.stop()
        for forwarder in self.forwarders.values():
            forwarder.stop()

    def counters(self) -> dict[str, int]:
        found = {f"signals.{k}": v for k, v in vars(self.signals.counters).items()}
        found.update({f"episodes.{k}": v for k, v in vars(self.loose.counters).items()})
        found["feedback.recorded"] = self.recorder.recorded
        found["feedback.reward_updates"] = self.recorder.reward_updates
        found.update({f"annotations.{k}": v for k, v in vars(self.annotations.counters).items()})
        found["not_kept.spans"] = self.not_kept.total
        found["assembly.steps_without_token_ids"] = self.assembler.inputs.steps_without_token_ids
        for signal, forwarder in self.forwarders.items():
            found[f"forward_{signal}.requests_forwarded"] = forwarder.counters.requests_forwarded
        return found
