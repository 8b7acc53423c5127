"""The Feedback service over gRPC (`otel_lightning.v1.Feedback/Record`) and HTTP (`POST /v1/feedback`)."""

from __future__ import annotations

import json
import math
from http import HTTPStatus

import grpc

from otel_lightning.v1 import feedback_pb2 as fb
from otel_lightning.v1 import feedback_pb2_grpc as fb_grpc
from otel_lightning_collector.feedback import FeedbackRecorder, FeedbackTargetError, UnknownTargetError

_ID_FIELDS = ("trace_id", "rollout_id", "response_id")


class FeedbackService(fb_grpc.FeedbackServicer):
    def __init__(self, recorder: FeedbackRecorder) -> None:
        self.recorder = recorder

    def _record(self, request: fb.FeedbackRequest) -> fb.FeedbackResponse:
        recorded = self.recorder.record(
            score=request.score,
            name=request.name,
            rollout_id=request.rollout_id,
            trace_id=request.trace_id.lower(),
            response_id=request.response_id,
        )
        return fb.FeedbackResponse(rollout_id=recorded.rollout_id, rollout_completed=recorded.rollout_completed)

    def Record(self, request: fb.FeedbackRequest, context: grpc.ServicerContext) -> fb.FeedbackResponse:  # noqa: N802
        try:
            return self._record(request)
        except FeedbackTargetError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        except UnknownTargetError as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))

    def http(self, body: bytes) -> tuple[HTTPStatus, bytes]:
        """(status, JSON answer) for a JSON body: one of trace_id / rollout_id / response_id, score, name."""
        try:
            document = json.loads(body)
            if not isinstance(document, dict):
                raise ValueError("the body must be a JSON object")
            score = document.get("score")
            if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
                raise FeedbackTargetError("`score` must be a finite number")
            request = fb.FeedbackRequest(
                score=float(score),
                name=str(document.get("name") or ""),
                **{key: str(document.get(key) or "") for key in _ID_FIELDS},
            )
            response = self._record(request)
        except (ValueError, FeedbackTargetError) as error:
            return HTTPStatus.BAD_REQUEST, json.dumps({"error": str(error)}).encode()
        except UnknownTargetError as error:
            return HTTPStatus.NOT_FOUND, json.dumps({"error": str(error)}).encode()
        answer = {"rollout_id": response.rollout_id, "rollout_completed": response.rollout_completed}
        return HTTPStatus.OK, json.dumps(answer).encode()
