"""The matcher's domain model: disclosure levels, projects, uploads, runs, and every limit.

Storage, the pure core, the use cases and the gRPC edge all speak in these types; each is
defined here once. Nothing here does I/O.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, overload

from blindmatch.matcher.errors import AlreadyExists

if TYPE_CHECKING:  # numpy is not loaded for the CLI's help (tests/test_cli.py)
    import numpy as np
    import numpy.typing as npt

# -- time ----------------------------------------------------------------------------------------

DAY = 86_400.0  # seconds

# -- projects ------------------------------------------------------------------------------------

DEFAULT_THRESHOLD = 0.8  # Dice similarity (a match probability for field-level encodings)
# The lowest threshold a project, a two-server run or S1's proposal takes: below it nearly
# every pair links, and the link-bit circuit's integer bounds (2 * popcount / threshold) no
# longer fit in 64 bits (a two-server project at 5e-324 was created, then its circuits failed
# with an OverflowError; benchmarks/rpcfuzz.py found it).
MIN_THRESHOLD = 0.01
THRESHOLD_RANGE = f"[{MIN_THRESHOLD}, 1]"
MAX_MEMBERS = 64
TWO_MEMBERS_RULE = "a project needs at least two distinct members"  # said by both sides
DEFAULT_RETENTION = 180 * DAY  # a project's data is deleted this long after its creation
MAX_RETENTION = 3653 * DAY  # ten years
# Names, refs and ids are matched whole (`fullmatch`): a pattern ending in `$` under
# `re.match` would accept a trailing newline.
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # project and member names
# NAME_RE said in words, where a name is refused (by the matcher, and by `project create`
# before it asks: cli/projectargs.py).
NAME_RULE = "lower-case letters, digits, '_', '.', '-'; at most 64; starting with a letter or digit"

# -- encodings and uploads -----------------------------------------------------------------------

MAX_CLK_BITS = 8192
# How a project's batch runs are made: "clk", the matcher holds the members' CLKs and
# compares them; "two-server", the members' XOR shares go to two non-colluding servers S1
# and S2 and the matcher holds only popcounts, combining what the circuit on the shares
# reveals (docs/operations.md "A project in two-server mode").
CLK_MODE = "clk"
TWO_SERVER = "two-server"
MODES = (CLK_MODE, TWO_SERVER)
FINGERPRINT_BYTES = 32  # the keyed (schema, secret) fingerprint every encoding carries
MAX_RECORDS = 50_000_000  # per upload
MAX_UPLOAD_BYTES = 16 * 1024**3  # per upload, on disk (memory use is one message at a time)
CLIENT_UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
HEX_DIGITS = frozenset("0123456789abcdef")  # a SHA-256 in hex, once lower-cased

# -- real-time -----------------------------------------------------------------------------------

MAX_QUERY_RECORDS = 1_000  # per query or watch
MAX_INDEX_RECORDS = 50_000_000  # per standing index
REF_RE = re.compile(r"[A-Za-z0-9._:~-]{1,128}")  # standing-index record references
MAX_PURPOSE = 200  # characters
CHANGE_KEY_SECONDS = 7 * DAY  # how long a ChangeIndex retry id is remembered

# -- calls in flight (per member, and query streams in all) -------------------------------------

DEFAULT_STREAMS_PER_MEMBER = 4  # uploads, result fetches and run watches
QUERY_STREAMS_PER_MEMBER = 24
QUERY_STREAMS_IN_ALL = 48
QUERY_STREAM_IDLE_SECONDS = 300.0

# -- every stream, whatever its RPC (matcher/rpc/streams.py, `StreamGuard`) --------------------

RPC_THREADS = 96  # the matcher's request threads; a stream holds one while it is open
MEMBER_STREAMS = 32  # streams of one member (or of the operator) open at once, of any RPC
STREAMS_IN_ALL = 64  # streams of everyone open at once: the other threads answer unary calls
MIN_UNARY_THREADS = 16  # request threads no configuration of streams may take
STREAM_IDLE_SECONDS = 60.0  # waiting this long for a client's next message (or for it to
# take one sent) ends the stream
# Per member and RPC, besides MEMBER_STREAMS (Upload, GetResults and WatchRun share
# DEFAULT_STREAMS_PER_MEMBER; QueryStream has QUERY_STREAMS_PER_MEMBER).
STREAMS_PER_RPC = {"Watch": 8, "ChangeIndex": 2, "ListIndex": 2, "ExportAudit": 2}
MAX_INDEX_CHANGE_BYTES = 256 * 1024**2  # references and CLKs one ChangeIndex stream may carry
AUTH_FAILURES_PER_MINUTE = 60  # refused for their token, from one address, before the next
# calls from it are refused unread (unless their token authenticated recently)
INDEX_CHANGES_HELD = 4  # index changes being received at once may hold this many times that
# How long a two-server watch's comparison waits for its partner's conversion ahead of the
# queries before it goes by pairs (`serve --two-server-watch-wait-seconds`, watchcap;
# realtime/twowait.py): 7 minutes, a lone conversion of the largest partner S1 compares
# whole (1,040,000 records; 323 s wall at 1,000,000 beside a CI run, docs/performance.md)
# with room; what it cuts is a wait behind conversions queued before it.
WATCH_WAIT_SECONDS = 420.0


class IndexPuts(Sequence[tuple[str, bytes]]):
    """An index change's puts, (ref, CLK) pairs, held compactly: the references and one
    buffer of CLKs, not a tuple and a bytes object a record (which took 2 to 3 times the
    CLKs' size)."""

    def __init__(self, clk_bytes: int) -> None:
        self.clk_bytes = clk_bytes
        self.refs: list[str] = []
        self.clks = bytearray()

    def extend(self, refs: Sequence[str], clks: bytes) -> None:
        """Add `refs` and their CLKs (`clk_bytes` each, in order)."""
        self.refs.extend(refs)
        self.clks += clks

    def __len__(self) -> int:
        return len(self.refs)

    @overload
    def __getitem__(self, i: int) -> tuple[str, bytes]: ...

    @overload
    def __getitem__(self, i: slice) -> Sequence[tuple[str, bytes]]: ...

    def __getitem__(self, i: int | slice) -> tuple[str, bytes] | Sequence[tuple[str, bytes]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        start = i * self.clk_bytes
        return self.refs[i], bytes(self.clks[start : start + self.clk_bytes])

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        for i in range(len(self.refs)):
            yield self[i]


def counted(n: int, one: str, many: str = "") -> str:
    """`n` (thousands grouped: "1,234") and its noun, singular for 1 (`counted(1, "query",
    "queries")`: "1 query"); the plural is `one` + "s" unless given. For messages the
    matcher and the command line say."""
    return f"{n:,} {one if n == 1 else many or one + 's'}"


def valid_name(name: str) -> bool:
    """Whether `name` may name a project or a member."""
    return bool(NAME_RE.fullmatch(name))


class Level(enum.IntEnum):
    """Disclosure levels, least to most.

    The numbers are the wire's (protos' `Disclosure`) and the database's; `label` is the
    name the command line, the audit log and the docs use. What each level shows is the
    ladder in `core.disclose`.
    """

    COUNT = 1
    HITS = 2
    MAPPING = 3
    SCORES = 4

    @property
    def label(self) -> str:
        return self.name.lower()


# For messages: "count=1, hits=2, mapping=3, scores=4" and "count, hits, mapping or scores".
LEVEL_NUMBERS = ", ".join(f"{level.label}={int(level)}" for level in Level)
LEVEL_CHOICES = ", ".join(level.label for level in Level if level < Level.SCORES) + " or scores"


@dataclass(frozen=True)
class Project:
    name: str
    disclosure: Level
    threshold: float
    blocking: str = "auto"  # auto | exhaustive | lsh (see usecases.runs.choose_method)
    require_purpose: bool = False
    expires: float = 0.0  # seconds since 1970; its data is deleted then
    require_users: bool = False  # consultations and disclosures need a named user's token
    mode: str = "clk"  # CLK_MODE or TWO_SERVER (see MODES)


@dataclass(frozen=True)
class User:
    """A named user under a member (its own token; the member's administrator manages it)."""

    name: str
    created: float
    revoked: float | None = None


@dataclass(frozen=True)
class Rule:
    """How a pair where both records have a fallback CLK's left-out fields is scored
    (`blindmatch.rule`; core.fallback):
    S = D1 + gap * (D1 - D2) - offset, kept when S >= threshold and D1 >= `candidate_floor`.
    `NO_RULE` (all 0): S = D1, today's rule. Pairs with a lacking record: D2, either way."""

    gap: float = 0.0
    offset: float = 0.0
    reach: float = 0.0  # how far under the threshold the first CLKs' candidates reach

    @property
    def active(self) -> bool:
        return bool(self.gap or self.offset)

    def candidate_floor(self, threshold: float) -> float:
        """The first-CLK Dice a pair needs to be a candidate: the threshold without a rule;
        with one, `threshold - reach`, never under the exact floor (threshold + offset) /
        (1 + gap), below which no pair reaches the threshold (D2 >= 0), nor above the
        threshold or the offset's floor (threshold + offset, where D2 = D1)."""
        if not self.active:
            return threshold
        exact = (threshold + self.offset) / (1 + self.gap)
        return min(max(exact, threshold - self.reach), threshold + max(self.offset, 0.0), 1.0)

    def score(
        self, d1: npt.NDArray[np.float64], d2: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """S of pairs that both have the fields, clipped to [0, 1] (the scale a score has)."""
        if not self.active:
            return d1
        return (d1 + self.gap * (d1 - d2) - self.offset).clip(0.0, 1.0)

    def text(self) -> str:
        """As stored: "GAP,OFFSET,REACH", or "" for no rule (`parse` reads it back)."""
        return f"{self.gap!r},{self.offset!r},{self.reach!r}" if self.active else ""

    @classmethod
    def parse(cls, text: str) -> Rule:
        if not text:
            return cls()
        gap, offset, reach = (float(x) for x in text.split(","))
        return cls(gap, offset, reach)

    def describe(self, threshold: float) -> str:
        if not self.active:
            return f"Dice >= {threshold:g}"
        return (
            f"D1 + {self.gap:g} * (D1 - D2) - {self.offset:g} >= {threshold:g} with D1 >= "
            f"{self.candidate_floor(threshold):.3f} where both records have the fields"
        )


NO_RULE = Rule()


@dataclass(frozen=True)
class Encoding:
    """What a member's encodings are: CLK length and keyed (schema, secret) fingerprint;
    for a standing index, also the length of the fallback CLK at the end of each CLK (0:
    none; core.fallback) and the schema's rule over both CLKs, which its searches need."""

    clk_bits: int
    fingerprint: bytes
    fallback_bits: int = 0
    rule: Rule = NO_RULE


@dataclass(frozen=True)
class Upload:
    id: str
    project: str
    member: str
    record_count: int
    clk_bits: int
    fingerprint: bytes
    sha256: str

    @property
    def encoding(self) -> Encoding:
        return Encoding(self.clk_bits, self.fingerprint)


def retried_upload(
    earlier: Upload,
    client_upload_id: str,
    *,
    sha256: str,
    record_count: int,
    clk_bits: int,
    same_scoring: bool = True,
) -> Upload:
    """`earlier`, acknowledged under `client_upload_id`, when this upload is a retry of it.

    Idempotent retries: the same client-chosen id with the same content is the same upload;
    the same id with other content is refused (the id was reused by mistake). Content
    includes how its pairs are scored (`same_scoring`: the same fallback CLK and rule as
    `earlier`'s): the same CLKs under another rule are not acknowledged as the old ones.
    """
    if not same_scoring or (earlier.sha256, earlier.record_count, earlier.clk_bits) != (
        sha256,
        record_count,
        clk_bits,
    ):
        raise AlreadyExists(
            f"header.client_upload_id: {client_upload_id!r} was already used for a different "
            "upload; use a new id for new content"
        )
    return earlier


@dataclass(frozen=True)
class ChangeSummary:
    """What a standing-index change did, and the index's size after it."""

    added: int
    replaced: int
    removed: int
    record_count: int


def retried_change(
    client_change_id: str, digest: str, earlier: tuple[str, ChangeSummary]
) -> ChangeSummary:
    """The acknowledgement of the change stored earlier under `client_change_id`
    (`earlier`: its digest and summary), when this change is a retry of it: the same id
    with the same content (`digest`); the same id with other content is refused."""
    if earlier[0] != digest:
        raise AlreadyExists(
            f"header.client_change_id: {client_change_id!r} was already used for a different "
            "change; use a new id for a new change"
        )
    return earlier[1]


QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
RUN_STATES = (QUEUED, RUNNING, DONE, FAILED)
ACTIVE = (QUEUED, RUNNING)  # a run in one of these reads its inputs' CLK files


@dataclass(frozen=True)
class Run:
    id: str
    project: str
    state: str  # one of RUN_STATES
    stage: str
    work_done: int
    work_total: int
    groups: int
    message: str
    threshold: float
    tasks_done: int = 0  # comparison tasks finished (on the matcher's threads or a cluster)
    tasks_total: int = 0
    started: float = 0.0  # when it was started (seconds since 1970)


@dataclass(frozen=True)
class Erasure:
    """What erasing a member deleted."""

    uploads: int
    links: int
    users: int  # its named users
    audit_seq: int = 0  # its `erase` entry (and erasure intent: storage/retention_store.py)
    # What of it failed and is being retried while the matcher runs (its intent kept:
    # usecases/erasure_retry.py): one line each; empty when it is complete.
    pending: tuple[str, ...] = ()
    index_records: int = 0  # the records of its standing index deleted


@dataclass(frozen=True)
class QueryQuota:
    """How many records a member may query: a sliding minute and a sliding day."""

    per_minute: int
    per_day: int


# What a member may query when the operator has set nothing.
DEFAULT_QUOTA = QueryQuota(per_minute=1_000, per_day=10_000)

QUERY, WATCH, NOTIFY = "query", "watch", "notify"
# Requests refused for a bad token or bad input, counted in the query volume log (never
# audited): `records` is how many, `refused` the status (matcher/rpc/refusals.py).
REFUSED_REQUEST = "request"
# A watch refused where the operator does not allow watching: the refusal's words, and its
# `refused` in place of the status (FAILED_PRECONDITION) in the volume log, so that
# `admin query-report` says it as such, not as a bad token or bad input.
WATCHING_OFF = "watching is not allowed"
WATCH_NOT_ALLOWED = "WATCH_NOT_ALLOWED"
# A query (or a watch's comparison) S1 refuses over its caps, asking for none of its band
# keys (S1's `--query-band-keys refuse`): words its refusal carries (core/exhaustive.py
# `keys_refused`), and its `refused` in place of the status (FAILED_PRECONDITION) in the
# volume log, so that `admin query-report` says it as S1's refusal, not as the member's bad
# input (a row stored under the status alone could not be told apart later).
S1_REFUSES_KEYS = "--query-band-keys refuse"
OVER_S1_CAPS = "OVER_S1_CAPS"
WATCH_OVER_S1_CAPS = "WATCH_OVER_S1_CAPS"  # a watch S1's caps ended (its comparison's refusal)
# A query whose records S1 and S2 no longer hold when the matcher searches (they keep a
# query's and a watch's records in memory only: one of them restarted since they were sent):
# words its refusal carries (realtime/twopartner.py), and so does the end of a watch for the
# same (realtime/twowatch.py), and its `refused` in the volume log in place of the status
# (FAILED_PRECONDITION): not the member's bad input, and the query took no quota.
RECORDS_NOT_HELD = "the query's records are not at S1 and S2"
WATCH_RECORDS_NOT_HELD = "the watch's records are no longer at S1 and S2"
RECORDS_LOST = "RECORDS_LOST"
WATCH_RECORDS_LOST = "WATCH_RECORDS_LOST"
# How a query the matcher could not answer (UNAVAILABLE: a look-up server down, behind or
# being loaded) is recorded: `refused` is this, then the reason naming the server. Audited
# like any query, never counted against the quota, not the member's doing (not flagged).
UNANSWERED = "unavailable: "


@dataclass(frozen=True)
class QueryRecord:
    """One query, watch or notification, answered or refused: what the query log keeps
    (all but `disclosed`) and the audit log records (never its CLKs)."""

    time: float
    project: str
    member: str  # who asked
    kind: str  # QUERY, WATCH or NOTIFY (or REFUSED_REQUEST)
    purpose: str
    records: int
    records_with_hits: int = 0
    refused: str = ""  # why it was refused; empty when answered
    disclosed: Mapping[str, str] = field(default_factory=dict)  # partner -> level label
    user: str = ""  # the member's named user who asked (or opened the watch), if any
