"""A typed client for the matcher: callers get our exceptions, never grpc.RpcError.

Transient failures (the matcher restarting, a dropped connection, a per-member
limit on calls in flight) are retried with exponential backoff and jitter; see
`client.retry`. An upload is retried by restarting its stream with the same
client-chosen upload id, so the matcher stores it once however often it is sent.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

import grpc

from blindmatch.client.encoded import Encoded
from blindmatch.client.errors import (
    AuthError,
    BusyError,
    MatcherError,
    NotFoundError,
    RejectedError,
    UnavailableError,
)
from blindmatch.client.retry import RetryPolicy, is_busy
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from blindmatch.client.session import QuerySession

# Bytes of whole CLKs per upload message: well under gRPC's 16 MiB message limit.
UPLOAD_BYTES_PER_MESSAGE = 2 * 1024 * 1024

LEVELS = {"count": 1, "hits": 2, "mapping": 3, "scores": 4}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}
BLOCKINGS = {"auto": 1, "exhaustive": 2, "lsh": 3}
BLOCKING_NAMES = {v: k for k, v in BLOCKINGS.items()} | {0: "auto"}

_ERRORS: dict[grpc.StatusCode, type[MatcherError]] = {
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.PERMISSION_DENIED: AuthError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: RejectedError,
    grpc.StatusCode.FAILED_PRECONDITION: RejectedError,
    grpc.StatusCode.ALREADY_EXISTS: RejectedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RejectedError,
    grpc.StatusCode.OUT_OF_RANGE: RejectedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
}


_TLS_WORDS = ("ssl", "tls", "handshake", "certificate", "socket closed")
TLS_HINT = (
    "; if the matcher uses TLS, pass --ca-cert (and --client-cert/--client-key when it "
    "requires client certificates); see docs/security.md"
)


@contextmanager
def translate_errors(target: str) -> Iterator[None]:
    """Turn a failed gRPC call into the matching `MatcherError` subclass."""
    try:
        yield
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        cls = _ERRORS.get(code, MatcherError)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and is_busy(exc):
            cls = BusyError
        if cls is UnavailableError:
            hint = TLS_HINT if any(w in detail.lower() for w in _TLS_WORDS) else ""
            detail = f"cannot reach the matcher at {target}: {detail}{hint}"
        raise cls(f"{detail} [{code.name}]") from None


T = TypeVar("T")
TRANSIENT = (UnavailableError, BusyError)


@dataclass(frozen=True)
class ProjectTokens:
    project: str
    tokens: dict[str, str]
    disclosure: str
    threshold: float
    blocking: str = "auto"
    require_purpose: bool = False
    expires_unix: int = 0


@dataclass(frozen=True)
class Erased:
    uploads: int
    links: int


@dataclass(frozen=True)
class AuditCheck:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    problems: list[str]


@dataclass(frozen=True)
class RunProgress:
    run_id: str
    state: str  # queued, running, done, failed
    stage: str
    work_done: int
    work_total: int
    groups: int
    message: str
    tasks_done: int = 0  # comparison tasks finished, wherever they ran (a cluster's workers)
    tasks_total: int = 0

    @classmethod
    def from_pb(cls, msg: pb.RunStatus) -> RunProgress:
        state = pb.RunState.Name(msg.state).removeprefix("RUN_STATE_").lower()
        return cls(
            msg.run_id, state, msg.stage, msg.work_done, msg.work_total, msg.groups, msg.message,
            msg.tasks_done, msg.tasks_total,
        )  # fmt: skip


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
    partners: list[str]  # partners with a standing index that were searched


@dataclass(frozen=True)
class WatchEvent:
    """A partner newly holds watched record `index` (None at count: only the fact)."""

    partner: str
    index: int | None
    match: PartnerMatch | None


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


def _clk_bytes(clks: bytes | Sequence[bytes]) -> bytes:
    return clks if isinstance(clks, bytes) else b"".join(clks)


def content_upload_id(project: str, encoded: Encoded) -> str:
    """The upload id of `encoded`'s content sent to `project`: the same every time, so
    running `blindmatch upload` again (after a kill, say) stores nothing twice."""
    parts = [
        project,
        encoded.sha256,
        str(encoded.clk_bits),
        encoded.fingerprint.hex(),
        ",".join(map(str, encoded.field_bits)),
        str(encoded.fallback_bits),
    ]
    return "c-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:48]


def query_request(
    project: str,
    clks: bytes | Sequence[bytes],
    clk_bits: int,
    fingerprint: bytes,
    purpose: str,
) -> pb.QueryRequest:
    return pb.QueryRequest(
        project=project,
        purpose=purpose,
        clk_bits=clk_bits,
        fingerprint=fingerprint,
        clks=_clk_bytes(clks),
    )


def query_answer(reply: pb.QueryReply) -> QueryAnswer:
    results = [
        [PartnerMatch(m.partner, tuple(m.partner_refs), tuple(m.scores)) for m in r.matches]
        for r in reply.results
    ]
    return QueryAnswer(
        disclosure=LEVEL_NAMES[reply.disclosure],
        results=results,
        counts={c.partner: c.shared for c in reply.counts},
        partner_levels={p: LEVEL_NAMES[v] for p, v in sorted(reply.partner_levels.items())},
        partners=list(reply.partners),
    )


CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
]


class MatcherClient:
    """One connection to a matcher, with one token (operator's or a member's)."""

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 30.0,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.target = target
        self.token = token
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self.credentials = credentials
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.MatcherStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> MatcherClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def _retrying(self, what: str, attempt: Callable[[], T]) -> T:
        """Run `attempt` until it succeeds, fails for good, or the retry policy runs out."""
        delays = self.retry.delays()
        tries = 1
        while True:
            try:
                with translate_errors(self.target):
                    return attempt()
            except TRANSIENT as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                tries += 1
                if self.on_retry:
                    self.on_retry(
                        f"{what}: {exc}; retrying in {delay:.1f}s "
                        f"(attempt {tries} of {self.retry.attempts})"
                    )
                time.sleep(delay)

    def create_project(
        self,
        name: str,
        members: list[str],
        disclosure: str = "hits",
        threshold: float = 0.0,
        blocking: str = "auto",
        *,
        require_purpose: bool = False,
        expires_unix: int = 0,
    ) -> ProjectTokens:
        """Operator: a new project; `expires_unix` 0 means the matcher's default (180 days)."""
        request = pb.CreateProjectRequest(
            name=name,
            members=members,
            disclosure=cast(pb.Disclosure, LEVELS[disclosure]),
            threshold=threshold,
            blocking=cast(pb.Blocking, BLOCKINGS[blocking]),
            require_purpose=require_purpose,
            expires_unix=expires_unix,
        )
        with translate_errors(self.target):
            reply = self._stub.CreateProject(
                request, metadata=self._metadata(), timeout=self.timeout
            )
        return ProjectTokens(
            reply.project,
            dict(reply.tokens),
            LEVEL_NAMES[reply.disclosure],
            reply.threshold,
            BLOCKING_NAMES[reply.blocking],
            reply.require_purpose,
            reply.expires_unix,
        )

    def rotate_token(self, project: str, member: str) -> str:
        """Operator: a new token for `member` (returned once); its old token stops working."""
        with translate_errors(self.target):
            reply = self._stub.RotateToken(
                pb.TokenRequest(project=project, member=member),
                metadata=self._metadata(),
                timeout=self.timeout,
            )
        return reply.token

    def revoke_token(self, project: str, member: str) -> None:
        """Operator: `member`'s token stops working; rotate to issue a new one."""
        with translate_errors(self.target):
            self._stub.RevokeToken(
                pb.TokenRequest(project=project, member=member),
                metadata=self._metadata(),
                timeout=self.timeout,
            )

    def verify_audit(self, anchor: tuple[int, str] | None = None) -> AuditCheck:
        """Operator: check the audit chain (and that `anchor` (seq, hash) is still in it)."""
        request = pb.VerifyAuditRequest()
        if anchor:
            request.anchor_seq, request.anchor_hash = anchor
        with translate_errors(self.target):
            reply = self._stub.VerifyAudit(request, metadata=self._metadata(), timeout=600)
        return AuditCheck(
            reply.ok, reply.entries, reply.head_seq, reply.head_hash, list(reply.problems)
        )

    def audit(self, project: str = "", after: int = 0) -> Iterator[dict[str, object]]:
        """Audit entries as plain dicts, oldest first: all for the operator (or one
        project's), those that concern it for a member."""
        with translate_errors(self.target):
            for e in self._stub.ExportAudit(
                pb.ExportAuditRequest(project=project, after_seq=after),
                metadata=self._metadata(),
                timeout=3600,
            ):
                yield {
                    "seq": e.seq,
                    "time": e.time,
                    "actor": e.actor,
                    "action": e.action,
                    "project": e.project,
                    "member": e.member,
                    "purpose": e.purpose,
                    "disclosed": dict(sorted(e.disclosed.items())),
                    "detail": json.loads(e.detail or "{}"),
                    "prev_hash": e.prev_hash,
                    "hash": e.hash,
                }

    def set_consent(self, project: str, level: str) -> str:
        """Member: the most partners may learn about this member (count/hits/mapping/scores)."""
        with translate_errors(self.target):
            reply = self._stub.SetConsent(
                pb.SetConsentRequest(project=project, level=cast(pb.Disclosure, LEVELS[level])),
                metadata=self._metadata(),
                timeout=self.timeout,
            )
        return LEVEL_NAMES[reply.level]

    def erase(self, project: str) -> Erased:
        """Member: delete this member's uploads and every result involving them, now."""
        with translate_errors(self.target):
            reply = self._stub.Erase(
                pb.EraseRequest(project=project), metadata=self._metadata(), timeout=self.timeout
            )
        return Erased(reply.uploads_deleted, reply.links_deleted)

    def describe(self, project: str) -> pb.ProjectInfo:
        return self._retrying(
            "describe",
            lambda: self._stub.DescribeProject(
                pb.DescribeProjectRequest(project=project),
                metadata=self._metadata(),
                timeout=self.timeout,
            ),
        )

    def upload(
        self,
        project: str,
        encoded: Encoded,
        *,
        progress: bool = False,
        upload_id: str | None = None,
    ) -> pb.UploadReply:
        """Stream an ENCODED folder's CLKs; the matcher replaces our earlier upload.

        Every attempt carries the same `upload_id` (a fresh random one unless
        given), so a retry after a lost acknowledgement gets the same reply and
        stores nothing twice. The progress bar counts CLKs sent in the current
        attempt and starts again from zero, saying so, when a retry restarts it.
        """
        from tqdm import tqdm

        key = upload_id or uuid.uuid4().hex
        bar = tqdm(
            total=encoded.record_count,
            desc="uploading",
            unit="rec",
            file=sys.stderr,
            disable=not progress,
            leave=False,
        )
        attempts = [0]

        def messages() -> Iterator[pb.UploadRequest]:
            yield pb.UploadRequest(
                header=pb.UploadHeader(
                    project=project,
                    clk_bits=encoded.clk_bits,
                    record_count=encoded.record_count,
                    fingerprint=encoded.fingerprint,
                    sha256=encoded.sha256,
                    client_upload_id=key,
                    field_bits=encoded.field_bits,
                    fallback_bits=encoded.fallback_bits,
                )
            )
            per_message = max(1, UPLOAD_BYTES_PER_MESSAGE // encoded.clk_bytes)
            for block in encoded.iter_chunks(per_message):
                yield pb.UploadRequest(clks=block)
                bar.update(len(block) // encoded.clk_bytes)
            bar.set_description("waiting for the matcher to store it")

        def attempt() -> pb.UploadReply:
            attempts[0] += 1
            if attempts[0] > 1:
                bar.reset(total=encoded.record_count)
                bar.set_description(f"retrying upload (attempt {attempts[0]})")
            return self._stub.Upload(messages(), metadata=self._metadata(), timeout=3600)

        try:
            return self._retrying("upload", attempt)
        finally:
            bar.close()

    def start_run(self, project: str) -> RunProgress:
        """Start a run, or get the one already queued or running (so safe to retry)."""
        status = self._retrying(
            "start run",
            lambda: self._stub.StartRun(
                pb.StartRunRequest(project=project), metadata=self._metadata(), timeout=self.timeout
            ),
        )
        return RunProgress.from_pb(status)

    def watch_run(self, project: str, run_id: str = "") -> Iterator[RunProgress]:
        """Progress updates until the run is done or failed, reconnecting if the stream drops."""
        delays = self.retry.delays()
        while True:
            try:
                with translate_errors(self.target):
                    for status in self._stub.WatchRun(
                        pb.WatchRunRequest(project=project, run_id=run_id),
                        metadata=self._metadata(),
                    ):
                        progress = RunProgress.from_pb(status)
                        run_id = progress.run_id
                        delays = self.retry.delays()  # progress made: patience renewed
                        yield progress
                return
            except TRANSIENT as exc:
                delay = next(delays, None)
                if delay is None:
                    raise
                if self.on_retry:
                    self.on_retry(f"watching the run: {exc}; reconnecting in {delay:.1f}s")
                time.sleep(delay)

    def results(self, project: str, purpose: str = "") -> Results:
        """Everything the project's level and the partners' consent let this member learn.

        `purpose` (a case reference) goes to the audit log; some projects require one.
        A dropped stream is fetched again from the start, never stitched together.
        """
        return self._retrying("fetch results", lambda: self._results_once(project, purpose))

    def _results_once(self, project: str, purpose: str) -> Results:
        results: Results | None = None
        for chunk in self._stub.GetResults(
            pb.ResultsRequest(project=project, purpose=purpose),
            metadata=self._metadata(),
            timeout=3600,
        ):
            if chunk.HasField("header"):
                h = chunk.header
                results = Results(
                    run_id=h.run_id,
                    disclosure=LEVEL_NAMES[h.disclosure],
                    upload_sha256=h.upload_sha256,
                    record_count=h.record_count,
                    counts={c.partner: c.shared for c in h.counts},
                    levels={
                        c.partner: LEVEL_NAMES.get(c.disclosure, LEVEL_NAMES[h.disclosure])
                        for c in h.counts
                    },
                )
            elif results is not None:
                results.hits.extend(
                    ResultHit(x.row, x.partner, x.partner_row, x.score) for x in chunk.hits.hits
                )
        if results is None:
            raise MatcherError("the matcher sent no results header")
        return results

    # -- real-time: standing index and queries (docs/realtime.md) -----------------------

    def change_index(
        self,
        project: str,
        *,
        clk_bits: int,
        fingerprint: bytes,
        puts: Sequence[tuple[str, bytes]] = (),
        removes: Sequence[str] = (),
        change_id: str | None = None,
    ) -> IndexSummary:
        """Add or replace (`puts`: (ref, CLK) pairs) and remove records, all or nothing.

        Refs are the member's own opaque row references (see `client.realtime.row_refs`),
        never local ids. Durable at the matcher when this returns. Every attempt carries
        the same `change_id` (a fresh random one unless given), so a retry after a lost
        acknowledgement gets the same summary (`replayed`) and changes nothing twice.
        """
        per_message = max(1, UPLOAD_BYTES_PER_MESSAGE // max(clk_bits // 8, 1))
        key = change_id or uuid.uuid4().hex

        def messages() -> Iterator[pb.IndexChange]:
            header = pb.IndexHeader(
                project=project, clk_bits=clk_bits, fingerprint=fingerprint, client_change_id=key
            )
            yield pb.IndexChange(header=header)
            for start in range(0, len(puts), per_message):
                batch = puts[start : start + per_message]
                yield pb.IndexChange(
                    put=pb.IndexPut(refs=[r for r, _ in batch], clks=b"".join(c for _, c in batch))
                )
            for start in range(0, len(removes), 50_000):
                yield pb.IndexChange(remove=pb.IndexRemove(refs=removes[start : start + 50_000]))

        reply = self._retrying(
            "index change",
            lambda: self._stub.ChangeIndex(messages(), metadata=self._metadata(), timeout=3600),
        )
        return IndexSummary(
            reply.added, reply.replaced, reply.removed, reply.record_count, reply.replayed
        )

    def list_index(self, project: str) -> dict[str, bytes]:
        """This member's indexed refs, each with the 8-byte BLAKE2b digest of its CLK."""
        listing: dict[str, bytes] = {}
        with translate_errors(self.target):
            for part in self._stub.ListIndex(
                pb.ListIndexRequest(project=project), metadata=self._metadata(), timeout=3600
            ):
                for i, ref in enumerate(part.refs):
                    listing[ref] = part.digests[i * 8 : (i + 1) * 8]
        return listing

    def query(
        self,
        project: str,
        clks: bytes | Sequence[bytes],
        *,
        clk_bits: int,
        fingerprint: bytes,
        purpose: str,
    ) -> QueryAnswer:
        """Which partners hold each of `clks` (one CLK, or several), within disclosure.

        `purpose` (a case reference, say) is required and logged with the query. The
        matcher keeps nothing of the CLKs after answering.
        """
        request = query_request(project, clks, clk_bits, fingerprint, purpose)
        with translate_errors(self.target):
            reply = self._stub.Query(request, metadata=self._metadata(), timeout=self.timeout)
        return query_answer(reply)

    def query_session(self, project: str, *, clk_bits: int, fingerprint: bytes) -> QuerySession:
        """A session for many queries in `project`: one stream, cheaper a query than `query`.

        Use it as a context manager (or call `close`); see `client.session`.
        """
        from blindmatch.client.session import AsyncQuerySession, QuerySession

        return QuerySession(
            functools.partial(
                AsyncQuerySession,
                self.target,
                self.token,
                project,
                clk_bits=clk_bits,
                fingerprint=fingerprint,
                credentials=self.credentials,
                timeout=self.timeout,
            )
        )

    def watch(
        self,
        project: str,
        clks: bytes | Sequence[bytes],
        *,
        clk_bits: int,
        fingerprint: bytes,
        purpose: str,
        timeout: float | None = None,
    ) -> Iterator[WatchEvent]:
        """Events, as partners later index records matching `clks`; runs until closed.

        Only where the operator allows watching; the first event arrives once the watch
        is registered (it is not yielded). Close the generator to stop watching.
        """
        request = pb.QueryRequest(
            project=project,
            purpose=purpose,
            clk_bits=clk_bits,
            fingerprint=fingerprint,
            clks=_clk_bytes(clks),
        )
        with translate_errors(self.target):
            stream = self._stub.Watch(request, metadata=self._metadata(), timeout=timeout)
            try:
                for event in stream:
                    if event.ready:
                        continue
                    if event.HasField("count"):
                        yield WatchEvent(event.count.partner, None, None)
                    else:
                        m = event.result.matches[0]
                        match = PartnerMatch(m.partner, tuple(m.partner_refs), tuple(m.scores))
                        yield WatchEvent(m.partner, event.result.index, match)
            finally:
                stream.cancel()

    def set_query_limits(
        self,
        project: str,
        *,
        member: str = "",
        per_minute: int = 0,
        per_day: int = 0,
        allow_watch: bool | None = None,
    ) -> QueryLimits:
        """Operator: records per minute and per day a member (or, with no member, every
        member without its own limits) may query; 0 keeps the current value. `allow_watch`
        (project-wide) turns watching on or off; None leaves it as it is."""
        request = pb.QueryLimits(
            project=project,
            member=member,
            records_per_minute=per_minute,
            records_per_day=per_day,
        )
        if allow_watch is not None:
            request.allow_watch = allow_watch
        with translate_errors(self.target):
            reply = self._stub.SetQueryLimits(
                request, metadata=self._metadata(), timeout=self.timeout
            )
        return QueryLimits(
            reply.project,
            reply.member,
            reply.records_per_minute,
            reply.records_per_day,
            reply.allow_watch,
        )

    def query_report(self, project: str, hours: int = 24) -> list[MemberVolume]:
        """Operator: each member's query volume over the last `hours`, unusual volume flagged."""
        with translate_errors(self.target):
            reply = self._stub.GetQueryReport(
                pb.QueryReportRequest(project=project, hours=hours),
                metadata=self._metadata(),
                timeout=self.timeout,
            )
        return [
            MemberVolume(
                m.member,
                m.queries,
                m.records,
                m.records_with_hits,
                m.peak_per_minute,
                m.records_per_day_limit,
                m.distinct_purposes,
                m.refused,
                list(m.flags),
            )
            for m in reply.members
        ]
