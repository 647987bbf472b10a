"""Protobuf messages <-> the client's dataclasses (`client.remote.model`), in one place.

Every wire message the client sends is built here and every reply is read here,
so the rest of the client (and the CLI) never sees a protobuf type or an enum
number: levels and blocking methods travel as names.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import cast

import grpc

from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.remote.model import (
    AuditCheck,
    Ended,
    Erased,
    HitRefs,
    IndexSummary,
    IssuedRefs,
    MemberState,
    MemberVolume,
    PartnerMatch,
    ProjectInfo,
    ProjectTokens,
    QueryAnswer,
    QueryLimits,
    ResolvedRef,
    ResultHit,
    Results,
    RunProgress,
    UploadReceipt,
    UserInfo,
    UserVolume,
    WatchEvent,
    WithdrawnRef,
)
from blindmatch.protos import blindmatch_pb2 as pb

_LEVEL_NUMBERS = {"count": 1, "hits": 2, "mapping": 3, "scores": 4}
_LEVEL_NAMES = {v: k for k, v in _LEVEL_NUMBERS.items()}
_BLOCKING_NUMBERS = {"auto": 1, "exhaustive": 2, "lsh": 3}
# Where a started two-server upload's shares are, as S1 or S2 answered ("": not asked)
_STARTED_AT = {pb.STARTED_HELD_YES: "held", pb.STARTED_HELD_NO: "not held"}
_BLOCKING_NAMES = {v: k for k, v in _BLOCKING_NUMBERS.items()} | {0: "auto"}


def level_number(name: str) -> pb.Disclosure:
    return cast(pb.Disclosure, _LEVEL_NUMBERS[name])


def level_name(number: int) -> str:
    return _LEVEL_NAMES[number]


def blocking_number(name: str) -> pb.Blocking:
    return cast(pb.Blocking, _BLOCKING_NUMBERS[name])


def clk_bytes(clks: bytes | Sequence[bytes]) -> bytes:
    return clks if isinstance(clks, bytes) else b"".join(clks)


# -- requests --------------------------------------------------------------------------------


def create_project_request(
    name: str,
    members: list[str],
    disclosure: str,
    threshold: float,
    blocking: str,
    require_purpose: bool,
    expires_unix: int,
) -> pb.CreateProjectRequest:
    return pb.CreateProjectRequest(
        name=name,
        members=members,
        disclosure=level_number(disclosure),
        threshold=threshold,
        blocking=blocking_number(blocking),
        require_purpose=require_purpose,
        expires_unix=expires_unix,
    )


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
    if encoded.rule is not None:  # the same CLKs under another rule are another upload
        parts.append(",".join(map(repr, encoded.rule)))
    return "c-" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:48]


def upload_header(
    project: str, encoded: Encoded, client_upload_id: str, allow_empty: bool = False
) -> pb.UploadRequest:
    return pb.UploadRequest(
        header=pb.UploadHeader(
            project=project,
            clk_bits=encoded.clk_bits,
            record_count=encoded.record_count,
            fingerprint=encoded.fingerprint,
            sha256=encoded.sha256,
            client_upload_id=client_upload_id,
            field_bits=encoded.field_bits,
            fallback_bits=encoded.fallback_bits,
            schema_digest=encoded.schema_digest,
            rule=score_rule(encoded.rule),
            allow_empty=allow_empty,
        )
    )


def score_rule(rule: tuple[float, float, float] | None) -> pb.ScoreRule | None:
    """The wire form of a schema's `blindmatch.rule` (None: unset)."""
    if rule is None:
        return None
    gap, offset, reach = rule
    return pb.ScoreRule(gap=gap, offset=offset, reach=reach)


def query_request(
    project: str,
    clks: bytes | Sequence[bytes],
    clk_bits: int,
    fingerprint: bytes,
    purpose: str,
    fallback_bits: int = 0,
    rule: tuple[float, float, float] | None = None,
) -> pb.QueryRequest:
    """`fallback_bits`/`rule`: how the querier's schema scores a pair (0: not said), which
    the matcher checks against how each index is scored."""
    return pb.QueryRequest(
        project=project,
        purpose=purpose,
        clk_bits=clk_bits,
        fingerprint=fingerprint,
        clks=clk_bytes(clks),
        fallback_bits=fallback_bits,
        rule=score_rule(rule),
    )


def query_limits_request(
    project: str, member: str, per_minute: int, per_day: int, allow_watch: bool | None
) -> pb.QueryLimits:
    request = pb.QueryLimits(
        project=project,
        member=member,
        records_per_minute=per_minute,
        records_per_day=per_day,
    )
    if allow_watch is not None:
        request.allow_watch = allow_watch
    return request


# -- replies ---------------------------------------------------------------------------------


def project_tokens(reply: pb.CreateProjectReply) -> ProjectTokens:
    return ProjectTokens(
        reply.project,
        dict(reply.tokens),
        _LEVEL_NAMES[reply.disclosure],
        reply.threshold,
        _BLOCKING_NAMES[reply.blocking],
        reply.require_purpose,
        reply.expires_unix,
        reply.require_users,
        reply.mode or "clk",
        reply.two_server_ready,
    )


def run_progress(msg: pb.RunStatus) -> RunProgress:
    state = pb.RunState.Name(msg.state).removeprefix("RUN_STATE_").lower()
    return RunProgress(
        msg.run_id, state, msg.stage, msg.work_done, msg.work_total, msg.groups, msg.message,
        msg.tasks_done, msg.tasks_total, msg.started_unix,
    )  # fmt: skip


def project_info(msg: pb.ProjectInfo) -> ProjectInfo:
    return ProjectInfo(
        project=msg.project,
        member=msg.member,
        disclosure=_LEVEL_NAMES[msg.disclosure],
        threshold=msg.threshold,
        members=[
            MemberState(
                m.name,
                m.uploaded,
                m.record_count,
                _LEVEL_NAMES.get(m.consent),
                m.upload_started_unix,
                _STARTED_AT.get(m.started_at_s1, ""),
                _STARTED_AT.get(m.started_at_s2, ""),
            )
            for m in msg.members
        ],
        clk_bits=msg.clk_bits,
        blocking=_BLOCKING_NAMES[msg.blocking],
        require_purpose=msg.require_purpose,
        expires_unix=msg.expires_unix,
        latest_run=run_progress(msg.latest_run) if msg.HasField("latest_run") else None,
        fingerprint_id=msg.fingerprint_id,
        fingerprint_from=msg.fingerprint_from,
        require_users=msg.require_users,
        user=msg.user,
        mode=msg.mode or "clk",
        two_server_s1=msg.two_server_s1,
        two_server_s2=msg.two_server_s2,
        two_server_unasked=msg.two_server_unasked,
    )


def issued_refs(reply: pb.IssueRefReply) -> IssuedRefs:
    return IssuedRefs(
        reply.run_id, {r.partner: r.reference for r in reply.refs}, list(reply.erased_partners)
    )


def issue_ref_request(
    project: str, rows: Sequence[int], sha256: str, partner: str, purpose: str
) -> pb.IssueRefRequest:
    return pb.IssueRefRequest(
        project=project, rows=list(rows), partner=partner, upload_sha256=sha256, purpose=purpose
    )


def issue_refs_request(
    project: str, hits: Sequence[tuple[Sequence[int], str]], sha256: str, purpose: str
) -> pb.IssueRefsRequest:
    return pb.IssueRefsRequest(
        project=project,
        hits=[pb.HitRows(rows=list(rows), partner=partner) for rows, partner in hits],
        upload_sha256=sha256,
        purpose=purpose,
    )


def hit_refs(reply: pb.IssueRefsReply) -> HitRefs:
    return HitRefs(reply.run_id, list(reply.references))


def resolved_ref(reply: pb.ResolveRefReply) -> ResolvedRef:
    return ResolvedRef(
        reply.reference,
        reply.requester,
        reply.run_id,
        reply.issued_unix,
        tuple(reply.rows),
        reply.upload_sha256,
    )


def withdrawn_ref(reply: pb.WithdrawRefReply) -> WithdrawnRef:
    return WithdrawnRef(
        reply.reference,
        reply.partner,
        reply.run_id,
        reply.issued_unix,
        reply.withdrawn_unix,
        reply.resolved,
    )


def user_info(msg: pb.UserInfo) -> UserInfo:
    return UserInfo(msg.name, msg.created, msg.revoked or None)


def upload_receipt(reply: pb.UploadReply) -> UploadReceipt:
    return UploadReceipt(reply.upload_id, reply.record_count, reply.sha256, reply.replayed)


def erased(reply: pb.EraseReply) -> Erased:
    return Erased(
        reply.uploads_deleted,
        reply.links_deleted,
        reply.users_deleted,
        tuple((f.server, f.dropped, f.error) for f in reply.two_server),
        tuple(reply.pending),
        reply.index_records_deleted,
    )


def ended(reply: pb.EndProjectReply) -> Ended:
    return Ended(
        reply.project,
        reply.uploads_deleted,
        reply.runs_deleted,
        reply.links_deleted,
        reply.users_deleted,
        tuple((f.server, f.dropped, f.error) for f in reply.two_server),
        reply.audit_seq,
    )


def audit_check(reply: pb.VerifyAuditReply) -> AuditCheck:
    return AuditCheck(
        reply.ok, reply.entries, reply.head_seq, reply.head_hash, list(reply.problems)
    )


def audit_entry(e: pb.AuditEntry) -> dict[str, object]:
    return {
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
        "user": e.user,
    }


def results_header(h: pb.ResultsHeader) -> Results:
    return Results(
        run_id=h.run_id,
        disclosure=_LEVEL_NAMES[h.disclosure],
        upload_sha256=h.upload_sha256,
        record_count=h.record_count,
        counts={c.partner: c.shared for c in h.counts},
        levels={
            c.partner: _LEVEL_NAMES.get(c.disclosure, _LEVEL_NAMES[h.disclosure]) for c in h.counts
        },
    )


def result_hits(hits: pb.HitBatch) -> list[ResultHit]:
    return [ResultHit(x.row, x.partner, x.partner_row, x.score) for x in hits.hits]


def index_summary(reply: pb.IndexChangeReply) -> IndexSummary:
    return IndexSummary(
        reply.added, reply.replaced, reply.removed, reply.record_count, reply.replayed
    )


def partner_match(m: pb.QueryMatch) -> PartnerMatch:
    return PartnerMatch(m.partner, tuple(m.partner_refs), tuple(m.scores))


def query_answer(reply: pb.QueryReply) -> QueryAnswer:
    return QueryAnswer(
        disclosure=_LEVEL_NAMES[reply.disclosure],
        results=[[partner_match(m) for m in r.matches] for r in reply.results],
        counts={c.partner: c.shared for c in reply.counts},
        partner_levels={p: _LEVEL_NAMES[v] for p, v in sorted(reply.partner_levels.items())},
        partners=list(reply.partners),
        not_searched=dict(sorted(reply.not_searched.items())),
    )


def watch_event(event: pb.WatchEvent) -> WatchEvent | None:
    """The event a member sees, or None for the matcher's "watch registered" signal."""
    if event.ready:
        return None
    if event.HasField("count"):
        return WatchEvent(event.count.partner, None, None)
    m = event.result.matches[0]
    return WatchEvent(m.partner, event.result.index, partner_match(m))


def watch_events(
    stream: Iterator[pb.WatchEvent], on_ready: Callable[[], Iterable[WatchEvent] | None] | None
) -> Iterator[WatchEvent]:
    """A `Watch` stream's events as a member sees them (its "watch registered" signal calls
    `on_ready`, and the events it returns, if any, come next: a re-opened two-server watch's
    catch-up), the stream cancelled when the caller stops (a CLK watch's and a two-server
    one's alike)."""
    try:
        for message in stream:
            event = watch_event(message)
            if event is not None:
                yield event
            elif on_ready is not None:
                yield from on_ready() or ()
    finally:
        cast(grpc.Future, stream).cancel()  # a gRPC call: an iterator and a future


def query_limits(reply: pb.QueryLimits) -> QueryLimits:
    return QueryLimits(
        reply.project,
        reply.member,
        reply.records_per_minute,
        reply.records_per_day,
        reply.allow_watch,
    )


def member_volumes(reply: pb.QueryReport) -> list[MemberVolume]:
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
            [
                UserVolume(
                    u.user,
                    u.queries,
                    u.records,
                    u.records_with_hits,
                    u.refused,
                    u.bad_requests,
                    u.unanswered,
                )
                for u in m.users
            ],
            m.unanswered,
        )
        for m in reply.members
    ]
