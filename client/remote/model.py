"""What the matcher tells a member or the operator, as plain dataclasses.

`MatcherClient` returns these and nothing else: no protobuf message leaves the
remote side (`client.remote.convert` builds them from the wire). Disclosure
levels and blocking methods are their names here (`"hits"`, `"lsh"`), never the
wire's enum numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LEVELS = ("count", "hits", "mapping", "scores")  # least to most disclosed
BLOCKINGS = ("auto", "exhaustive", "lsh")


@dataclass(frozen=True)
class ProjectTokens:
    """A new project and its members' tokens (shown once)."""

    project: str
    tokens: dict[str, str]
    disclosure: str
    threshold: float
    blocking: str = "auto"
    require_purpose: bool = False
    expires_unix: int = 0
    require_users: bool = False
    mode: str = "clk"  # or "two-server"
    two_server_ready: bool = False  # the matcher has S1 and S2 (False: an older matcher)


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    state: str  # queued, running, done, failed
    stage: str
    work_done: int
    work_total: int
    groups: int  # once done: how many of this member's records a partner holds (0 where its
    # level does not let it count them); never the run-wide total
    message: str
    tasks_done: int = 0  # comparison tasks finished, wherever they ran (a cluster's workers)
    tasks_total: int = 0
    started_unix: float = 0.0  # when the run was started


@dataclass(frozen=True)
class MemberState:
    """One member of a project as `describe` shows it."""

    name: str
    uploaded: bool
    record_count: int
    consent: str | None  # the most it lets partners learn; None: no limit of its own
    started_unix: int = 0  # a two-server upload started and not finished (0: none)
    # Where that upload's shares are, as S1 and S2 answered: "held", "not held" or "" (not
    # asked: a partner's, or the role did not answer; ProjectInfo.two_server_unasked)
    started_at_s1: str = ""
    started_at_s2: str = ""

    @property
    def whole(self) -> bool:
        """Whether it holds an upload that is whole: at the matcher, and no later one cut
        part-way (a two-server upload's shares at S1 or S2 only)."""
        return self.uploaded and (
            not self.started_unix or self.started_at_s1 == self.started_at_s2 == "not held"
        )  # (a started upload that reached neither S1 nor S2 left the earlier one whole)


def said_blocking(mode: str, blocking: str) -> str:
    """A project's blocking as the commands say it: in a two-server project S1 proposes the
    pairs (compared whole, or blocked, by its own caps), whatever `blocking` holds."""
    return "by S1" if mode == "two-server" else blocking


@dataclass(frozen=True)
class ProjectInfo:
    """A project as the asking member (`MatcherClient.describe`) or the operator
    (`MatcherClient.list_projects`, `member` empty) sees it."""

    project: str
    member: str  # who asked; empty: the operator
    disclosure: str
    threshold: float
    members: list[MemberState]
    clk_bits: int  # 0 until the first upload
    blocking: str
    require_purpose: bool
    expires_unix: int
    latest_run: RunProgress | None
    fingerprint_id: str = ""  # the project's encodings' (protos/wire.py); "" before any upload
    fingerprint_from: str = ""  # the member whose upload set it
    require_users: bool = False
    user: str = ""  # the named user asking; empty: the member's own token
    mode: str = "clk"  # "two-server": CLKs never go to the matcher (two_server_s1/s2 do)
    two_server_s1: str = ""  # S1's address (two-server), where first shares go
    two_server_s2: str = ""  # S2's address, where second shares go
    two_server_unasked: str = ""  # why S1 or S2 was not asked where a started upload is

    @property
    def blocking_said(self) -> str:
        """The blocking as `project show` and `report` say it: a two-server run's pairs are
        S1's to propose (by its own caps), whatever `blocking` was left at."""
        return said_blocking(self.mode, self.blocking)


@dataclass(frozen=True)
class UserInfo:
    """A named user under a member (`MatcherClient.list_users`)."""

    name: str
    created: float  # seconds since 1970, UTC
    revoked: float | None  # None: its token works


@dataclass(frozen=True)
class TwoServerTicket:
    """What admits a member's upload at S1 and S2 in a two-server project."""

    ticket: str  # the bearer token for S1's and S2's Upload
    name: str  # the member's upload's name there: project/member/tag
    s1: str
    s2: str
    expires_unix: int


@dataclass(frozen=True)
class UploadReceipt:
    """The matcher's acknowledgement of an upload (stored durably when it is returned)."""

    upload_id: str
    record_count: int
    sha256: str
    replayed: bool  # acknowledges an earlier attempt with the same client upload id


@dataclass(frozen=True)
class Erased:
    uploads: int
    links: int
    users: int  # named users deleted (0 from a matcher before this count)
    # A two-server project: (server, uploads it dropped, why it could not: "" when it did)
    two_server: tuple[tuple[str, int, str], ...] = ()
    # What of the erasure is still pending (the matcher retries it in the background):
    # one line each; empty when complete (or from a matcher before this was said)
    pending: tuple[str, ...] = ()
    index_records: int = 0  # its standing index's records deleted (0: none kept)


@dataclass(frozen=True)
class Ended:
    """A project the operator ended before its date (`EndProject`): what was deleted."""

    project: str
    uploads: int
    runs: int
    links: int
    users: int
    # A two-server project: (server, uploads it dropped, why it could not: "" when it did)
    two_server: tuple[tuple[str, int, str], ...]
    audit_seq: int  # its `project.expire` entry


@dataclass(frozen=True)
class AuditCheck:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    problems: list[str]


@dataclass(frozen=True)
class ResultHit:
    row: int
    partner: str
    partner_row: int
    score: float


@dataclass
class Results:
    run_id: str
    disclosure: str
    upload_sha256: str
    record_count: int
    counts: dict[str, int]
    hits: list[ResultHit] = field(default_factory=list)
    # partner -> what this member learns about it (the lesser of the project's level and
    # the partner's consent); partners without shared subjects are not listed
    levels: dict[str, str] = field(default_factory=dict)

    def level_of(self, partner: str) -> str:
        return self.levels.get(partner, self.disclosure)


@dataclass(frozen=True)
class IndexSummary:
    """What one index change did, and the index's size afterwards."""

    added: int
    replaced: int
    removed: int
    record_count: int
    replayed: bool = False  # a retry of a change the matcher had stored: acknowledged again


@dataclass(frozen=True)
class PartnerMatch:
    """A partner holding a queried record; refs (mapping) and scores (scores) when allowed."""

    partner: str
    refs: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()


@dataclass
class QueryAnswer:
    """The matcher's answer to a query, one entry of `results` per queried CLK."""

    disclosure: str  # the project's level
    results: list[list[PartnerMatch]]
    counts: dict[str, int]  # per partner: how many queried records it holds
    partner_levels: dict[str, str]  # the most each partner's answer reveals
    partners: list[str]  # partners with a standing index (two-server: an upload) searched
    not_searched: dict[str, str] = field(default_factory=dict)  # partner -> why (two-server)


@dataclass(frozen=True)
class WatchEvent:
    """A partner newly holds watched record `index` (None at count: only the fact).
    `caught_up`: found by the query a two-server watch re-opened with its band keys runs to
    catch up on the uploads the ended watch did not compare (docs/realtime.md "Watching in a
    two-server project"); one of a (record, partner) the watch told already is not told
    again (`twoserver_realtime.py` `untold`)."""

    partner: str
    index: int | None
    match: PartnerMatch | None
    caught_up: bool = False


@dataclass(frozen=True)
class QueryLimits:
    project: str
    member: str
    per_minute: int
    per_day: int
    allow_watch: bool


@dataclass(frozen=True)
class MemberVolume:
    member: str
    queries: int
    records: int
    records_with_hits: int
    peak_per_minute: int
    per_day_limit: int
    distinct_purposes: int
    refused: int
    flags: list[str]
    users: list[UserVolume]  # each named user's share of the row
    # Queries the matcher could not answer (UNAVAILABLE: a look-up server down or being
    # loaded): audited, not counted against the quota, not flagged (not the member's doing).
    unanswered: int = 0


@dataclass(frozen=True)
class UserVolume:
    user: str
    queries: int
    records: int
    records_with_hits: int
    refused: int  # queries refused for exceeding limits
    bad_requests: int  # requests refused for a bad token or bad input
    unanswered: int = 0  # queries the matcher could not answer (UNAVAILABLE)


@dataclass(frozen=True)
class IssuedRefs:
    """Request references for one record: partner -> reference, from one run's hits."""

    run_id: str
    refs: dict[str, str]
    # Asked of every partner: those whose data of the run is gone (erased since it), whom
    # no reference could be issued for (empty from a matcher older than the field).
    erased: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HitRefs:
    """Request references for many hits at once: one per hit, in the hits' order."""

    run_id: str
    references: list[str]


@dataclass(frozen=True)
class ResolvedRef:
    """A reference addressed to this member: its own rows that the requester's record matched."""

    reference: str
    requester: str
    run_id: str
    issued_unix: float
    rows: tuple[int, ...]
    upload_sha256: str  # this member's upload the rows are of


@dataclass(frozen=True)
class WithdrawnRef:
    """A reference this member withdrew: its partner can resolve it no more."""

    reference: str
    partner: str
    run_id: str  # "" for one a two-server query's answer carried
    issued_unix: float
    withdrawn_unix: float
    resolved: bool  # the partner had resolved it before
