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

class Blocking(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BLOCKING_UNSPECIFIED: _ClassVar[Blocking]
    BLOCKING_AUTO: _ClassVar[Blocking]
    BLOCKING_EXHAUSTIVE: _ClassVar[Blocking]
    BLOCKING_LSH: _ClassVar[Blocking]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_QUEUED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_DONE: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]

class StartedHeld(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STARTED_HELD_UNASKED: _ClassVar[StartedHeld]
    STARTED_HELD_YES: _ClassVar[StartedHeld]
    STARTED_HELD_NO: _ClassVar[StartedHeld]
DISCLOSURE_UNSPECIFIED: Disclosure
DISCLOSURE_COUNT: Disclosure
DISCLOSURE_HITS: Disclosure
DISCLOSURE_MAPPING: Disclosure
DISCLOSURE_SCORES: Disclosure
BLOCKING_UNSPECIFIED: Blocking
BLOCKING_AUTO: Blocking
BLOCKING_EXHAUSTIVE: Blocking
BLOCKING_LSH: Blocking
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_QUEUED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_DONE: RunState
RUN_STATE_FAILED: RunState
STARTED_HELD_UNASKED: StartedHeld
STARTED_HELD_YES: StartedHeld
STARTED_HELD_NO: StartedHeld

class CreateProjectRequest(_message.Message):
    __slots__ = ("name", "members", "disclosure", "threshold", "blocking", "require_purpose", "expires_unix", "require_users", "mode")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BLOCKING_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_USERS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    members: _containers.RepeatedScalarFieldContainer[str]
    disclosure: Disclosure
    threshold: float
    blocking: Blocking
    require_purpose: bool
    expires_unix: int
    require_users: bool
    mode: str
    def __init__(self, name: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., disclosure: _Optional[_Union[Disclosure, str]] = ..., threshold: _Optional[float] = ..., blocking: _Optional[_Union[Blocking, str]] = ..., require_purpose: _Optional[bool] = ..., expires_unix: _Optional[int] = ..., require_users: _Optional[bool] = ..., mode: _Optional[str] = ...) -> None: ...

class CreateProjectReply(_message.Message):
    __slots__ = ("project", "tokens", "disclosure", "threshold", "blocking", "require_purpose", "expires_unix", "require_users", "mode", "two_server_ready")
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
    BLOCKING_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_USERS_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TWO_SERVER_READY_FIELD_NUMBER: _ClassVar[int]
    project: str
    tokens: _containers.ScalarMap[str, str]
    disclosure: Disclosure
    threshold: float
    blocking: Blocking
    require_purpose: bool
    expires_unix: int
    require_users: bool
    mode: str
    two_server_ready: bool
    def __init__(self, project: _Optional[str] = ..., tokens: _Optional[_Mapping[str, str]] = ..., disclosure: _Optional[_Union[Disclosure, str]] = ..., threshold: _Optional[float] = ..., blocking: _Optional[_Union[Blocking, str]] = ..., require_purpose: _Optional[bool] = ..., expires_unix: _Optional[int] = ..., require_users: _Optional[bool] = ..., mode: _Optional[str] = ..., two_server_ready: _Optional[bool] = ...) -> None: ...

class DescribeProjectRequest(_message.Message):
    __slots__ = ("project", "settings_only")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_ONLY_FIELD_NUMBER: _ClassVar[int]
    project: str
    settings_only: bool
    def __init__(self, project: _Optional[str] = ..., settings_only: _Optional[bool] = ...) -> None: ...

class MemberInfo(_message.Message):
    __slots__ = ("name", "uploaded", "record_count", "consent", "upload_started_unix", "started_at_s1", "started_at_s2")
    NAME_FIELD_NUMBER: _ClassVar[int]
    UPLOADED_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_S1_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_S2_FIELD_NUMBER: _ClassVar[int]
    name: str
    uploaded: bool
    record_count: int
    consent: Disclosure
    upload_started_unix: int
    started_at_s1: StartedHeld
    started_at_s2: StartedHeld
    def __init__(self, name: _Optional[str] = ..., uploaded: _Optional[bool] = ..., record_count: _Optional[int] = ..., consent: _Optional[_Union[Disclosure, str]] = ..., upload_started_unix: _Optional[int] = ..., started_at_s1: _Optional[_Union[StartedHeld, str]] = ..., started_at_s2: _Optional[_Union[StartedHeld, str]] = ...) -> None: ...

class ProjectInfo(_message.Message):
    __slots__ = ("project", "member", "disclosure", "threshold", "members", "clk_bits", "latest_run", "blocking", "require_purpose", "expires_unix", "fingerprint_id", "fingerprint_from", "require_users", "user", "mode", "two_server_s1", "two_server_s2", "two_server_unasked")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    DISCLOSURE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CLK_BITS_FIELD_NUMBER: _ClassVar[int]
    LATEST_RUN_FIELD_NUMBER: _ClassVar[int]
    BLOCKING_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_PURPOSE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_ID_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FROM_FIELD_NUMBER: _ClassVar[int]
    REQUIRE_USERS_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    TWO_SERVER_S1_FIELD_NUMBER: _ClassVar[int]
    TWO_SERVER_S2_FIELD_NUMBER: _ClassVar[int]
    TWO_SERVER_UNASKED_FIELD_NUMBER: _ClassVar[int]
    project: str
    member: str
    disclosure: Disclosure
    threshold: float
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    clk_bits: int
    latest_run: RunStatus
    blocking: Blocking
    require_purpose: bool
    expires_unix: int
    fingerprint_id: str
    fingerprint_from: str
    require_users: bool
    user: str
    mode: str
    two_server_s1: str
    two_server_s2: str
    two_server_unasked: str
    def __init__(self, project: _Optional[str] = ..., member: _Optional[str] = ..., disclosure: _Optional[_Union[Disclosure, str]] = ..., threshold: _Optional[float] = ..., members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ..., clk_bits: _Optional[int] = ..., latest_run: _Optional[_Union[RunStatus, _Mapping]] = ..., blocking: _Optional[_Union[Blocking, str]] = ..., require_purpose: _Optional[bool] = ..., expires_unix: _Optional[int] = ..., fingerprint_id: _Optional[str] = ..., fingerprint_from: _Optional[str] = ..., require_users: _Optional[bool] = ..., user: _Optional[str] = ..., mode: _Optional[str] = ..., two_server_s1: _Optional[str] = ..., two_server_s2: _Optional[str] = ..., two_server_unasked: _Optional[str] = ...) -> None: ...

class ListProjectsRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class ProjectList(_message.Message):
    __slots__ = ("projects",)
    PROJECTS_FIELD_NUMBER: _ClassVar[int]
    projects: _containers.RepeatedCompositeFieldContainer[ProjectInfo]
    def __init__(self, projects: _Optional[_Iterable[_Union[ProjectInfo, _Mapping]]] = ...) -> None: ...

class ScoreRule(_message.Message):
    __slots__ = ("gap", "offset", "reach")
    GAP_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    REACH_FIELD_NUMBER: _ClassVar[int]
    gap: float
    offset: float
    reach: float
    def __init__(self, gap: _Optional[float] = ..., offset: _Optional[float] = ..., reach: _Optional[float] = ...) -> None: ...

class UploadHeader(_message.Message):
    __slots__ = ("project", "clk_bits", "record_count", "fingerprint", "sha256", "client_upload_id", "field_bits", "fallback_bits", "schema_digest", "rule", "two_server_ticket", "two_server_bits", "allow_empty")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    CLK_BITS_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CLIENT_UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    FIELD_BITS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_BITS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_DIGEST_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    TWO_SERVER_TICKET_FIELD_NUMBER: _ClassVar[int]
    TWO_SERVER_BITS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_EMPTY_FIELD_NUMBER: _ClassVar[int]
    project: str
    clk_bits: int
    record_count: int
    fingerprint: bytes
    sha256: str
    client_upload_id: str
    field_bits: _containers.RepeatedScalarFieldContainer[int]
    fallback_bits: int
    schema_digest: str
    rule: ScoreRule
    two_server_ticket: str
    two_server_bits: _containers.RepeatedScalarFieldContainer[int]
    allow_empty: bool
    def __init__(self, project: _Optional[str] = ..., clk_bits: _Optional[int] = ..., record_count: _Optional[int] = ..., fingerprint: _Optional[bytes] = ..., sha256: _Optional[str] = ..., client_upload_id: _Optional[str] = ..., field_bits: _Optional[_Iterable[int]] = ..., fallback_bits: _Optional[int] = ..., schema_digest: _Optional[str] = ..., rule: _Optional[_Union[ScoreRule, _Mapping]] = ..., two_server_ticket: _Optional[str] = ..., two_server_bits: _Optional[_Iterable[int]] = ..., allow_empty: _Optional[bool] = ...) -> None: ...

class UploadRequest(_message.Message):
    __slots__ = ("header", "clks")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CLKS_FIELD_NUMBER: _ClassVar[int]
    header: UploadHeader
    clks: bytes
    def __init__(self, header: _Optional[_Union[UploadHeader, _Mapping]] = ..., clks: _Optional[bytes] = ...) -> None: ...

class UploadReply(_message.Message):
    __slots__ = ("upload_id", "record_count", "sha256", "replayed")
    UPLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    upload_id: str
    record_count: int
    sha256: str
    replayed: bool
    def __init__(self, upload_id: _Optional[str] = ..., record_count: _Optional[int] = ..., sha256: _Optional[str] = ..., replayed: _Optional[bool] = ...) -> None: ...

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
    __slots__ = ("run_id", "state", "stage", "work_done", "work_total", "groups", "message", "tasks_done", "tasks_total", "started_unix")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    WORK_DONE_FIELD_NUMBER: _ClassVar[int]
    WORK_TOTAL_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TASKS_DONE_FIELD_NUMBER: _ClassVar[int]
    TASKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: RunState
    stage: str
    work_done: int
    work_total: int
    groups: int
    message: str
    tasks_done: int
    tasks_total: int
    started_unix: float
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., stage: _Optional[str] = ..., work_done: _Optional[int] = ..., work_total: _Optional[int] = ..., groups: _Optional[int] = ..., message: _Optional[str] = ..., tasks_done: _Optional[int] = ..., tasks_total: _Optional[int] = ..., started_unix: _Optional[float] = ...) -> None: ...

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

class IssueRefRequest(_message.Message):
    __slots__ = ("project", "rows", "partner", "upload_sha256", "purpose")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    project: str
    rows: _containers.RepeatedScalarFieldContainer[int]
    partner: str
    upload_sha256: str
    purpose: str
    def __init__(self, project: _Optional[str] = ..., rows: _Optional[_Iterable[int]] = ..., partner: _Optional[str] = ..., upload_sha256: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class IssuedRef(_message.Message):
    __slots__ = ("partner", "reference")
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    partner: str
    reference: str
    def __init__(self, partner: _Optional[str] = ..., reference: _Optional[str] = ...) -> None: ...

class IssueRefReply(_message.Message):
    __slots__ = ("run_id", "refs", "erased_partners")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    ERASED_PARTNERS_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    refs: _containers.RepeatedCompositeFieldContainer[IssuedRef]
    erased_partners: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_id: _Optional[str] = ..., refs: _Optional[_Iterable[_Union[IssuedRef, _Mapping]]] = ..., erased_partners: _Optional[_Iterable[str]] = ...) -> None: ...

class HitRows(_message.Message):
    __slots__ = ("rows", "partner")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    rows: _containers.RepeatedScalarFieldContainer[int]
    partner: str
    def __init__(self, rows: _Optional[_Iterable[int]] = ..., partner: _Optional[str] = ...) -> None: ...

class IssueRefsRequest(_message.Message):
    __slots__ = ("project", "hits", "upload_sha256", "purpose")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    project: str
    hits: _containers.RepeatedCompositeFieldContainer[HitRows]
    upload_sha256: str
    purpose: str
    def __init__(self, project: _Optional[str] = ..., hits: _Optional[_Iterable[_Union[HitRows, _Mapping]]] = ..., upload_sha256: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class IssueRefsReply(_message.Message):
    __slots__ = ("run_id", "references")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    references: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, run_id: _Optional[str] = ..., references: _Optional[_Iterable[str]] = ...) -> None: ...

class ResolveRefRequest(_message.Message):
    __slots__ = ("project", "reference", "purpose", "upload_sha256")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    project: str
    reference: str
    purpose: str
    upload_sha256: str
    def __init__(self, project: _Optional[str] = ..., reference: _Optional[str] = ..., purpose: _Optional[str] = ..., upload_sha256: _Optional[str] = ...) -> None: ...

class WithdrawRefRequest(_message.Message):
    __slots__ = ("project", "reference", "purpose")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    project: str
    reference: str
    purpose: str
    def __init__(self, project: _Optional[str] = ..., reference: _Optional[str] = ..., purpose: _Optional[str] = ...) -> None: ...

class WithdrawRefReply(_message.Message):
    __slots__ = ("reference", "partner", "run_id", "issued_unix", "withdrawn_unix", "resolved")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_UNIX_FIELD_NUMBER: _ClassVar[int]
    WITHDRAWN_UNIX_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_FIELD_NUMBER: _ClassVar[int]
    reference: str
    partner: str
    run_id: str
    issued_unix: float
    withdrawn_unix: float
    resolved: bool
    def __init__(self, reference: _Optional[str] = ..., partner: _Optional[str] = ..., run_id: _Optional[str] = ..., issued_unix: _Optional[float] = ..., withdrawn_unix: _Optional[float] = ..., resolved: _Optional[bool] = ...) -> None: ...

class ResolveRefReply(_message.Message):
    __slots__ = ("reference", "requester", "run_id", "issued_unix", "rows", "upload_sha256")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    REQUESTER_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUED_UNIX_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_SHA256_FIELD_NUMBER: _ClassVar[int]
    reference: str
    requester: str
    run_id: str
    issued_unix: float
    rows: _containers.RepeatedScalarFieldContainer[int]
    upload_sha256: str
    def __init__(self, reference: _Optional[str] = ..., requester: _Optional[str] = ..., run_id: _Optional[str] = ..., issued_unix: _Optional[float] = ..., rows: _Optional[_Iterable[int]] = ..., upload_sha256: _Optional[str] = ...) -> None: ...

class IndexHeader(_message.Message):
    __slots__ = ("project", "clk_bits", "fingerprint", "fallback_bits", "rule", "client_change_id", "end_follows")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    CLK_BITS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_BITS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    CLIENT_CHANGE_ID_FIELD_NUMBER: _ClassVar[int]
    END_FOLLOWS_FIELD_NUMBER: _ClassVar[int]
    project: str
    clk_bits: int
    fingerprint: bytes
    fallback_bits: int
    rule: ScoreRule
    client_change_id: str
    end_follows: bool
    def __init__(self, project: _Optional[str] = ..., clk_bits: _Optional[int] = ..., fingerprint: _Optional[bytes] = ..., fallback_bits: _Optional[int] = ..., rule: _Optional[_Union[ScoreRule, _Mapping]] = ..., client_change_id: _Optional[str] = ..., end_follows: _Optional[bool] = ...) -> None: ...

class IndexPut(_message.Message):
    __slots__ = ("refs", "clks")
    REFS_FIELD_NUMBER: _ClassVar[int]
    CLKS_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedScalarFieldContainer[str]
    clks: bytes
    def __init__(self, refs: _Optional[_Iterable[str]] = ..., clks: _Optional[bytes] = ...) -> None: ...

class IndexRemove(_message.Message):
    __slots__ = ("refs",)
    REFS_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, refs: _Optional[_Iterable[str]] = ...) -> None: ...

class IndexEnd(_message.Message):
    __slots__ = ("put_refs", "remove_refs")
    PUT_REFS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_REFS_FIELD_NUMBER: _ClassVar[int]
    put_refs: int
    remove_refs: int
    def __init__(self, put_refs: _Optional[int] = ..., remove_refs: _Optional[int] = ...) -> None: ...

class IndexChange(_message.Message):
    __slots__ = ("header", "put", "remove", "end")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    PUT_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    header: IndexHeader
    put: IndexPut
    remove: IndexRemove
    end: IndexEnd
    def __init__(self, header: _Optional[_Union[IndexHeader, _Mapping]] = ..., put: _Optional[_Union[IndexPut, _Mapping]] = ..., remove: _Optional[_Union[IndexRemove, _Mapping]] = ..., end: _Optional[_Union[IndexEnd, _Mapping]] = ...) -> None: ...

class IndexChangeReply(_message.Message):
    __slots__ = ("added", "replaced", "removed", "record_count", "replayed")
    ADDED_FIELD_NUMBER: _ClassVar[int]
    REPLACED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    added: int
    replaced: int
    removed: int
    record_count: int
    replayed: bool
    def __init__(self, added: _Optional[int] = ..., replaced: _Optional[int] = ..., removed: _Optional[int] = ..., record_count: _Optional[int] = ..., replayed: _Optional[bool] = ...) -> None: ...

class ListIndexRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class IndexListing(_message.Message):
    __slots__ = ("refs", "digests", "record_count", "clk_bits")
    REFS_FIELD_NUMBER: _ClassVar[int]
    DIGESTS_FIELD_NUMBER: _ClassVar[int]
    RECORD_COUNT_FIELD_NUMBER: _ClassVar[int]
    CLK_BITS_FIELD_NUMBER: _ClassVar[int]
    refs: _containers.RepeatedScalarFieldContainer[str]
    digests: bytes
    record_count: int
    clk_bits: int
    def __init__(self, refs: _Optional[_Iterable[str]] = ..., digests: _Optional[bytes] = ..., record_count: _Optional[int] = ..., clk_bits: _Optional[int] = ...) -> None: ...

class QueryRequest(_message.Message):
    __slots__ = ("project", "purpose", "clk_bits", "fingerprint", "clks", "fallback_bits", "rule", "two_server_ticket", "two_server_records", "catch_up_ticket")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    CLK_BITS_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    CLKS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_BITS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    TWO_SERVER_TICKET_FIELD_NUMBER: _ClassVar[int]
    TWO_SERVER_RECORDS_FIELD_NUMBER: _ClassVar[int]
    CATCH_UP_TICKET_FIELD_NUMBER: _ClassVar[int]
    project: str
    purpose: str
    clk_bits: int
    fingerprint: bytes
    clks: bytes
    fallback_bits: int
    rule: ScoreRule
    two_server_ticket: str
    two_server_records: int
    catch_up_ticket: str
    def __init__(self, project: _Optional[str] = ..., purpose: _Optional[str] = ..., clk_bits: _Optional[int] = ..., fingerprint: _Optional[bytes] = ..., clks: _Optional[bytes] = ..., fallback_bits: _Optional[int] = ..., rule: _Optional[_Union[ScoreRule, _Mapping]] = ..., two_server_ticket: _Optional[str] = ..., two_server_records: _Optional[int] = ..., catch_up_ticket: _Optional[str] = ...) -> None: ...

class QueryMatch(_message.Message):
    __slots__ = ("partner", "partner_refs", "scores")
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    PARTNER_REFS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    partner: str
    partner_refs: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, partner: _Optional[str] = ..., partner_refs: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[float]] = ...) -> None: ...

class QueryResult(_message.Message):
    __slots__ = ("index", "matches")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MATCHES_FIELD_NUMBER: _ClassVar[int]
    index: int
    matches: _containers.RepeatedCompositeFieldContainer[QueryMatch]
    def __init__(self, index: _Optional[int] = ..., matches: _Optional[_Iterable[_Union[QueryMatch, _Mapping]]] = ...) -> None: ...

class QueryReply(_message.Message):
    __slots__ = ("disclosure", "results", "counts", "partner_levels", "partners", "not_searched")
    class PartnerLevelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Disclosure
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Disclosure, str]] = ...) -> None: ...
    class NotSearchedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DISCLOSURE_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    COUNTS_FIELD_NUMBER: _ClassVar[int]
    PARTNER_LEVELS_FIELD_NUMBER: _ClassVar[int]
    PARTNERS_FIELD_NUMBER: _ClassVar[int]
    NOT_SEARCHED_FIELD_NUMBER: _ClassVar[int]
    disclosure: Disclosure
    results: _containers.RepeatedCompositeFieldContainer[QueryResult]
    counts: _containers.RepeatedCompositeFieldContainer[PartnerCount]
    partner_levels: _containers.ScalarMap[str, Disclosure]
    partners: _containers.RepeatedScalarFieldContainer[str]
    not_searched: _containers.ScalarMap[str, str]
    def __init__(self, disclosure: _Optional[_Union[Disclosure, str]] = ..., results: _Optional[_Iterable[_Union[QueryResult, _Mapping]]] = ..., counts: _Optional[_Iterable[_Union[PartnerCount, _Mapping]]] = ..., partner_levels: _Optional[_Mapping[str, Disclosure]] = ..., partners: _Optional[_Iterable[str]] = ..., not_searched: _Optional[_Mapping[str, str]] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ("ready", "result", "count")
    READY_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    ready: bool
    result: QueryResult
    count: PartnerCount
    def __init__(self, ready: _Optional[bool] = ..., result: _Optional[_Union[QueryResult, _Mapping]] = ..., count: _Optional[_Union[PartnerCount, _Mapping]] = ...) -> None: ...

class QueryLimits(_message.Message):
    __slots__ = ("project", "member", "records_per_minute", "records_per_day", "allow_watch")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    RECORDS_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    RECORDS_PER_DAY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_WATCH_FIELD_NUMBER: _ClassVar[int]
    project: str
    member: str
    records_per_minute: int
    records_per_day: int
    allow_watch: bool
    def __init__(self, project: _Optional[str] = ..., member: _Optional[str] = ..., records_per_minute: _Optional[int] = ..., records_per_day: _Optional[int] = ..., allow_watch: _Optional[bool] = ...) -> None: ...

class QueryReportRequest(_message.Message):
    __slots__ = ("project", "hours")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    HOURS_FIELD_NUMBER: _ClassVar[int]
    project: str
    hours: int
    def __init__(self, project: _Optional[str] = ..., hours: _Optional[int] = ...) -> None: ...

class MemberQueryVolume(_message.Message):
    __slots__ = ("member", "queries", "records", "records_with_hits", "peak_per_minute", "records_per_day_limit", "distinct_purposes", "refused", "flags", "users", "unanswered")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_WITH_HITS_FIELD_NUMBER: _ClassVar[int]
    PEAK_PER_MINUTE_FIELD_NUMBER: _ClassVar[int]
    RECORDS_PER_DAY_LIMIT_FIELD_NUMBER: _ClassVar[int]
    DISTINCT_PURPOSES_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    UNANSWERED_FIELD_NUMBER: _ClassVar[int]
    member: str
    queries: int
    records: int
    records_with_hits: int
    peak_per_minute: int
    records_per_day_limit: int
    distinct_purposes: int
    refused: int
    flags: _containers.RepeatedScalarFieldContainer[str]
    users: _containers.RepeatedCompositeFieldContainer[UserQueryVolume]
    unanswered: int
    def __init__(self, member: _Optional[str] = ..., queries: _Optional[int] = ..., records: _Optional[int] = ..., records_with_hits: _Optional[int] = ..., peak_per_minute: _Optional[int] = ..., records_per_day_limit: _Optional[int] = ..., distinct_purposes: _Optional[int] = ..., refused: _Optional[int] = ..., flags: _Optional[_Iterable[str]] = ..., users: _Optional[_Iterable[_Union[UserQueryVolume, _Mapping]]] = ..., unanswered: _Optional[int] = ...) -> None: ...

class UserQueryVolume(_message.Message):
    __slots__ = ("user", "queries", "records", "records_with_hits", "refused", "bad_requests", "unanswered")
    USER_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_WITH_HITS_FIELD_NUMBER: _ClassVar[int]
    REFUSED_FIELD_NUMBER: _ClassVar[int]
    BAD_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    UNANSWERED_FIELD_NUMBER: _ClassVar[int]
    user: str
    queries: int
    records: int
    records_with_hits: int
    refused: int
    bad_requests: int
    unanswered: int
    def __init__(self, user: _Optional[str] = ..., queries: _Optional[int] = ..., records: _Optional[int] = ..., records_with_hits: _Optional[int] = ..., refused: _Optional[int] = ..., bad_requests: _Optional[int] = ..., unanswered: _Optional[int] = ...) -> None: ...

class QueryReport(_message.Message):
    __slots__ = ("project", "hours", "members")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    HOURS_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    project: str
    hours: int
    members: _containers.RepeatedCompositeFieldContainer[MemberQueryVolume]
    def __init__(self, project: _Optional[str] = ..., hours: _Optional[int] = ..., members: _Optional[_Iterable[_Union[MemberQueryVolume, _Mapping]]] = ...) -> None: ...

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
    __slots__ = ("uploads_deleted", "links_deleted", "users_deleted", "two_server", "pending", "index_records_deleted")
    UPLOADS_DELETED_FIELD_NUMBER: _ClassVar[int]
    LINKS_DELETED_FIELD_NUMBER: _ClassVar[int]
    USERS_DELETED_FIELD_NUMBER: _ClassVar[int]
    TWO_SERVER_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    INDEX_RECORDS_DELETED_FIELD_NUMBER: _ClassVar[int]
    uploads_deleted: int
    links_deleted: int
    users_deleted: int
    two_server: _containers.RepeatedCompositeFieldContainer[ServerForgot]
    pending: _containers.RepeatedScalarFieldContainer[str]
    index_records_deleted: int
    def __init__(self, uploads_deleted: _Optional[int] = ..., links_deleted: _Optional[int] = ..., users_deleted: _Optional[int] = ..., two_server: _Optional[_Iterable[_Union[ServerForgot, _Mapping]]] = ..., pending: _Optional[_Iterable[str]] = ..., index_records_deleted: _Optional[int] = ...) -> None: ...

class EndProjectRequest(_message.Message):
    __slots__ = ("project", "reason")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    project: str
    reason: str
    def __init__(self, project: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EndProjectReply(_message.Message):
    __slots__ = ("project", "uploads_deleted", "runs_deleted", "links_deleted", "users_deleted", "two_server", "audit_seq")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    UPLOADS_DELETED_FIELD_NUMBER: _ClassVar[int]
    RUNS_DELETED_FIELD_NUMBER: _ClassVar[int]
    LINKS_DELETED_FIELD_NUMBER: _ClassVar[int]
    USERS_DELETED_FIELD_NUMBER: _ClassVar[int]
    TWO_SERVER_FIELD_NUMBER: _ClassVar[int]
    AUDIT_SEQ_FIELD_NUMBER: _ClassVar[int]
    project: str
    uploads_deleted: int
    runs_deleted: int
    links_deleted: int
    users_deleted: int
    two_server: _containers.RepeatedCompositeFieldContainer[ServerForgot]
    audit_seq: int
    def __init__(self, project: _Optional[str] = ..., uploads_deleted: _Optional[int] = ..., runs_deleted: _Optional[int] = ..., links_deleted: _Optional[int] = ..., users_deleted: _Optional[int] = ..., two_server: _Optional[_Iterable[_Union[ServerForgot, _Mapping]]] = ..., audit_seq: _Optional[int] = ...) -> None: ...

class ServerForgot(_message.Message):
    __slots__ = ("server", "dropped", "error")
    SERVER_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    server: str
    dropped: int
    error: str
    def __init__(self, server: _Optional[str] = ..., dropped: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("seq", "time", "actor", "action", "project", "member", "purpose", "disclosed", "detail", "prev_hash", "hash", "user")
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
    USER_FIELD_NUMBER: _ClassVar[int]
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
    user: str
    def __init__(self, seq: _Optional[int] = ..., time: _Optional[float] = ..., actor: _Optional[str] = ..., action: _Optional[str] = ..., project: _Optional[str] = ..., member: _Optional[str] = ..., purpose: _Optional[str] = ..., disclosed: _Optional[_Mapping[str, str]] = ..., detail: _Optional[str] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class UserRequest(_message.Message):
    __slots__ = ("project", "user")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    project: str
    user: str
    def __init__(self, project: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class UserToken(_message.Message):
    __slots__ = ("project", "member", "user", "token")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    project: str
    member: str
    user: str
    token: str
    def __init__(self, project: _Optional[str] = ..., member: _Optional[str] = ..., user: _Optional[str] = ..., token: _Optional[str] = ...) -> None: ...

class ListUsersRequest(_message.Message):
    __slots__ = ("project",)
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    project: str
    def __init__(self, project: _Optional[str] = ...) -> None: ...

class UserInfo(_message.Message):
    __slots__ = ("name", "created", "revoked")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    REVOKED_FIELD_NUMBER: _ClassVar[int]
    name: str
    created: float
    revoked: float
    def __init__(self, name: _Optional[str] = ..., created: _Optional[float] = ..., revoked: _Optional[float] = ...) -> None: ...

class UserList(_message.Message):
    __slots__ = ("project", "member", "users")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    USERS_FIELD_NUMBER: _ClassVar[int]
    project: str
    member: str
    users: _containers.RepeatedCompositeFieldContainer[UserInfo]
    def __init__(self, project: _Optional[str] = ..., member: _Optional[str] = ..., users: _Optional[_Iterable[_Union[UserInfo, _Mapping]]] = ...) -> None: ...

class RevokeUserReply(_message.Message):
    __slots__ = ("project", "member", "user")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    project: str
    member: str
    user: str
    def __init__(self, project: _Optional[str] = ..., member: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

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

class ShardSearchRequest(_message.Message):
    __slots__ = ("project", "members", "clk_bits", "clks", "threshold")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CLK_BITS_FIELD_NUMBER: _ClassVar[int]
    CLKS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    project: str
    members: _containers.RepeatedScalarFieldContainer[str]
    clk_bits: int
    clks: bytes
    threshold: float
    def __init__(self, project: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., clk_bits: _Optional[int] = ..., clks: _Optional[bytes] = ..., threshold: _Optional[float] = ...) -> None: ...

class ShardSearchReply(_message.Message):
    __slots__ = ("queries", "members", "refs", "scores", "state")
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    queries: _containers.RepeatedScalarFieldContainer[int]
    members: _containers.RepeatedScalarFieldContainer[int]
    refs: _containers.RepeatedScalarFieldContainer[str]
    scores: _containers.RepeatedScalarFieldContainer[float]
    state: ShardState
    def __init__(self, queries: _Optional[_Iterable[int]] = ..., members: _Optional[_Iterable[int]] = ..., refs: _Optional[_Iterable[str]] = ..., scores: _Optional[_Iterable[float]] = ..., state: _Optional[_Union[ShardState, _Mapping]] = ...) -> None: ...

class ShardChange(_message.Message):
    __slots__ = ("project", "member", "clk_bits", "fallback_bits", "threshold", "rule", "put_refs", "put_clks", "remove_refs", "erase_member", "erase_project", "sent")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    CLK_BITS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_BITS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    PUT_REFS_FIELD_NUMBER: _ClassVar[int]
    PUT_CLKS_FIELD_NUMBER: _ClassVar[int]
    REMOVE_REFS_FIELD_NUMBER: _ClassVar[int]
    ERASE_MEMBER_FIELD_NUMBER: _ClassVar[int]
    ERASE_PROJECT_FIELD_NUMBER: _ClassVar[int]
    SENT_FIELD_NUMBER: _ClassVar[int]
    project: str
    member: str
    clk_bits: int
    fallback_bits: int
    threshold: float
    rule: ScoreRule
    put_refs: _containers.RepeatedScalarFieldContainer[str]
    put_clks: bytes
    remove_refs: _containers.RepeatedScalarFieldContainer[str]
    erase_member: bool
    erase_project: bool
    sent: ShardFence
    def __init__(self, project: _Optional[str] = ..., member: _Optional[str] = ..., clk_bits: _Optional[int] = ..., fallback_bits: _Optional[int] = ..., threshold: _Optional[float] = ..., rule: _Optional[_Union[ScoreRule, _Mapping]] = ..., put_refs: _Optional[_Iterable[str]] = ..., put_clks: _Optional[bytes] = ..., remove_refs: _Optional[_Iterable[str]] = ..., erase_member: _Optional[bool] = ..., erase_project: _Optional[bool] = ..., sent: _Optional[_Union[ShardFence, _Mapping]] = ...) -> None: ...

class ShardFence(_message.Message):
    __slots__ = ("matcher", "seq", "epoch")
    MATCHER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    matcher: str
    seq: int
    epoch: int
    def __init__(self, matcher: _Optional[str] = ..., seq: _Optional[int] = ..., epoch: _Optional[int] = ...) -> None: ...

class ShardLoad(_message.Message):
    __slots__ = ("shard", "shards", "project", "member", "clk_bits", "fallback_bits", "threshold", "refs", "clks", "rule", "after", "parts")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    CLK_BITS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_BITS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    REFS_FIELD_NUMBER: _ClassVar[int]
    CLKS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    PARTS_FIELD_NUMBER: _ClassVar[int]
    shard: int
    shards: int
    project: str
    member: str
    clk_bits: int
    fallback_bits: int
    threshold: float
    refs: _containers.RepeatedScalarFieldContainer[str]
    clks: bytes
    rule: ScoreRule
    after: ShardFence
    parts: int
    def __init__(self, shard: _Optional[int] = ..., shards: _Optional[int] = ..., project: _Optional[str] = ..., member: _Optional[str] = ..., clk_bits: _Optional[int] = ..., fallback_bits: _Optional[int] = ..., threshold: _Optional[float] = ..., refs: _Optional[_Iterable[str]] = ..., clks: _Optional[bytes] = ..., rule: _Optional[_Union[ScoreRule, _Mapping]] = ..., after: _Optional[_Union[ShardFence, _Mapping]] = ..., parts: _Optional[int] = ...) -> None: ...

class ShardReloadRequest(_message.Message):
    __slots__ = ("after",)
    AFTER_FIELD_NUMBER: _ClassVar[int]
    after: ShardFence
    def __init__(self, after: _Optional[_Union[ShardFence, _Mapping]] = ...) -> None: ...

class ShardDescribeRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ShardState(_message.Message):
    __slots__ = ("shard", "shards", "ready", "records", "started", "loaded", "read_after_stop")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    LOADED_FIELD_NUMBER: _ClassVar[int]
    READ_AFTER_STOP_FIELD_NUMBER: _ClassVar[int]
    shard: int
    shards: int
    ready: bool
    records: int
    started: str
    loaded: bool
    read_after_stop: str
    def __init__(self, shard: _Optional[int] = ..., shards: _Optional[int] = ..., ready: _Optional[bool] = ..., records: _Optional[int] = ..., started: _Optional[str] = ..., loaded: _Optional[bool] = ..., read_after_stop: _Optional[str] = ...) -> None: ...

class SharedPart(_message.Message):
    __slots__ = ("member", "clk", "clk_bits", "rows", "bands", "keys", "shares", "popcounts", "popcount_shares", "lacking", "band_lo", "band_counts", "band_keys", "classes", "sealed", "seal_key", "rule", "band_keys_withheld", "band_continued")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    CLK_FIELD_NUMBER: _ClassVar[int]
    CLK_BITS_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    BANDS_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    POPCOUNTS_FIELD_NUMBER: _ClassVar[int]
    POPCOUNT_SHARES_FIELD_NUMBER: _ClassVar[int]
    LACKING_FIELD_NUMBER: _ClassVar[int]
    BAND_LO_FIELD_NUMBER: _ClassVar[int]
    BAND_COUNTS_FIELD_NUMBER: _ClassVar[int]
    BAND_KEYS_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    SEALED_FIELD_NUMBER: _ClassVar[int]
    SEAL_KEY_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    BAND_KEYS_WITHHELD_FIELD_NUMBER: _ClassVar[int]
    BAND_CONTINUED_FIELD_NUMBER: _ClassVar[int]
    member: str
    clk: int
    clk_bits: int
    rows: int
    bands: int
    keys: bytes
    shares: bytes
    popcounts: _containers.RepeatedScalarFieldContainer[int]
    popcount_shares: bytes
    lacking: bytes
    band_lo: int
    band_counts: _containers.RepeatedScalarFieldContainer[int]
    band_keys: bytes
    classes: bytes
    sealed: bytes
    seal_key: bytes
    rule: ScoreRule
    band_keys_withheld: bool
    band_continued: bool
    def __init__(self, member: _Optional[str] = ..., clk: _Optional[int] = ..., clk_bits: _Optional[int] = ..., rows: _Optional[int] = ..., bands: _Optional[int] = ..., keys: _Optional[bytes] = ..., shares: _Optional[bytes] = ..., popcounts: _Optional[_Iterable[int]] = ..., popcount_shares: _Optional[bytes] = ..., lacking: _Optional[bytes] = ..., band_lo: _Optional[int] = ..., band_counts: _Optional[_Iterable[int]] = ..., band_keys: _Optional[bytes] = ..., classes: _Optional[bytes] = ..., sealed: _Optional[bytes] = ..., seal_key: _Optional[bytes] = ..., rule: _Optional[_Union[ScoreRule, _Mapping]] = ..., band_keys_withheld: _Optional[bool] = ..., band_continued: _Optional[bool] = ...) -> None: ...

class SharedReceipt(_message.Message):
    __slots__ = ("member", "records", "clks")
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    CLKS_FIELD_NUMBER: _ClassVar[int]
    member: str
    records: int
    clks: int
    def __init__(self, member: _Optional[str] = ..., records: _Optional[int] = ..., clks: _Optional[int] = ...) -> None: ...

class ProposeRequest(_message.Message):
    __slots__ = ("members", "records", "fallback", "threshold", "buckets", "rule", "only_pairs", "pairs", "resume_pairs")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    FALLBACK_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    ONLY_PAIRS_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    RESUME_PAIRS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[str]
    records: _containers.RepeatedScalarFieldContainer[int]
    fallback: bool
    threshold: float
    buckets: _containers.RepeatedScalarFieldContainer[float]
    rule: ScoreRule
    only_pairs: bool
    pairs: _containers.RepeatedCompositeFieldContainer[MemberPair]
    resume_pairs: _containers.RepeatedCompositeFieldContainer[MemberPair]
    def __init__(self, members: _Optional[_Iterable[str]] = ..., records: _Optional[_Iterable[int]] = ..., fallback: _Optional[bool] = ..., threshold: _Optional[float] = ..., buckets: _Optional[_Iterable[float]] = ..., rule: _Optional[_Union[ScoreRule, _Mapping]] = ..., only_pairs: _Optional[bool] = ..., pairs: _Optional[_Iterable[_Union[MemberPair, _Mapping]]] = ..., resume_pairs: _Optional[_Iterable[_Union[MemberPair, _Mapping]]] = ...) -> None: ...

class MemberPair(_message.Message):
    __slots__ = ("member_a", "member_b")
    MEMBER_A_FIELD_NUMBER: _ClassVar[int]
    MEMBER_B_FIELD_NUMBER: _ClassVar[int]
    member_a: int
    member_b: int
    def __init__(self, member_a: _Optional[int] = ..., member_b: _Optional[int] = ...) -> None: ...

class SealedMatches(_message.Message):
    __slots__ = ("run", "member_a", "member_b", "clk", "tokens_a", "tokens_b")
    RUN_FIELD_NUMBER: _ClassVar[int]
    MEMBER_A_FIELD_NUMBER: _ClassVar[int]
    MEMBER_B_FIELD_NUMBER: _ClassVar[int]
    CLK_FIELD_NUMBER: _ClassVar[int]
    TOKENS_A_FIELD_NUMBER: _ClassVar[int]
    TOKENS_B_FIELD_NUMBER: _ClassVar[int]
    run: ProposeRequest
    member_a: int
    member_b: int
    clk: int
    tokens_a: bytes
    tokens_b: bytes
    def __init__(self, run: _Optional[_Union[ProposeRequest, _Mapping]] = ..., member_a: _Optional[int] = ..., member_b: _Optional[int] = ..., clk: _Optional[int] = ..., tokens_a: _Optional[bytes] = ..., tokens_b: _Optional[bytes] = ...) -> None: ...

class ExpandedPairs(_message.Message):
    __slots__ = ("member_a", "member_b", "clk", "rows_a", "rows_b", "last")
    MEMBER_A_FIELD_NUMBER: _ClassVar[int]
    MEMBER_B_FIELD_NUMBER: _ClassVar[int]
    CLK_FIELD_NUMBER: _ClassVar[int]
    ROWS_A_FIELD_NUMBER: _ClassVar[int]
    ROWS_B_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    member_a: int
    member_b: int
    clk: int
    rows_a: bytes
    rows_b: bytes
    last: bool
    def __init__(self, member_a: _Optional[int] = ..., member_b: _Optional[int] = ..., clk: _Optional[int] = ..., rows_a: _Optional[bytes] = ..., rows_b: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class CandidatePairs(_message.Message):
    __slots__ = ("member_a", "member_b", "clk", "last", "pairs", "block_rows_a", "block_rows_b")
    MEMBER_A_FIELD_NUMBER: _ClassVar[int]
    MEMBER_B_FIELD_NUMBER: _ClassVar[int]
    CLK_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    PAIRS_FIELD_NUMBER: _ClassVar[int]
    BLOCK_ROWS_A_FIELD_NUMBER: _ClassVar[int]
    BLOCK_ROWS_B_FIELD_NUMBER: _ClassVar[int]
    member_a: int
    member_b: int
    clk: int
    last: bool
    pairs: int
    block_rows_a: _containers.RepeatedScalarFieldContainer[int]
    block_rows_b: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, member_a: _Optional[int] = ..., member_b: _Optional[int] = ..., clk: _Optional[int] = ..., last: _Optional[bool] = ..., pairs: _Optional[int] = ..., block_rows_a: _Optional[_Iterable[int]] = ..., block_rows_b: _Optional[_Iterable[int]] = ...) -> None: ...

class CircuitBatch(_message.Message):
    __slots__ = ("batch", "member_a", "member_b", "records_a", "records_b", "clk", "rows_a", "rows_b", "setup", "cutoffs", "proposed", "part", "offset", "count", "rule", "reach", "acknowledged", "blocks", "margin")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    MEMBER_A_FIELD_NUMBER: _ClassVar[int]
    MEMBER_B_FIELD_NUMBER: _ClassVar[int]
    RECORDS_A_FIELD_NUMBER: _ClassVar[int]
    RECORDS_B_FIELD_NUMBER: _ClassVar[int]
    CLK_FIELD_NUMBER: _ClassVar[int]
    ROWS_A_FIELD_NUMBER: _ClassVar[int]
    ROWS_B_FIELD_NUMBER: _ClassVar[int]
    SETUP_FIELD_NUMBER: _ClassVar[int]
    CUTOFFS_FIELD_NUMBER: _ClassVar[int]
    PROPOSED_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    REACH_FIELD_NUMBER: _ClassVar[int]
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    batch: str
    member_a: str
    member_b: str
    records_a: int
    records_b: int
    clk: int
    rows_a: bytes
    rows_b: bytes
    setup: bytes
    cutoffs: _containers.RepeatedScalarFieldContainer[float]
    proposed: bool
    part: int
    offset: int
    count: int
    rule: ScoreRule
    reach: bool
    acknowledged: _containers.RepeatedScalarFieldContainer[str]
    blocks: str
    margin: bool
    def __init__(self, batch: _Optional[str] = ..., member_a: _Optional[str] = ..., member_b: _Optional[str] = ..., records_a: _Optional[int] = ..., records_b: _Optional[int] = ..., clk: _Optional[int] = ..., rows_a: _Optional[bytes] = ..., rows_b: _Optional[bytes] = ..., setup: _Optional[bytes] = ..., cutoffs: _Optional[_Iterable[float]] = ..., proposed: _Optional[bool] = ..., part: _Optional[int] = ..., offset: _Optional[int] = ..., count: _Optional[int] = ..., rule: _Optional[_Union[ScoreRule, _Mapping]] = ..., reach: _Optional[bool] = ..., acknowledged: _Optional[_Iterable[str]] = ..., blocks: _Optional[str] = ..., margin: _Optional[bool] = ...) -> None: ...

class PrepareReply(_message.Message):
    __slots__ = ("largest_batch", "standing_bytes")
    LARGEST_BATCH_FIELD_NUMBER: _ClassVar[int]
    STANDING_BYTES_FIELD_NUMBER: _ClassVar[int]
    largest_batch: int
    standing_bytes: int
    def __init__(self, largest_batch: _Optional[int] = ..., standing_bytes: _Optional[int] = ...) -> None: ...

class BlockDeal(_message.Message):
    __slots__ = ("blocks", "member_a", "member_b", "records_a", "records_b", "clk", "part", "rows_a", "rows_b", "cutoffs", "rule", "setup", "margin", "standing", "standing_piece", "standing_pieces", "standing_drop", "standing_without_mask")
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_A_FIELD_NUMBER: _ClassVar[int]
    MEMBER_B_FIELD_NUMBER: _ClassVar[int]
    RECORDS_A_FIELD_NUMBER: _ClassVar[int]
    RECORDS_B_FIELD_NUMBER: _ClassVar[int]
    CLK_FIELD_NUMBER: _ClassVar[int]
    PART_FIELD_NUMBER: _ClassVar[int]
    ROWS_A_FIELD_NUMBER: _ClassVar[int]
    ROWS_B_FIELD_NUMBER: _ClassVar[int]
    CUTOFFS_FIELD_NUMBER: _ClassVar[int]
    RULE_FIELD_NUMBER: _ClassVar[int]
    SETUP_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    STANDING_FIELD_NUMBER: _ClassVar[int]
    STANDING_PIECE_FIELD_NUMBER: _ClassVar[int]
    STANDING_PIECES_FIELD_NUMBER: _ClassVar[int]
    STANDING_DROP_FIELD_NUMBER: _ClassVar[int]
    STANDING_WITHOUT_MASK_FIELD_NUMBER: _ClassVar[int]
    blocks: str
    member_a: str
    member_b: str
    records_a: int
    records_b: int
    clk: int
    part: int
    rows_a: _containers.RepeatedScalarFieldContainer[int]
    rows_b: _containers.RepeatedScalarFieldContainer[int]
    cutoffs: _containers.RepeatedScalarFieldContainer[float]
    rule: ScoreRule
    setup: bytes
    margin: bool
    standing: str
    standing_piece: int
    standing_pieces: int
    standing_drop: bool
    standing_without_mask: bool
    def __init__(self, blocks: _Optional[str] = ..., member_a: _Optional[str] = ..., member_b: _Optional[str] = ..., records_a: _Optional[int] = ..., records_b: _Optional[int] = ..., clk: _Optional[int] = ..., part: _Optional[int] = ..., rows_a: _Optional[_Iterable[int]] = ..., rows_b: _Optional[_Iterable[int]] = ..., cutoffs: _Optional[_Iterable[float]] = ..., rule: _Optional[_Union[ScoreRule, _Mapping]] = ..., setup: _Optional[bytes] = ..., margin: _Optional[bool] = ..., standing: _Optional[str] = ..., standing_piece: _Optional[int] = ..., standing_pieces: _Optional[int] = ..., standing_drop: _Optional[bool] = ..., standing_without_mask: _Optional[bool] = ...) -> None: ...

class BlocksReply(_message.Message):
    __slots__ = ("round_bytes_sent", "round_bytes_received", "largest_batch", "standing_bytes")
    ROUND_BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    ROUND_BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    LARGEST_BATCH_FIELD_NUMBER: _ClassVar[int]
    STANDING_BYTES_FIELD_NUMBER: _ClassVar[int]
    round_bytes_sent: int
    round_bytes_received: int
    largest_batch: int
    standing_bytes: int
    def __init__(self, round_bytes_sent: _Optional[int] = ..., round_bytes_received: _Optional[int] = ..., largest_batch: _Optional[int] = ..., standing_bytes: _Optional[int] = ...) -> None: ...

class BlockMessage(_message.Message):
    __slots__ = ("blocks", "checked", "run", "rows_a", "rows_b", "nonce", "data", "last")
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    ROWS_A_FIELD_NUMBER: _ClassVar[int]
    ROWS_B_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    blocks: str
    checked: bytes
    run: str
    rows_a: bytes
    rows_b: bytes
    nonce: bytes
    data: bytes
    last: bool
    def __init__(self, blocks: _Optional[str] = ..., checked: _Optional[bytes] = ..., run: _Optional[str] = ..., rows_a: _Optional[bytes] = ..., rows_b: _Optional[bytes] = ..., nonce: _Optional[bytes] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class RoundMessage(_message.Message):
    __slots__ = ("batch", "masked", "checked", "rows_a", "rows_b", "mask", "drop", "run", "nonce", "check", "digest", "replay")
    BATCH_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    CHECKED_FIELD_NUMBER: _ClassVar[int]
    ROWS_A_FIELD_NUMBER: _ClassVar[int]
    ROWS_B_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    DROP_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    CHECK_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    batch: str
    masked: bytes
    checked: bytes
    rows_a: bytes
    rows_b: bytes
    mask: bytes
    drop: bytes
    run: str
    nonce: bytes
    check: bytes
    digest: bytes
    replay: bool
    def __init__(self, batch: _Optional[str] = ..., masked: _Optional[bytes] = ..., checked: _Optional[bytes] = ..., rows_a: _Optional[bytes] = ..., rows_b: _Optional[bytes] = ..., mask: _Optional[bytes] = ..., drop: _Optional[bytes] = ..., run: _Optional[str] = ..., nonce: _Optional[bytes] = ..., check: _Optional[bytes] = ..., digest: _Optional[bytes] = ..., replay: _Optional[bool] = ...) -> None: ...

class CollectRequest(_message.Message):
    __slots__ = ("batch",)
    BATCH_FIELD_NUMBER: _ClassVar[int]
    batch: str
    def __init__(self, batch: _Optional[str] = ...) -> None: ...

class ResumeRequest(_message.Message):
    __slots__ = ("batch",)
    BATCH_FIELD_NUMBER: _ClassVar[int]
    batch: str
    def __init__(self, batch: _Optional[str] = ...) -> None: ...

class AcknowledgeRequest(_message.Message):
    __slots__ = ("batches", "blocks")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedScalarFieldContainer[str]
    blocks: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, batches: _Optional[_Iterable[str]] = ..., blocks: _Optional[_Iterable[str]] = ...) -> None: ...

class AcknowledgeReply(_message.Message):
    __slots__ = ("dropped", "blocks_dropped")
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    BLOCKS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: int
    blocks_dropped: int
    def __init__(self, dropped: _Optional[int] = ..., blocks_dropped: _Optional[int] = ...) -> None: ...

class ForgetRequest(_message.Message):
    __slots__ = ("project", "member")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_FIELD_NUMBER: _ClassVar[int]
    project: str
    member: str
    def __init__(self, project: _Optional[str] = ..., member: _Optional[str] = ...) -> None: ...

class ForgetReply(_message.Message):
    __slots__ = ("dropped",)
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    dropped: int
    def __init__(self, dropped: _Optional[int] = ...) -> None: ...

class HoldsRequest(_message.Message):
    __slots__ = ("names",)
    NAMES_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, names: _Optional[_Iterable[str]] = ...) -> None: ...

class HoldsReply(_message.Message):
    __slots__ = ("held", "standing_bytes", "query_whole_records")
    HELD_FIELD_NUMBER: _ClassVar[int]
    STANDING_BYTES_FIELD_NUMBER: _ClassVar[int]
    QUERY_WHOLE_RECORDS_FIELD_NUMBER: _ClassVar[int]
    held: _containers.RepeatedScalarFieldContainer[bool]
    standing_bytes: int
    query_whole_records: int
    def __init__(self, held: _Optional[_Iterable[bool]] = ..., standing_bytes: _Optional[int] = ..., query_whole_records: _Optional[int] = ...) -> None: ...

class OutputShares(_message.Message):
    __slots__ = ("shares", "round_bytes_sent", "round_bytes_received", "rounds")
    SHARES_FIELD_NUMBER: _ClassVar[int]
    ROUND_BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    ROUND_BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    shares: bytes
    round_bytes_sent: int
    round_bytes_received: int
    rounds: int
    def __init__(self, shares: _Optional[bytes] = ..., round_bytes_sent: _Optional[int] = ..., round_bytes_received: _Optional[int] = ..., rounds: _Optional[int] = ...) -> None: ...

class TwoServerRunRequest(_message.Message):
    __slots__ = ("members", "threshold", "buckets")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[str]
    threshold: float
    buckets: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, members: _Optional[_Iterable[str]] = ..., threshold: _Optional[float] = ..., buckets: _Optional[_Iterable[float]] = ...) -> None: ...

class TwoServerRunReply(_message.Message):
    __slots__ = ("members", "dset", "row", "partner", "partner_row", "score", "groups", "comparisons", "method", "bytes_sent", "rounds")
    class BytesSentEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    DSET_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    PARTNER_FIELD_NUMBER: _ClassVar[int]
    PARTNER_ROW_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    COMPARISONS_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedScalarFieldContainer[str]
    dset: _containers.RepeatedScalarFieldContainer[int]
    row: _containers.RepeatedScalarFieldContainer[int]
    partner: _containers.RepeatedScalarFieldContainer[int]
    partner_row: _containers.RepeatedScalarFieldContainer[int]
    score: _containers.RepeatedScalarFieldContainer[float]
    groups: int
    comparisons: int
    method: str
    bytes_sent: _containers.ScalarMap[str, int]
    rounds: int
    def __init__(self, members: _Optional[_Iterable[str]] = ..., dset: _Optional[_Iterable[int]] = ..., row: _Optional[_Iterable[int]] = ..., partner: _Optional[_Iterable[int]] = ..., partner_row: _Optional[_Iterable[int]] = ..., score: _Optional[_Iterable[float]] = ..., groups: _Optional[int] = ..., comparisons: _Optional[int] = ..., method: _Optional[str] = ..., bytes_sent: _Optional[_Mapping[str, int]] = ..., rounds: _Optional[int] = ...) -> None: ...

class TwoServerTicketRequest(_message.Message):
    __slots__ = ("project", "upload", "query")
    PROJECT_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    project: str
    upload: UploadHeader
    query: bool
    def __init__(self, project: _Optional[str] = ..., upload: _Optional[_Union[UploadHeader, _Mapping]] = ..., query: _Optional[bool] = ...) -> None: ...

class TwoServerTicketReply(_message.Message):
    __slots__ = ("ticket", "name", "s1", "s2", "expires_unix")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    S1_FIELD_NUMBER: _ClassVar[int]
    S2_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_UNIX_FIELD_NUMBER: _ClassVar[int]
    ticket: str
    name: str
    s1: str
    s2: str
    expires_unix: int
    def __init__(self, ticket: _Optional[str] = ..., name: _Optional[str] = ..., s1: _Optional[str] = ..., s2: _Optional[str] = ..., expires_unix: _Optional[int] = ...) -> None: ...
