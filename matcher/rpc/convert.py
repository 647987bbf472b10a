"""Protobuf messages <-> the matcher's domain types, and nothing else.

Disclosure levels travel as their numbers (`domain.Level` values are protos'
`Disclosure` numbers; 0 is unset); blocking methods and run states as the enums below.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import cast

from blindmatch.matcher.core import audit
from blindmatch.matcher.core.disclose import Match, QueryDisclosure
from blindmatch.matcher.core.fallback import Rule
from blindmatch.matcher.core.references import RequestRef
from blindmatch.matcher.core.runwords import for_members
from blindmatch.matcher.core.volume import QueryVolume
from blindmatch.matcher.domain import (
    CLK_MODE,
    DONE,
    FAILED,
    LEVEL_NUMBERS,
    QUEUED,
    RUNNING,
    Encoding,
    IndexPuts,
    Level,
    Project,
    Run,
    User,
)
from blindmatch.matcher.errors import InvalidArgument
from blindmatch.matcher.usecases.projects import ProjectRequest, ProjectView
from blindmatch.matcher.usecases.results import MemberResults
from blindmatch.matcher.usecases.uploads import UploadHeader, UploadReceipt
from blindmatch.protos import blindmatch_pb2 as pb

# Hits per ResultsChunk, and refs per IndexListing (5 times as many): messages well
# under gRPC's 16 MiB.
HITS_PER_MESSAGE = 10_000

_STATES = {
    QUEUED: pb.RUN_STATE_QUEUED,
    RUNNING: pb.RUN_STATE_RUNNING,
    DONE: pb.RUN_STATE_DONE,
    FAILED: pb.RUN_STATE_FAILED,
}
_BLOCKING = {
    pb.BLOCKING_UNSPECIFIED: "auto",
    pb.BLOCKING_AUTO: "auto",
    pb.BLOCKING_EXHAUSTIVE: "exhaustive",
    pb.BLOCKING_LSH: "lsh",
}
_PB_BLOCKING = {
    "auto": pb.BLOCKING_AUTO,
    "exhaustive": pb.BLOCKING_EXHAUSTIVE,
    "lsh": pb.BLOCKING_LSH,
}


# -- levels ----------------------------------------------------------------------------------


def level_pb(level: Level | None) -> pb.Disclosure:
    return cast(pb.Disclosure, int(level) if level is not None else 0)


def level_of(value: int, field: str) -> Level | None:
    """A Disclosure field as a Level (None: unset); INVALID_ARGUMENT for an unknown one."""
    if value == pb.DISCLOSURE_UNSPECIFIED:
        return None
    try:
        return Level(value)
    except ValueError:
        raise InvalidArgument(
            f"{field}: {value} is not a disclosure level ({LEVEL_NUMBERS})"
        ) from None


# -- requests ----------------------------------------------------------------------------------


def project_request(request: pb.CreateProjectRequest) -> ProjectRequest:
    disclosure = level_of(request.disclosure, "disclosure")
    blocking = _BLOCKING.get(request.blocking)
    if blocking is None:
        numbers = ", ".join(f"{name}={int(number)}" for name, number in _PB_BLOCKING.items())
        raise InvalidArgument(
            f"blocking: {request.blocking} is not a blocking method ({numbers}; 0 means auto)"
        )  # was "unknown value 7", naming no value a client could send (protowalk)
    return ProjectRequest(
        name=request.name,
        members=list(request.members),
        disclosure=disclosure,
        threshold=request.threshold,
        blocking=blocking,
        require_purpose=request.require_purpose,
        expires=float(request.expires_unix) if request.expires_unix else None,
        require_users=request.require_users,
        mode=request.mode,
    )


def upload_header(header: pb.UploadHeader) -> UploadHeader:
    return UploadHeader(
        project=header.project,
        clk_bits=header.clk_bits,
        record_count=header.record_count,
        fingerprint=header.fingerprint,
        sha256=header.sha256,
        client_upload_id=header.client_upload_id,
        field_bits=tuple(header.field_bits),
        fallback_bits=int(header.fallback_bits),
        schema_digest=header.schema_digest,
        two_server_ticket=header.two_server_ticket,
        two_server_bits=tuple(header.two_server_bits),
        rule=score_rule(header.rule),
        allow_empty=header.allow_empty,
    )


def score_rule(rule: pb.ScoreRule) -> Rule:
    """A wire rule as sent; checked where it is used (`fallback.checked_rule`)."""
    return Rule(rule.gap, rule.offset, rule.reach)


def upload_chunks(messages: Iterator[pb.UploadRequest]) -> Iterator[bytes | None]:
    """Each message's CLKs (None for a message that is not CLKs)."""
    return (m.clks if m.HasField("clks") else None for m in messages)


def index_change(
    header: pb.IndexHeader, messages: Iterator[pb.IndexChange], hold: Callable[[int], None]
) -> tuple[Encoding, IndexPuts, list[str]]:
    """An index change's encoding, puts (ref, CLK) and removes, read to the stream's end;
    `hold` is told each message's references and CLKs in bytes before they are kept (and
    refuses past a limit). The stream's `end` (its header says `end_follows`: ChangeIndex
    refuses one that does not) must be its last message and count what came (gRPC ends the
    messages of a stream cut short as it ends a finished one: only the end tells them apart)."""
    clk_bytes = max(header.clk_bits // 8, 1)
    puts = IndexPuts(clk_bytes)
    removes: list[str] = []
    end: pb.IndexEnd | None = None
    for message in messages:
        if end is not None:
            raise InvalidArgument(
                "end: must be the last message of the change; nothing was changed"
            )
        if message.HasField("end"):
            end = message.end
        elif message.HasField("put"):
            refs, data = message.put.refs, message.put.clks
            if len(data) != len(refs) * clk_bytes:
                raise InvalidArgument(
                    f"put.clks: {len(data)} bytes for {len(refs)} refs; expected "
                    f"{len(refs) * clk_bytes} ({header.clk_bits}-bit CLKs as the header "
                    "says); nothing was changed"
                )
            hold(len(data) + sum(len(r) for r in refs))
            puts.extend(refs, data)
        elif message.HasField("remove"):
            hold(sum(len(r) for r in message.remove.refs))
            removes.extend(message.remove.refs)
        else:
            raise InvalidArgument("header: only the first message may be a header")
    _check_end(end, len(puts), len(removes))
    encoding = Encoding(
        header.clk_bits, header.fingerprint, header.fallback_bits, score_rule(header.rule)
    )
    return encoding, puts, removes


def _check_end(end: pb.IndexEnd | None, put: int, removed: int) -> None:
    """Refuses a change whose end is missing, or whose end counts other refs than were read.
    (A header without `end_follows` is refused before its stream is read:
    rpc/realtime_calls.py `NO_END_FOLLOWS`; a change without its end is never stored.)"""
    if end is None:
        raise InvalidArgument(
            "end: the header says end_follows, but the stream ended without an end "
            "(cut short?); nothing was changed"
        )
    if (end.put_refs, end.remove_refs) != (put, removed):
        raise InvalidArgument(
            f"end: put_refs {end.put_refs} and remove_refs {end.remove_refs}, but the change "
            f"carried {put} and {removed}; nothing was changed"
        )


def query_encoding(request: pb.QueryRequest) -> Encoding:
    """A query's CLK length and fingerprint, and how its schema scores a pair (fallback_bits
    0: not said); checked in `realtime.engine`."""
    return Encoding(
        request.clk_bits, request.fingerprint, request.fallback_bits, score_rule(request.rule)
    )


# -- replies -----------------------------------------------------------------------------------


def project_reply(
    project: Project, tokens: dict[str, str], *, two_server_ready: bool = False
) -> pb.CreateProjectReply:
    """`two_server_ready`: the matcher has S1 and S2 (it could have made a two-server one)."""
    return pb.CreateProjectReply(
        project=project.name,
        tokens=tokens,
        disclosure=level_pb(project.disclosure),
        threshold=project.threshold,
        blocking=_PB_BLOCKING[project.blocking],
        require_purpose=project.require_purpose,
        expires_unix=int(project.expires),
        require_users=project.require_users,
        mode=project.mode,
        two_server_ready=two_server_ready,
    )


def project_info(view: ProjectView) -> pb.ProjectInfo:
    project = view.project
    info = pb.ProjectInfo(
        project=project.name,
        member=view.member,
        disclosure=level_pb(project.disclosure),
        threshold=project.threshold,
        clk_bits=view.clk_bits if project.mode == CLK_MODE else 0,  # popcounts: no CLKs
        blocking=_PB_BLOCKING[project.blocking],
        require_purpose=project.require_purpose,
        expires_unix=int(project.expires),
        fingerprint_id=view.fingerprint_id,
        fingerprint_from=view.fingerprint_from,
        require_users=project.require_users,
        mode=project.mode,
    )
    for m in view.members:
        info.members.add(
            name=m.name,
            uploaded=m.upload is not None,
            record_count=m.upload.record_count if m.upload else 0,
            consent=level_pb(m.consent),
            upload_started_unix=int(m.started),
        )
    if view.latest_run:
        info.latest_run.CopyFrom(run_status(view.latest_run))
    return info


def issue_ref_reply(
    run_id: str, refs: dict[str, str], erased: list[str] | None = None
) -> pb.IssueRefReply:
    reply = pb.IssueRefReply(run_id=run_id, erased_partners=erased or [])
    for partner, reference in refs.items():
        reply.refs.add(partner=partner, reference=reference)
    return reply


def resolve_ref_reply(ref: RequestRef) -> pb.ResolveRefReply:
    return pb.ResolveRefReply(
        reference=ref.reference,
        requester=ref.requester,
        run_id=ref.run_id,
        issued_unix=ref.issued,
        rows=ref.partner_rows,
        upload_sha256=ref.partner_sha256,
    )


def upload_reply(receipt: UploadReceipt) -> pb.UploadReply:
    return pb.UploadReply(
        upload_id=receipt.upload_id,
        record_count=receipt.record_count,
        sha256=receipt.sha256,
        replayed=receipt.replayed,
    )


def run_status(run: Run) -> pb.RunStatus:
    return pb.RunStatus(
        run_id=run.id,
        state=_STATES[run.state],
        stage=run.stage,
        work_done=run.work_done,
        work_total=run.work_total,
        groups=run.groups,
        message=for_members(run.message),  # (one stored before today's words: in them)
        tasks_done=run.tasks_done,
        tasks_total=run.tasks_total,
        started_unix=run.started,
    )


def results_chunks(results: MemberResults) -> Iterator[pb.ResultsChunk]:
    """The header, then the hits, HITS_PER_MESSAGE at a time."""
    disclosed = results.disclosed
    header = pb.ResultsHeader(
        run_id=results.run_id,
        disclosure=level_pb(results.level),
        upload_sha256=results.upload.sha256,
        record_count=results.upload.record_count,
        counts=[
            pb.PartnerCount(partner=p, shared=n, disclosure=level_pb(disclosed.levels[p]))
            for p, n in disclosed.counts.items()
        ],
    )
    yield pb.ResultsChunk(header=header)
    hits = disclosed.hits
    for start in range(0, len(hits), HITS_PER_MESSAGE):
        batch = pb.HitBatch(
            hits=[
                pb.Hit(row=h.row, partner=h.partner, partner_row=h.partner_row, score=h.score)
                for h in hits[start : start + HITS_PER_MESSAGE]
            ]
        )
        yield pb.ResultsChunk(hits=batch)


def index_listings(
    clk_bits: int, refs: list[str], digests: list[bytes]
) -> Iterator[pb.IndexListing]:
    step = HITS_PER_MESSAGE * 5
    for start in range(0, max(len(refs), 1), step):
        yield pb.IndexListing(
            refs=refs[start : start + step],
            digests=b"".join(digests[start : start + step]),
            record_count=len(refs),
            clk_bits=clk_bits,
        )


def query_match(m: Match) -> pb.QueryMatch:
    return pb.QueryMatch(partner=m.partner, partner_refs=m.refs, scores=m.scores)


def query_reply(answer: QueryDisclosure, partners: list[str], level: Level) -> pb.QueryReply:
    reply = pb.QueryReply(
        disclosure=level_pb(level),
        counts=[pb.PartnerCount(partner=p, shared=n) for p, n in answer.counts.items()],
        partners=partners,
    )
    for partner, partner_level in answer.levels.items():
        reply.partner_levels[partner] = level_pb(partner_level)
    for i, matches in enumerate(answer.results):
        reply.results.add(index=i, matches=[query_match(m) for m in matches])
    return reply


def watch_event(index: int, partner: str, match: Match | None) -> pb.WatchEvent:
    if match is None:  # at COUNT: only that one more of the watched records is held
        return pb.WatchEvent(count=pb.PartnerCount(partner=partner, shared=1))
    return pb.WatchEvent(result=pb.QueryResult(index=index, matches=[query_match(match)]))


def volume_pb(v: QueryVolume) -> pb.MemberQueryVolume:
    return pb.MemberQueryVolume(
        member=v.member,
        queries=v.queries,
        records=v.records,
        records_with_hits=v.records_with_hits,
        peak_per_minute=v.peak_per_minute,
        records_per_day_limit=v.per_day_limit,
        distinct_purposes=v.distinct_purposes,
        refused=v.refused,
        flags=v.flags,
        users=[
            pb.UserQueryVolume(
                user=u.user,
                queries=u.queries,
                records=u.records,
                records_with_hits=u.records_with_hits,
                refused=u.refused,
                bad_requests=u.bad_requests,
                unanswered=u.unanswered,
            )
            for u in v.users
        ],
        unanswered=v.unanswered,
    )


def audit_entry(entry: audit.Entry) -> pb.AuditEntry:
    return pb.AuditEntry(
        seq=entry.seq,
        time=entry.time,
        actor=entry.actor,
        action=entry.action,
        project=entry.project,
        member=entry.member,
        purpose=entry.purpose,
        disclosed=entry.disclosed,
        detail=json.dumps(entry.detail, sort_keys=True),
        prev_hash=entry.prev_hash,
        hash=entry.hash,
        user=entry.user,
    )


def user_list(project: str, member: str, users: list[User]) -> pb.UserList:
    return pb.UserList(
        project=project,
        member=member,
        users=[
            pb.UserInfo(name=u.name, created=u.created, revoked=u.revoked or 0.0) for u in users
        ],
    )
