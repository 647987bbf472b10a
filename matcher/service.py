"""The gRPC servicer: protos <-> core types, MatcherError <-> status codes.

Each method authenticates, converts the request, calls the store or the run
manager, and converts back. No matching or disclosure logic lives here.

Who may call what is written down in docs/security.md (a test walks that
table against a real server): operator calls go through `_require_admin`,
member calls through `_require_member`, and ExportAudit (either) through
`_caller`. A token nobody holds is UNAUTHENTICATED; a real token used where it
has no business is PERMISSION_DENIED.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import grpc

from blindmatch.matcher import audit, errors
from blindmatch.matcher.auth import bearer_token, same_hash, token_hash, valid_name
from blindmatch.matcher.disclose import Level, disclose, effective_levels
from blindmatch.matcher.index_store import Encoding
from blindmatch.matcher.limits import MemberLimiter, QueryStreams
from blindmatch.matcher.realtime import MemberVolume, QueryAnswer, Realtime
from blindmatch.matcher.runs import RunManager
from blindmatch.matcher.store import DAY, DISK_FULL, Run, Store, disk_full
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

log = logging.getLogger("blindmatch.matcher")

DEFAULT_THRESHOLD = 0.8
MAX_RECORDS = 50_000_000
MAX_CLK_BITS = 8192
MAX_UPLOAD_BYTES = 16 * 1024**3  # per upload, on disk (memory use is one message at a time)
CLIENT_UPLOAD_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
MAX_MEMBERS = 64
MAX_RETENTION = 3653 * DAY  # ten years
HITS_PER_MESSAGE = 10_000
_HEX = frozenset("0123456789abcdef")

_STATES = {
    "queued": pb.RUN_STATE_QUEUED,
    "running": pb.RUN_STATE_RUNNING,
    "done": pb.RUN_STATE_DONE,
    "failed": pb.RUN_STATE_FAILED,
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

F = TypeVar("F", bound=Callable[..., Any])


def _abort(context: grpc.ServicerContext, exc: errors.MatcherError) -> None:
    if exc.retryable:
        context.set_trailing_metadata((("blindmatch-retryable", "1"),))
    context.abort(getattr(grpc.StatusCode, exc.status_name), str(exc))


def rpc_errors(method: F) -> F:
    """Turn the project's exceptions into gRPC statuses, for unary and streaming methods."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except errors.MatcherError as exc:
                _abort(context, exc)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return method(self, request, context)
        except errors.MatcherError as exc:
            _abort(context, exc)

    return unary  # type: ignore[return-value]


def _pb_level(level: Level | None) -> pb.Disclosure:
    return cast(pb.Disclosure, int(level) if level is not None else 0)


def _level(value: int, field: str, *, default: Level | None = None) -> Level:
    """A Disclosure field as a Level; INVALID_ARGUMENT for unset (without default) or unknown."""
    if value == pb.DISCLOSURE_UNSPECIFIED and default is not None:
        return default
    try:
        return Level(value)
    except ValueError:
        raise errors.InvalidArgument(
            f"{field}: {value} is not a disclosure level (count=1, hits=2, mapping=3, scores=4)"
        ) from None


def _entry_pb(entry: audit.Entry) -> pb.AuditEntry:
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
    )


def query_reply(answer: QueryAnswer, partners: list[str], level: Level) -> pb.QueryReply:
    reply = pb.QueryReply(
        disclosure=_pb_level(level),
        counts=[pb.PartnerCount(partner=p, shared=n) for p, n in answer.counts.items()],
        partners=partners,
    )
    for partner, partner_level in answer.levels.items():
        reply.partner_levels[partner] = _pb_level(partner_level)
    for i, matches in enumerate(answer.results):
        reply.results.add(
            index=i,
            matches=[
                pb.QueryMatch(partner=m.partner, partner_refs=m.refs, scores=m.scores)
                for m in matches
            ],
        )
    return reply


def volume_pb(v: MemberVolume) -> pb.MemberQueryVolume:
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
    )


def run_status(run: Run) -> pb.RunStatus:
    return pb.RunStatus(
        run_id=run.id,
        state=_STATES[run.state],
        stage=run.stage,
        work_done=run.work_done,
        work_total=run.work_total,
        groups=run.groups,
        message=run.message,
        tasks_done=run.tasks_done,
        tasks_total=run.tasks_total,
    )


class MatcherService(pb_grpc.MatcherServicer):
    def __init__(
        self,
        store: Store,
        runs: RunManager,
        admin_token: str,
        *,
        realtime: Realtime,
        limiter: MemberLimiter | None = None,
        query_streams: QueryStreams | None = None,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
    ) -> None:
        self.store = store
        self.runs = runs
        self.realtime = realtime
        self._admin_hash = token_hash(admin_token)
        self.limiter = limiter or MemberLimiter()
        self.query_streams = query_streams or QueryStreams()
        self.max_upload_bytes = max_upload_bytes

    # -- authentication -----------------------------------------------------------

    def _is_admin(self, token: str) -> bool:
        return same_hash(token_hash(token), self._admin_hash)

    def _require_admin(self, context: grpc.ServicerContext) -> None:
        token = bearer_token(context.invocation_metadata())
        if token is None:
            raise errors.Unauthenticated(
                "no token: set BLINDMATCH_ADMIN_TOKEN to the operator token"
            )
        if self._is_admin(token):
            return
        if self.store.token_owner(token) is not None:
            raise errors.PermissionDenied("only the operator may do this; this is a member token")
        raise errors.Unauthenticated("the operator token is wrong (check BLINDMATCH_ADMIN_TOKEN)")

    def _require_member(self, context: grpc.ServicerContext, project: str) -> str:
        token = bearer_token(context.invocation_metadata())
        if token is None:
            raise errors.Unauthenticated("no token: pass --token or set BLINDMATCH_TOKEN")
        if not project:
            if not self._is_admin(token) and self.store.token_owner(token) is None:
                raise errors.Unauthenticated("the token is not valid for any project")
            raise errors.InvalidArgument("project: required")
        if self._is_admin(token):
            raise errors.PermissionDenied(
                "the operator token cannot be used for member calls; use the member's token"
            )
        member = self.store.member_for_token(project, token)
        if member is None:
            raise errors.Unauthenticated(f"the token is not valid for project {project!r}")
        return member

    def _token_owner(self, context: grpc.ServicerContext) -> tuple[str, str]:
        """(project, member) of a member's token, from the call's metadata alone."""
        token = bearer_token(context.invocation_metadata())
        if token is None:
            raise errors.Unauthenticated("no token: pass --token or set BLINDMATCH_TOKEN")
        if self._is_admin(token):
            raise errors.PermissionDenied(
                "the operator token cannot be used for member calls; use the member's token"
            )
        owner = self.store.token_owner(token)
        if owner is None:
            raise errors.Unauthenticated("the token is not valid for any project")
        return owner

    def _stream_header(
        self, request_iterator: Iterator[Any], context: grpc.ServicerContext, what: str
    ) -> tuple[Any, str]:
        """A client stream's first message, which must be its header, and the caller."""
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise errors.InvalidArgument(f"header: the first message of {what} must be its header")
        member = self._require_member(context, first.header.project)
        self.store.project(first.header.project)
        return first.header, member

    def _caller(self, context: grpc.ServicerContext, project: str) -> str:
        """'operator', or the calling member's name (for calls open to both)."""
        token = bearer_token(context.invocation_metadata())
        if token is not None and self._is_admin(token):
            return audit.OPERATOR
        return self._require_member(context, project)

    # -- operator ---------------------------------------------------------------------

    @rpc_errors
    def CreateProject(
        self, request: pb.CreateProjectRequest, context: grpc.ServicerContext
    ) -> pb.CreateProjectReply:
        self._require_admin(context)
        name = request.name
        if not valid_name(name):
            raise errors.InvalidArgument(
                f"name: {name!r} is not a valid project name (lower-case letters, digits, "
                "'_', '.', '-'; at most 64; starting with a letter or digit)"
            )
        members = list(request.members)
        if len(members) > MAX_MEMBERS:
            raise errors.InvalidArgument(
                f"members: {len(members)} members; a project has at most {MAX_MEMBERS}"
            )
        bad = [m for m in members if not valid_name(m)]
        if bad:
            raise errors.InvalidArgument(
                f"members: invalid member name(s) {', '.join(map(repr, bad))}"
            )
        if len(set(members)) != len(members):
            raise errors.InvalidArgument("members: names repeat")
        if len(members) < 2:
            raise errors.InvalidArgument("members: a project needs at least two members")
        disclosure = _level(request.disclosure, "disclosure", default=Level.HITS)
        threshold = request.threshold or DEFAULT_THRESHOLD
        if not 0.0 < threshold <= 1.0:
            raise errors.InvalidArgument(f"threshold: {threshold} is not in (0, 1]")
        blocking = _BLOCKING.get(request.blocking)
        if blocking is None:
            raise errors.InvalidArgument(f"blocking: unknown value {request.blocking}")
        now = self.store.clock()
        expires = float(request.expires_unix) if request.expires_unix else None
        if expires is not None and not now < expires <= now + MAX_RETENTION:
            raise errors.InvalidArgument(
                f"expires_unix: {request.expires_unix} is not between now and ten years from now"
            )
        tokens = self.store.create_project(
            name,
            members,
            disclosure,
            threshold,
            blocking,
            require_purpose=request.require_purpose,
            expires=expires,
        )
        project = self.store.project(name)
        log.info("project %s created with members %s", name, ", ".join(members))
        return pb.CreateProjectReply(
            project=name,
            tokens=tokens,
            disclosure=_pb_level(disclosure),
            threshold=threshold,
            blocking=_PB_BLOCKING[blocking],
            require_purpose=project.require_purpose,
            expires_unix=int(project.expires),
        )

    @rpc_errors
    def RotateToken(
        self, request: pb.TokenRequest, context: grpc.ServicerContext
    ) -> pb.RotateTokenReply:
        self._require_admin(context)
        project, member = self._token_request(request)
        token = self.store.rotate_token(project, member)
        log.info("%s/%s: token rotated", project, member)
        return pb.RotateTokenReply(project=project, member=member, token=token)

    @rpc_errors
    def RevokeToken(
        self, request: pb.TokenRequest, context: grpc.ServicerContext
    ) -> pb.RevokeTokenReply:
        self._require_admin(context)
        project, member = self._token_request(request)
        self.store.revoke_token(project, member)
        log.info("%s/%s: token revoked", project, member)
        return pb.RevokeTokenReply(project=project, member=member)

    @staticmethod
    def _token_request(request: pb.TokenRequest) -> tuple[str, str]:
        if not request.project:
            raise errors.InvalidArgument("project: required")
        if not request.member:
            raise errors.InvalidArgument("member: required")
        return request.project, request.member

    @rpc_errors
    def VerifyAudit(
        self, request: pb.VerifyAuditRequest, context: grpc.ServicerContext
    ) -> pb.VerifyAuditReply:
        self._require_admin(context)
        anchor = None
        if request.anchor_seq or request.anchor_hash:
            digest = request.anchor_hash.lower()
            if not request.anchor_seq or len(digest) != 64 or not set(digest) <= _HEX:
                raise errors.InvalidArgument(
                    "anchor_seq/anchor_hash: give both, a seq of 1 or more and 64 hex digits"
                )
            anchor = (int(request.anchor_seq), digest)
        result = self.store.verify_audit(anchor)
        self.store.record(
            audit.Event(
                audit.OPERATOR,
                "audit.verify",
                detail={"ok": result.ok, "entries": result.entries, "head_seq": result.head_seq},
            )
        )
        return pb.VerifyAuditReply(
            ok=result.ok,
            entries=result.entries,
            head_seq=result.head_seq,
            head_hash=result.head_hash,
            problems=result.problems,
        )

    @rpc_errors
    def ExportAudit(
        self, request: pb.ExportAuditRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.AuditEntry]:
        caller = self._caller(context, request.project)
        entries = self.store.audit_entries(project=request.project, after=request.after_seq)
        if caller != audit.OPERATOR:
            self.store.project(request.project)  # expired: NotFound, like every member call
            entries = [
                audit.member_view(e, caller)
                for e in entries
                if audit.concerns(e, request.project, caller)
            ]
        self.store.record(
            audit.Event(
                caller,
                "audit.export",
                request.project,
                "" if caller == audit.OPERATOR else caller,
                detail={"after_seq": request.after_seq, "entries": len(entries)},
            )
        )
        for entry in entries:
            yield _entry_pb(entry)

    # -- members ----------------------------------------------------------------------

    @rpc_errors
    def DescribeProject(
        self, request: pb.DescribeProjectRequest, context: grpc.ServicerContext
    ) -> pb.ProjectInfo:
        member = self._require_member(context, request.project)
        project = self.store.project(request.project)
        uploads = self.store.current_uploads(project.name)
        info = pb.ProjectInfo(
            project=project.name,
            member=member,
            disclosure=_pb_level(project.disclosure),
            threshold=project.threshold,
            clk_bits=next(iter(uploads.values())).clk_bits if uploads else 0,
            blocking=_PB_BLOCKING[project.blocking],
            require_purpose=project.require_purpose,
            expires_unix=int(project.expires),
        )
        for name, consent in self.store.consents(project.name).items():
            up = uploads.get(name)
            info.members.add(
                name=name,
                uploaded=up is not None,
                record_count=up.record_count if up else 0,
                consent=_pb_level(consent),
            )
        latest = self.store.latest_run(project.name)
        if latest:
            info.latest_run.CopyFrom(run_status(latest))
        self.store.record(
            audit.Event(
                member,
                "project.describe",
                project.name,
                member,
                disclosed={p: "upload status" for p in uploads if p != member},
            )
        )
        return info

    @rpc_errors
    def Upload(
        self, request_iterator: Iterator[pb.UploadRequest], context: grpc.ServicerContext
    ) -> pb.UploadReply:
        header, member = self._stream_header(request_iterator, context, "an upload")
        with self.limiter.slot(header.project, member, "upload"):
            return self._receive_upload(header, member, request_iterator)

    def _receive_upload(
        self, header: pb.UploadHeader, member: str, request_iterator: Iterator[pb.UploadRequest]
    ) -> pb.UploadReply:
        bits, count = header.clk_bits, header.record_count
        if bits == 0 or bits % 64 or bits > MAX_CLK_BITS:
            raise errors.InvalidArgument(
                f"header.clk_bits: {bits} is not a multiple of 64 between 64 and {MAX_CLK_BITS}"
            )
        if count > MAX_RECORDS:
            raise errors.ResourceExhausted(
                f"header.record_count: {count} is over this matcher's limit of {MAX_RECORDS}"
            )
        if len(header.fingerprint) != 32:
            raise errors.InvalidArgument("header.fingerprint: must be 32 bytes")
        expected_sha256 = header.sha256.lower()
        if len(expected_sha256) != 64 or set(expected_sha256) - set("0123456789abcdef"):
            raise errors.InvalidArgument("header.sha256: must be 64 hex digits")
        field_bits = tuple(header.field_bits)
        if field_bits and (sum(field_bits) != bits or any(b == 0 or b % 64 for b in field_bits)):
            raise errors.InvalidArgument(
                "header.field_bits: field sizes must be multiples of 64 adding up to clk_bits"
            )
        fallback_bits = int(header.fallback_bits)
        if fallback_bits and (fallback_bits % 64 or fallback_bits >= bits or field_bits):
            raise errors.InvalidArgument(
                "header.fallback_bits: a multiple of 64 below clk_bits, and only for "
                "record-level CLKs (no field_bits)"
            )
        key = header.client_upload_id
        if key and not CLIENT_UPLOAD_ID.fullmatch(key):
            raise errors.InvalidArgument(
                "header.client_upload_id: 1 to 128 of the characters A-Z a-z 0-9 _ . -"
            )
        earlier = self.store.keyed_upload(header.project, member, key) if key else None
        if earlier is not None:
            if (earlier.sha256, earlier.record_count, earlier.clk_bits) != (
                expected_sha256,
                count,
                bits,
            ):
                raise errors.AlreadyExists(
                    f"header.client_upload_id: {key!r} was already used for a different "
                    "upload; use a new id for new content"
                )
            log.info("%s/%s retried upload %s: acknowledged again", header.project, member, key)
            return pb.UploadReply(
                upload_id=earlier.id, record_count=count, sha256=earlier.sha256, replayed=True
            )
        clk_bytes = bits // 8
        if count * clk_bytes > self.max_upload_bytes:
            raise errors.ResourceExhausted(
                f"header: {count} CLKs of {bits} bits is {count * clk_bytes} bytes, over this "
                f"matcher's limit of {self.max_upload_bytes} bytes per upload"
            )
        self.store.ensure_room(count * clk_bytes)
        part = self.store.new_upload_path()
        digest = hashlib.sha256()
        received = 0
        try:
            with open(part, "wb") as fh:
                for message in request_iterator:
                    if not message.HasField("clks"):
                        raise errors.InvalidArgument("clks: only the first message may be a header")
                    data = message.clks
                    if len(data) % clk_bytes:
                        raise errors.InvalidArgument(
                            f"clks: {len(data)} bytes is not a whole number of {bits}-bit CLKs "
                            f"(record {received + len(data) // clk_bytes})"
                        )
                    received += len(data) // clk_bytes
                    if received > count:
                        raise errors.InvalidArgument(
                            f"clks: more CLKs than header.record_count ({count})"
                        )
                    digest.update(data)
                    fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if received != count:
                raise errors.InvalidArgument(
                    f"clks: the upload ended after {received} of {count} CLKs; nothing was stored"
                )
            if digest.hexdigest() != expected_sha256:
                raise errors.InvalidArgument("clks: content does not match header.sha256")
            upload, replayed = self.store.commit_upload(
                header.project,
                member,
                part,
                record_count=count,
                clk_bits=bits,
                fingerprint=header.fingerprint,
                sha256=expected_sha256,
                client_upload_id=key,
                field_bits=field_bits,
                fallback_bits=fallback_bits,
            )
        except OSError as exc:
            if disk_full(exc):
                raise errors.ResourceExhausted(DISK_FULL) from exc
            raise
        finally:
            part.unlink(missing_ok=True)
        log.info("%s/%s uploaded %d CLKs", header.project, member, count)
        return pb.UploadReply(
            upload_id=upload.id, record_count=count, sha256=upload.sha256, replayed=replayed
        )

    @rpc_errors
    def StartRun(self, request: pb.StartRunRequest, context: grpc.ServicerContext) -> pb.RunStatus:
        member = self._require_member(context, request.project)
        run, created = self.store.create_run(request.project, actor=member)
        if created:
            self.runs.submit(run.id)
            log.info("run %s queued", run.id)
        return run_status(run)

    @rpc_errors
    def WatchRun(
        self, request: pb.WatchRunRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.RunStatus]:
        member = self._require_member(context, request.project)
        with self.limiter.slot(request.project, member, "run watch"):
            yield from self._watch_run(request, context)

    def _watch_run(
        self, request: pb.WatchRunRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.RunStatus]:
        self.store.project(request.project)  # expired: NotFound, like every member call
        if request.run_id:
            run = self.store.run(request.run_id)
            if run.project != request.project:
                raise errors.NotFound(f"no run {request.run_id!r} in project {request.project!r}")
        else:
            latest = self.store.latest_run(request.project)
            if latest is None:
                raise errors.FailedPrecondition("no run has started in this project")
            run = latest
        last: pb.RunStatus | None = None
        deadline = time.monotonic() + 24 * 3600
        while context.is_active() and time.monotonic() < deadline:
            status = run_status(self.store.run(run.id))
            if status != last:
                yield status
                last = status
            if status.state in (pb.RUN_STATE_DONE, pb.RUN_STATE_FAILED):
                return
            self.runs.wait_for_change(0.5)

    @rpc_errors
    def GetResults(
        self, request: pb.ResultsRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.ResultsChunk]:
        member = self._require_member(context, request.project)
        with self.limiter.slot(request.project, member, "results fetch"):
            yield from self._results(request, member)

    def _results(self, request: pb.ResultsRequest, member: str) -> Iterator[pb.ResultsChunk]:
        project = self.store.project(request.project)
        purpose = audit.check_purpose(
            request.purpose, required=project.require_purpose, project=project.name
        )
        run = self.store.latest_run(project.name, state="done")
        if run is None:
            raise errors.FailedPrecondition(
                "no finished run in this project yet; start one with `blindmatch run`"
            )
        upload = dict(self.store.run_inputs(run.id)).get(member)
        if upload is None:
            raise errors.FailedPrecondition(
                f"the latest run ({run.id}) holds no data of yours (you erased it); "
                "upload again and start a new run"
            )
        levels = effective_levels(project.disclosure, self.store.consents(project.name), member)
        disclosed = disclose(levels, self.store.links_for(run.id, member))
        # Recorded before anything leaves: no audit entry, no disclosure.
        self.store.record(
            audit.Event(
                member,
                "results.disclose",
                project.name,
                member,
                purpose=purpose,
                disclosed={p: level.name.lower() for p, level in levels.items()},
                detail={
                    "run_id": run.id,
                    "counts": {p: disclosed.counts.get(p, 0) for p in levels},
                },
            )
        )
        header = pb.ResultsHeader(
            run_id=run.id,
            disclosure=_pb_level(max(levels.values(), default=project.disclosure)),
            upload_sha256=upload.sha256,
            record_count=upload.record_count,
            counts=[
                pb.PartnerCount(partner=p, shared=n, disclosure=_pb_level(disclosed.levels[p]))
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

    # -- real-time: standing indexes and queries (matcher/realtime.py) ---------------------

    @rpc_errors
    def ChangeIndex(
        self, request_iterator: Iterator[pb.IndexChange], context: grpc.ServicerContext
    ) -> pb.IndexChangeReply:
        header, member = self._stream_header(request_iterator, context, "an index change")
        puts: list[tuple[str, bytes]] = []
        removes: list[str] = []
        clk_bytes = max(header.clk_bits // 8, 1)
        for message in request_iterator:
            if message.HasField("put"):
                refs, data = message.put.refs, message.put.clks
                if len(data) != len(refs) * clk_bytes:
                    raise errors.InvalidArgument(
                        f"put.clks: {len(data)} bytes for {len(refs)} refs; expected "
                        f"{len(refs) * clk_bytes} ({header.clk_bits}-bit CLKs as the header "
                        "says); nothing was changed"
                    )
                puts.extend(
                    (ref, data[i * clk_bytes : (i + 1) * clk_bytes]) for i, ref in enumerate(refs)
                )
            elif message.HasField("remove"):
                removes.extend(message.remove.refs)
            else:
                raise errors.InvalidArgument("header: only the first message may be a header")
        summary = self.realtime.change_index(
            header.project,
            member,
            Encoding(header.clk_bits, header.fingerprint),
            puts,
            removes,
        )
        log.info(
            "%s/%s index: +%d ~%d -%d = %d",
            header.project,
            member,
            summary.added,
            summary.replaced,
            summary.removed,
            summary.record_count,
        )
        return pb.IndexChangeReply(
            added=summary.added,
            replaced=summary.replaced,
            removed=summary.removed,
            record_count=summary.record_count,
        )

    @rpc_errors
    def ListIndex(
        self, request: pb.ListIndexRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.IndexListing]:
        member = self._require_member(context, request.project)
        self.store.project(request.project)  # expired: NotFound, like every member call
        clk_bits, refs, digests = self.realtime.list_index(request.project, member)
        step = HITS_PER_MESSAGE * 5
        for start in range(0, max(len(refs), 1), step):
            yield pb.IndexListing(
                refs=refs[start : start + step],
                digests=b"".join(digests[start : start + step]),
                record_count=len(refs),
                clk_bits=clk_bits,
            )

    @rpc_errors
    def Query(self, request: pb.QueryRequest, context: grpc.ServicerContext) -> pb.QueryReply:
        return self._query(request, context)

    @rpc_errors
    def QueryStream(
        self, requests: Iterator[pb.QueryRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.QueryReply]:
        """Query as a conversation: one reply for each request, in order.

        The stream is its token's member's from the start, before any request is read, so
        it counts against that member's query streams (`QueryStreams`) and is ended when
        idle even if it never asks; every request is then checked and answered exactly as
        by Query. An error ends the stream with the status Query would have returned.
        """
        project, member = self._token_owner(context)
        with self.query_streams.open(project, member, context.cancel) as stream:
            for request in requests:
                if not self.query_streams.begin(stream):
                    return  # ended as idle just as this request came: it is not answered
                try:
                    reply = self._query(request, context)
                finally:
                    self.query_streams.done(stream)
                yield reply

    def _query(self, request: pb.QueryRequest, context: grpc.ServicerContext) -> pb.QueryReply:
        member = self._require_member(context, request.project)
        answer, partners = self.realtime.query(
            request.project,
            member,
            request.purpose,
            Encoding(request.clk_bits, request.fingerprint),
            request.clks,
        )
        return query_reply(answer, partners, self.store.project(request.project).disclosure)

    @rpc_errors
    def Watch(
        self, request: pb.QueryRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.WatchEvent]:
        member = self._require_member(context, request.project)
        watch = self.realtime.watch(
            request.project,
            member,
            request.purpose,
            Encoding(request.clk_bits, request.fingerprint),
            request.clks,
        )
        try:
            yield pb.WatchEvent(ready=True)
            while context.is_active():
                event = watch.next_event(timeout=0.5)
                if watch.ended:
                    raise errors.NotFound(watch.ended)
                if event is None:
                    continue
                index, partner, match = event
                if match is None:
                    yield pb.WatchEvent(count=pb.PartnerCount(partner=partner, shared=1))
                else:
                    found = pb.QueryMatch(
                        partner=match.partner, partner_refs=match.refs, scores=match.scores
                    )
                    yield pb.WatchEvent(result=pb.QueryResult(index=index, matches=[found]))
        finally:
            self.realtime.unwatch(watch)

    @rpc_errors
    def SetQueryLimits(
        self, request: pb.QueryLimits, context: grpc.ServicerContext
    ) -> pb.QueryLimits:
        self._require_admin(context)
        if not request.project:
            raise errors.InvalidArgument("project: required")
        limits = self.realtime.set_limits(
            request.project,
            request.member,
            request.records_per_minute,
            request.records_per_day,
            request.allow_watch if request.HasField("allow_watch") and not request.member else None,
        )
        log.info(
            "query limits for %s/%s: %d per minute, %d per day",
            request.project,
            request.member or "*",
            limits.per_minute,
            limits.per_day,
        )
        return pb.QueryLimits(
            project=request.project,
            member=request.member,
            records_per_minute=limits.per_minute,
            records_per_day=limits.per_day,
            allow_watch=request.project in self.realtime.index_store.allow_watch(),
        )

    @rpc_errors
    def GetQueryReport(
        self, request: pb.QueryReportRequest, context: grpc.ServicerContext
    ) -> pb.QueryReport:
        self._require_admin(context)
        if not request.project:
            raise errors.InvalidArgument("project: required")
        hours = request.hours or 24
        volumes = self.realtime.report(request.project, hours)
        return pb.QueryReport(
            project=request.project, hours=hours, members=[volume_pb(v) for v in volumes]
        )

    @rpc_errors
    def SetConsent(
        self, request: pb.SetConsentRequest, context: grpc.ServicerContext
    ) -> pb.ConsentReply:
        member = self._require_member(context, request.project)
        if request.level == pb.DISCLOSURE_UNSPECIFIED:
            raise errors.InvalidArgument("level: required (count, hits, mapping or scores)")
        level = _level(request.level, "level")
        self.store.project(request.project)
        self.store.set_consent(request.project, member, level)
        log.info("%s/%s: consent set to %s", request.project, member, level.name.lower())
        return pb.ConsentReply(project=request.project, member=member, level=_pb_level(level))

    @rpc_errors
    def Erase(self, request: pb.EraseRequest, context: grpc.ServicerContext) -> pb.EraseReply:
        member = self._require_member(context, request.project)
        erased = self.store.erase_member(request.project, member)
        self.realtime.erase_member(request.project, member)
        log.info("%s/%s: erased %d uploads", request.project, member, erased.uploads)
        return pb.EraseReply(uploads_deleted=erased.uploads, links_deleted=erased.links)
