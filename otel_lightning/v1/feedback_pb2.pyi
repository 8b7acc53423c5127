from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class FeedbackRequest(_message.Message):
    __slots__ = ("trace_id", "rollout_id", "response_id", "name", "score")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    rollout_id: str
    response_id: str
    name: str
    score: float
    def __init__(self, trace_id: _Optional[str] = ..., rollout_id: _Optional[str] = ..., response_id: _Optional[str] = ..., name: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("rollout_id", "rollout_completed")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_COMPLETED_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    rollout_completed: bool
    def __init__(self, rollout_id: _Optional[str] = ..., rollout_completed: _Optional[bool] = ...) -> None: ...
