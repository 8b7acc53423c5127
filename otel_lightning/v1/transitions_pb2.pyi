from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Transition(_message.Message):
    __slots__ = ("rollout_id", "task_id", "attempt", "step", "agent", "state_json", "action_json", "reward", "next_state_json", "done", "prompt_token_ids", "response_token_ids", "response_logprobs", "policy_version", "model", "rollout_status", "trace_id", "span_id", "token_ids_absent")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    AGENT_FIELD_NUMBER: _ClassVar[int]
    STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    ACTION_JSON_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    NEXT_STATE_JSON_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_STATUS_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_ABSENT_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    task_id: str
    attempt: int
    step: int
    agent: str
    state_json: str
    action_json: str
    reward: float
    next_state_json: str
    done: bool
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    response_token_ids: _containers.RepeatedScalarFieldContainer[int]
    response_logprobs: _containers.RepeatedScalarFieldContainer[float]
    policy_version: str
    model: str
    rollout_status: str
    trace_id: str
    span_id: str
    token_ids_absent: bool
    def __init__(self, rollout_id: _Optional[str] = ..., task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., step: _Optional[int] = ..., agent: _Optional[str] = ..., state_json: _Optional[str] = ..., action_json: _Optional[str] = ..., reward: _Optional[float] = ..., next_state_json: _Optional[str] = ..., done: _Optional[bool] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., response_token_ids: _Optional[_Iterable[int]] = ..., response_logprobs: _Optional[_Iterable[float]] = ..., policy_version: _Optional[str] = ..., model: _Optional[str] = ..., rollout_status: _Optional[str] = ..., trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., token_ids_absent: _Optional[bool] = ...) -> None: ...

class RolloutCompleted(_message.Message):
    __slots__ = ("rollout_id", "task_id", "attempt", "status", "error_type", "error_message", "total_reward", "transition_count", "span_count", "late_span_count", "has_reward", "retried", "error_span_id", "steps_without_token_ids", "token_ids_note", "source")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_REWARD_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_COUNT_FIELD_NUMBER: _ClassVar[int]
    SPAN_COUNT_FIELD_NUMBER: _ClassVar[int]
    LATE_SPAN_COUNT_FIELD_NUMBER: _ClassVar[int]
    HAS_REWARD_FIELD_NUMBER: _ClassVar[int]
    RETRIED_FIELD_NUMBER: _ClassVar[int]
    ERROR_SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    STEPS_WITHOUT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_NOTE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    task_id: str
    attempt: int
    status: str
    error_type: str
    error_message: str
    total_reward: float
    transition_count: int
    span_count: int
    late_span_count: int
    has_reward: bool
    retried: bool
    error_span_id: str
    steps_without_token_ids: int
    token_ids_note: str
    source: str
    def __init__(self, rollout_id: _Optional[str] = ..., task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., status: _Optional[str] = ..., error_type: _Optional[str] = ..., error_message: _Optional[str] = ..., total_reward: _Optional[float] = ..., transition_count: _Optional[int] = ..., span_count: _Optional[int] = ..., late_span_count: _Optional[int] = ..., has_reward: _Optional[bool] = ..., retried: _Optional[bool] = ..., error_span_id: _Optional[str] = ..., steps_without_token_ids: _Optional[int] = ..., token_ids_note: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...

class RewardUpdate(_message.Message):
    __slots__ = ("rollout_id", "task_id", "attempt", "name", "value", "trace_id", "response_id", "origin", "span_id")
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    rollout_id: str
    task_id: str
    attempt: int
    name: str
    value: float
    trace_id: str
    response_id: str
    origin: str
    span_id: str
    def __init__(self, rollout_id: _Optional[str] = ..., task_id: _Optional[str] = ..., attempt: _Optional[int] = ..., name: _Optional[str] = ..., value: _Optional[float] = ..., trace_id: _Optional[str] = ..., response_id: _Optional[str] = ..., origin: _Optional[str] = ..., span_id: _Optional[str] = ...) -> None: ...

class StreamEvent(_message.Message):
    __slots__ = ("sequence", "transition", "rollout", "caught_up", "reward_update")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TRANSITION_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    CAUGHT_UP_FIELD_NUMBER: _ClassVar[int]
    REWARD_UPDATE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    transition: Transition
    rollout: RolloutCompleted
    caught_up: CaughtUp
    reward_update: RewardUpdate
    def __init__(self, sequence: _Optional[int] = ..., transition: _Optional[_Union[Transition, _Mapping]] = ..., rollout: _Optional[_Union[RolloutCompleted, _Mapping]] = ..., caught_up: _Optional[_Union[CaughtUp, _Mapping]] = ..., reward_update: _Optional[_Union[RewardUpdate, _Mapping]] = ...) -> None: ...

class CaughtUp(_message.Message):
    __slots__ = ("last_sequence",)
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    last_sequence: int
    def __init__(self, last_sequence: _Optional[int] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("consumer", "start_after", "follow", "max_in_flight", "from_latest", "reward_updates")
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    START_AFTER_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    MAX_IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    FROM_LATEST_FIELD_NUMBER: _ClassVar[int]
    REWARD_UPDATES_FIELD_NUMBER: _ClassVar[int]
    consumer: str
    start_after: int
    follow: bool
    max_in_flight: int
    from_latest: bool
    reward_updates: bool
    def __init__(self, consumer: _Optional[str] = ..., start_after: _Optional[int] = ..., follow: _Optional[bool] = ..., max_in_flight: _Optional[int] = ..., from_latest: _Optional[bool] = ..., reward_updates: _Optional[bool] = ...) -> None: ...

class Ack(_message.Message):
    __slots__ = ("sequence",)
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    def __init__(self, sequence: _Optional[int] = ...) -> None: ...

class SubscribeRequest(_message.Message):
    __slots__ = ("subscribe", "ack")
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    ACK_FIELD_NUMBER: _ClassVar[int]
    subscribe: Subscribe
    ack: Ack
    def __init__(self, subscribe: _Optional[_Union[Subscribe, _Mapping]] = ..., ack: _Optional[_Union[Ack, _Mapping]] = ...) -> None: ...
