from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class AccessRequest(_message.Message):
    __slots__ = ("subject", "role", "lifetime_s", "grant_delay_s", "grant_duration_s", "flavor")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_S_FIELD_NUMBER: _ClassVar[int]
    GRANT_DELAY_S_FIELD_NUMBER: _ClassVar[int]
    GRANT_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    subject: str
    role: str
    lifetime_s: float
    grant_delay_s: float
    grant_duration_s: float
    flavor: str
    def __init__(self, subject: _Optional[str] = ..., role: _Optional[str] = ..., lifetime_s: _Optional[float] = ..., grant_delay_s: _Optional[float] = ..., grant_duration_s: _Optional[float] = ..., flavor: _Optional[str] = ...) -> None: ...

class AccessGrant(_message.Message):
    __slots__ = ("token", "grant_id", "grant_start", "grant_end")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    GRANT_ID_FIELD_NUMBER: _ClassVar[int]
    GRANT_START_FIELD_NUMBER: _ClassVar[int]
    GRANT_END_FIELD_NUMBER: _ClassVar[int]
    token: str
    grant_id: str
    grant_start: float
    grant_end: float
    def __init__(self, token: _Optional[str] = ..., grant_id: _Optional[str] = ..., grant_start: _Optional[float] = ..., grant_end: _Optional[float] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("key", "events", "interval_s")
    KEY_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    key: str
    events: int
    interval_s: float
    def __init__(self, key: _Optional[str] = ..., events: _Optional[int] = ..., interval_s: _Optional[float] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("subject", "role", "method", "replica", "aio", "token_mode", "lifetime_s", "grant_delay_s", "grant_duration_s", "flavor", "hold_s", "slow_s", "events", "interval_s")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    AIO_FIELD_NUMBER: _ClassVar[int]
    TOKEN_MODE_FIELD_NUMBER: _ClassVar[int]
    LIFETIME_S_FIELD_NUMBER: _ClassVar[int]
    GRANT_DELAY_S_FIELD_NUMBER: _ClassVar[int]
    GRANT_DURATION_S_FIELD_NUMBER: _ClassVar[int]
    FLAVOR_FIELD_NUMBER: _ClassVar[int]
    HOLD_S_FIELD_NUMBER: _ClassVar[int]
    SLOW_S_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_S_FIELD_NUMBER: _ClassVar[int]
    subject: str
    role: str
    method: str
    replica: str
    aio: bool
    token_mode: str
    lifetime_s: float
    grant_delay_s: float
    grant_duration_s: float
    flavor: str
    hold_s: float
    slow_s: float
    events: int
    interval_s: float
    def __init__(self, subject: _Optional[str] = ..., role: _Optional[str] = ..., method: _Optional[str] = ..., replica: _Optional[str] = ..., aio: _Optional[bool] = ..., token_mode: _Optional[str] = ..., lifetime_s: _Optional[float] = ..., grant_delay_s: _Optional[float] = ..., grant_duration_s: _Optional[float] = ..., flavor: _Optional[str] = ..., hold_s: _Optional[float] = ..., slow_s: _Optional[float] = ..., events: _Optional[int] = ..., interval_s: _Optional[float] = ...) -> None: ...

class Outcome(_message.Message):
    __slots__ = ("trace_id", "code", "reason", "detail")
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    trace_id: str
    code: int
    reason: str
    detail: str
    def __init__(self, trace_id: _Optional[str] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...
