from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(_message.Message):
    __slots__ = ("task_id", "input_json", "group_size", "openai_base_url", "policy_version")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    OPENAI_BASE_URL_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    input_json: str
    group_size: int
    openai_base_url: str
    policy_version: str
    def __init__(self, task_id: _Optional[str] = ..., input_json: _Optional[str] = ..., group_size: _Optional[int] = ..., openai_base_url: _Optional[str] = ..., policy_version: _Optional[str] = ...) -> None: ...

class SubmitTasksRequest(_message.Message):
    __slots__ = ("tasks",)
    TASKS_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ...) -> None: ...

class SubmitTasksResponse(_message.Message):
    __slots__ = ("accepted", "already_known")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ALREADY_KNOWN_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    already_known: int
    def __init__(self, accepted: _Optional[int] = ..., already_known: _Optional[int] = ...) -> None: ...

class ClaimRequest(_message.Message):
    __slots__ = ("worker", "lease_s", "wait_s")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    WAIT_S_FIELD_NUMBER: _ClassVar[int]
    worker: str
    lease_s: float
    wait_s: float
    def __init__(self, worker: _Optional[str] = ..., lease_s: _Optional[float] = ..., wait_s: _Optional[float] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("lease_id", "task_id", "input_json", "sample", "attempt", "rollout_id", "lease_s", "openai_base_url", "policy_version")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_JSON_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_S_FIELD_NUMBER: _ClassVar[int]
    OPENAI_BASE_URL_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    task_id: str
    input_json: str
    sample: int
    attempt: int
    rollout_id: str
    lease_s: float
    openai_base_url: str
    policy_version: str
    def __init__(self, lease_id: _Optional[str] = ..., task_id: _Optional[str] = ..., input_json: _Optional[str] = ..., sample: _Optional[int] = ..., attempt: _Optional[int] = ..., rollout_id: _Optional[str] = ..., lease_s: _Optional[float] = ..., openai_base_url: _Optional[str] = ..., policy_version: _Optional[str] = ...) -> None: ...

class ClaimResponse(_message.Message):
    __slots__ = ("lease",)
    LEASE_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("lease_id",)
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    def __init__(self, lease_id: _Optional[str] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("valid",)
    VALID_FIELD_NUMBER: _ClassVar[int]
    valid: bool
    def __init__(self, valid: _Optional[bool] = ...) -> None: ...

class CompleteRequest(_message.Message):
    __slots__ = ("lease_id", "status", "error_type", "error_message", "requeue")
    LEASE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_TYPE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEUE_FIELD_NUMBER: _ClassVar[int]
    lease_id: str
    status: str
    error_type: str
    error_message: str
    requeue: bool
    def __init__(self, lease_id: _Optional[str] = ..., status: _Optional[str] = ..., error_type: _Optional[str] = ..., error_message: _Optional[str] = ..., requeue: _Optional[bool] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    def __init__(self, accepted: _Optional[bool] = ...) -> None: ...

class SampleStatesRequest(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    def __init__(self, task_id: _Optional[str] = ...) -> None: ...

class SampleState(_message.Message):
    __slots__ = ("sample", "state", "attempts", "status", "error", "rollout_id")
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_ID_FIELD_NUMBER: _ClassVar[int]
    sample: int
    state: str
    attempts: int
    status: str
    error: str
    rollout_id: str
    def __init__(self, sample: _Optional[int] = ..., state: _Optional[str] = ..., attempts: _Optional[int] = ..., status: _Optional[str] = ..., error: _Optional[str] = ..., rollout_id: _Optional[str] = ...) -> None: ...

class SampleStatesResponse(_message.Message):
    __slots__ = ("samples",)
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedCompositeFieldContainer[SampleState]
    def __init__(self, samples: _Optional[_Iterable[_Union[SampleState, _Mapping]]] = ...) -> None: ...

class PoolStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PoolStats(_message.Message):
    __slots__ = ("queued", "leased", "done", "failed")
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    LEASED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    queued: int
    leased: int
    done: int
    failed: int
    def __init__(self, queued: _Optional[int] = ..., leased: _Optional[int] = ..., done: _Optional[int] = ..., failed: _Optional[int] = ...) -> None: ...
