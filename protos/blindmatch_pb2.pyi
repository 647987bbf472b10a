from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Disclosure(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DISCLOSURE_UNSPECIFIED: _ClassVar[Disclosure]
    DISCLOSURE_COUNT: _ClassVar[Disclosure]
    DISCLOSURE_HITS: _ClassVar[Disclosure]
    DISCLOSURE_MAPPING: _ClassVar[Disclosure]
    DISCLOSURE_SCORES: _ClassVar[Disclosure]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_QUEUED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_DONE: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
DISCLOSURE_UNSPECIFIED: Disclosure
DISCLOSURE_COUNT: Disclosure
DISCLOSURE_HITS: Disclosure
DISCLOSURE_MAPPING: Disclosure
DISCLOSURE_SCORES: Disclosure
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_QUEUED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_DONE: RunState
RUN_STATE_FAILED: RunState

class CreateProjectRequest(_message.Message):
    __slots__ = ("name", "members", "disclosure", "threshold", "require_purpose", "expires_unix")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    name: str
    members: _containers.RepeatedScalarFieldContainer[str]
    disclosure: Disclosure
    threshold: float
    require_purpose: bool
    expires_unix: int
    def __init__(self, name: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., disclosure: _Optional[_Union[Disclosure, str]] = ..., threshold: _Optional[float] = ..., require_purpose: _Optional[bool] = ..., expires_unix: _Optional[int] = ...) -> None: ...

class CreateProjectReply(_message.Message):
    __slots__ = ("project", "tokens", "disclosure", "threshold", "require_purpose", "expires_unix")
    class TokensEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    project: str
    tokens: _containers.ScalarMap[str, str]
    disclosure: Disclosure
    threshold: float
    require_purpose: bool
    expires_unix: int
    def __init__(self, project: _Optional[str] = ..., tokens: _Optional[_Mapping[str, str]] = ..., disclosure: _Optional[_Union[Disclosure, str]] = ..., threshold: _Optional[float] = ..., require_purpose: _Optional[bool] = ..., expires_unix: _Optional[int] = ...) -> None: ...

class DescribeProjectRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class MemberInfo(_message.Message):
    __slots__ = ("name", "uploaded", "record_count", "consent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    uploaded: bool
    record_count: int
    consent: Disclosure
    def __init__(self, name: _Optional[str] = ..., uploaded: _Optional[bool] = ..., record_count: _Optional[int] = ..., consent: _Optional[_Union[Disclosure, str]] = ...) -> None: ...

class ProjectInfo(_message.Message):
    __slots__ = ("project", "member", "disclosure", "threshold", "members", "clk_bits", "latest_run", "require_purpose", "expires_unix")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CLK_BITS_FIELD_NUMBER: _ClassVar[int]
    LATEST_RUN_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    project: str
    member: str
    disclosure: Disclosure
    threshold: float
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    clk_bits: int
    latest_run: RunStatus
    require_purpose: bool
    expires_unix: int
    def __init__(self, project: _Optional[str] = ..., member: _Optional[str] = ..., disclosure: _Optional[_Union[Disclosure, str]] = ..., threshold: _Optional[float] = ..., members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ..., clk_bits: _Optional[int] = ..., latest_run: _Optional[_Union[RunStatus, _Mapping]] = ..., require_purpose: _Optional[bool] = ..., expires_unix: _Optional[int] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("project", "clk_bits", "record_count", "fingerprint", "sha256")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    CLK_BITS_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    project: str
    clk_bits: int
    record_count: int
    fingerprint: bytes
    sha256: str
    def __init__(self, project: _Optional[str] = ..., clk_bits: _Optional[int] = ..., record_count: _Optional[int] = ..., fingerprint: _Optional[bytes] = ..., sha256: _Optional[str] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("header", "clks")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CLKS_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    clks: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., clks: _Optional[bytes] = ...) -> None: ...

class UploadReply(_message.Message):
    __slots__ = ("upload_id", "record_count", "sha256")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    record_count: int
    sha256: str
    def __init__(self, upload_id: _Optional[str] = ..., record_count: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("project", "run_id")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    project: str
    run_id: str
    def __init__(self, project: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class RunStatus(_message.Message):
    __slots__ = ("run_id", "state", "stage", "work_done", "work_total", "groups", "message")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    WORK_DONE_FIELD_NUMBER: _ClassVar[int]
    WORK_TOTAL_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: RunState
    stage: str
    work_done: int
    work_total: int
    groups: int
    message: str
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., stage: _Optional[str] = ..., work_done: _Optional[int] = ..., work_total: _Optional[int] = ..., groups: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ResultsRequest(_message.Message):
    __slots__ = ("project", "purpose")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    project: str
    purpose: str
    def __init__(self, project: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class PartnerCount(_message.Message):
    __slots__ = ("partner", "shared", "disclosure")
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_FIELD_NUMBER: _ClassVar[int]
    partner: str
    shared: int
    disclosure: Disclosure
    def __init__(self, partner: _Optional[str] = ..., shared: _Optional[int] = ..., disclosure: _Optional[_Union[Disclosure, str]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("row", "partner", "partner_row", "score")
    ROW_FIELD_NUMBER: _ClassVar[int]
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    PARTNER_ROW_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    row: int
    partner: str
    partner_row: int
    score: float
    def __init__(self, row: _Optional[int] = ..., partner: _Optional[str] = ..., partner_row: _Optional[int] = ..., score: _Optional[float] = ...) -> None: ...

class ResultsHeader(_message.Message):
    __slots__ = ("run_id", "disclosure", "upload_sha256", "record_count", "counts")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    disclosure: Disclosure
    upload_sha256: str
    record_count: int
    counts: _containers.RepeatedCompositeFieldContainer[PartnerCount]
    def __init__(self, run_id: _Optional[str] = ..., disclosure: _Optional[_Union[Disclosure, str]] = ..., upload_sha256: _Optional[str] = ..., record_count: _Optional[int] = ..., counts: _Optional[_Iterable[_Union[PartnerCount, _Mapping]]] = ...) -> None: ...

class HitBatch(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class ResultsChunk(_message.Message):
    __slots__ = ("header", "hits")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    header: ResultsHeader
    hits: HitBatch
    def __init__(self, header: _Optional[_Union[ResultsHeader, _Mapping]] = ..., hits: _Optional[_Union[HitBatch, _Mapping]] = ...) -> None: ...

class SetConsentRequest(_message.Message):
    __slots__ = ("project", "level")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    project: str
    level: Disclosure
    def __init__(self, project: _Optional[str] = ..., level: _Optional[_Union[Disclosure, str]] = ...) -> None: ...

class ConsentReply(_message.Message):
    __slots__ = ("project", "member", "level")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    project: str
    member: str
    level: Disclosure
    def __init__(self, project: _Optional[str] = ..., member: _Optional[str] = ..., level: _Optional[_Union[Disclosure, str]] = ...) -> None: ...

class EraseRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class EraseReply(_message.Message):
    __slots__ = ("uploads_deleted", "links_deleted")
    UPLOADS_DELETED_FIELD_NUMBER: _ClassVar[int]
    LINKS_DELETED_FIELD_NUMBER: _ClassVar[int]
    uploads_deleted: int
    links_deleted: int
    def __init__(self, uploads_deleted: _Optional[int] = ..., links_deleted: _Optional[int] = ...) -> None: ...

class TokenRequest(_message.Message):
    __slots__ = ("project", "member")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    project: str
    member: str
    def __init__(self, project: _Optional[str] = ..., member: _Optional[str] = ...) -> None: ...

class RotateTokenReply(_message.Message):
    __slots__ = ("project", "member", "token")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    project: str
    member: str
    token: str
    def __init__(self, project: _Optional[str] = ..., member: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class RevokeTokenReply(_message.Message):
    __slots__ = ("project", "member")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    project: str
    member: str
    def __init__(self, project: _Optional[str] = ..., member: _Optional[str] = ...) -> None: ...

class ExportAuditRequest(_message.Message):
    __slots__ = ("project", "after_seq")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    project: str
    after_seq: int
    def __init__(self, project: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("seq", "time", "actor", "action", "project", "member", "purpose", "disclosed", "detail", "prev_hash", "hash")
    class DisclosedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    DISCLOSED_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time: float
    actor: str
    action: str
    project: str
    member: str
    purpose: str
    disclosed: _containers.ScalarMap[str, str]
    detail: str
    prev_hash: str
    hash: str
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[float] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., project: _Optional[str] = ..., member: _Optional[str] = ..., purpose: _Optional[str] = ..., disclosed: _Optional[_Mapping[str, str]] = ..., detail: _Optional[str] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ...) -> None: ...

class VerifyAuditRequest(_message.Message):
    __slots__ = ("anchor_seq", "anchor_hash")
    ANCHOR_SEQ_FIELD_NUMBER: _ClassVar[int]
    ANCHOR_HASH_FIELD_NUMBER: _ClassVar[int]
    anchor_seq: int
    anchor_hash: str
    def __init__(self, anchor_seq: _Optional[int] = ..., anchor_hash: _Optional[str] = ...) -> None: ...

class VerifyAuditReply(_message.Message):
    __slots__ = ("ok", "entries", "head_seq", "head_hash", "problems")
    OK_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    problems: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ok: _Optional[bool] = ..., entries: _Optional[int] = ..., head_seq: _Optional[int] = ..., head_hash: _Optional[str] = ..., problems: _Optional[_Iterable[str]] = ...) -> None: ...
