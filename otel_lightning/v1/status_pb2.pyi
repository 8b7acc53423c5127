from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StatusRequest(_message.Message):
    __slots__ = ("window_s", "top_errors")
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    TOP_ERRORS_FIELD_NUMBER: _ClassVar[int]
    window_s: int
    top_errors: int
    def __init__(self, window_s: _Optional[int] = ..., top_errors: _Optional[int] = ...) -> None: ...

class StatusCount(_message.Message):
    __slots__ = ("status", "total", "recent")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    status: str
    total: int
    recent: int
    def __init__(self, status: _Optional[str] = ..., total: _Optional[int] = ..., recent: _Optional[int] = ...) -> None: ...

class ErrorKind(_message.Message):
    __slots__ = ("status", "error_type", "count", "example_rollout_id", "example_task_id", "example_message")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    status: str
    error_type: str
    count: int
    example_rollout_id: str
    example_task_id: str
    example_message: str
    def __init__(self, status: _Optional[str] = ..., error_type: _Optional[str] = ..., count: _Optional[int] = ..., example_rollout_id: _Optional[str] = ..., example_task_id: _Optional[str] = ..., example_message: _Optional[str] = ...) -> None: ...

class ConsumerLag(_message.Message):
    __slots__ = ("consumer", "acked_sequence", "lag")
    CONSUMER_FIELD_NUMBER: _ClassVar[int]
    ACKED_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    consumer: str
    acked_sequence: int
    lag: int
    def __init__(self, consumer: _Optional[str] = ..., acked_sequence: _Optional[int] = ..., lag: _Optional[int] = ...) -> None: ...

class StatusReport(_message.Message):
    __slots__ = ("time_unix_nano", "window_s", "statuses", "top_errors", "rollouts_per_s", "open_rollouts", "last_sequence", "consumers", "pool_queued", "pool_leased", "pool_done", "pool_failed", "spans_pending", "counters")
    class CountersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TIME_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    TOP_ERRORS_FIELD_NUMBER: _ClassVar[int]
    ROLLOUTS_PER_S_FIELD_NUMBER: _ClassVar[int]
    OPEN_ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CONSUMERS_FIELD_NUMBER: _ClassVar[int]
    POOL_QUEUED_FIELD_NUMBER: _ClassVar[int]
    POOL_LEASED_FIELD_NUMBER: _ClassVar[int]
    POOL_DONE_FIELD_NUMBER: _ClassVar[int]
    POOL_FAILED_FIELD_NUMBER: _ClassVar[int]
    SPANS_PENDING_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    time_unix_nano: int
    window_s: int
    statuses: _containers.RepeatedCompositeFieldContainer[StatusCount]
    top_errors: _containers.RepeatedCompositeFieldContainer[ErrorKind]
    rollouts_per_s: float
    open_rollouts: int
    last_sequence: int
    consumers: _containers.RepeatedCompositeFieldContainer[ConsumerLag]
    pool_queued: int
    pool_leased: int
    pool_done: int
    pool_failed: int
    spans_pending: int
    counters: _containers.ScalarMap[str, int]
    def __init__(self, time_unix_nano: _Optional[int] = ..., window_s: _Optional[int] = ..., statuses: _Optional[_Iterable[_Union[StatusCount, _Mapping]]] = ..., top_errors: _Optional[_Iterable[_Union[ErrorKind, _Mapping]]] = ..., rollouts_per_s: _Optional[float] = ..., open_rollouts: _Optional[int] = ..., last_sequence: _Optional[int] = ..., consumers: _Optional[_Iterable[_Union[ConsumerLag, _Mapping]]] = ..., pool_queued: _Optional[int] = ..., pool_leased: _Optional[int] = ..., pool_done: _Optional[int] = ..., pool_failed: _Optional[int] = ..., spans_pending: _Optional[int] = ..., counters: _Optional[_Mapping[str, int]] = ...) -> None: ...
