"""The gRPC servicer: protos <-> domain types, and the caller's authorisation; nothing else.

The caller is already authenticated (auth.Authenticator) when a method runs; each method
is declared an operator call, a member call or open to both (auth.py), authorises the
caller for the project its request names, converts the request (convert.py), calls one
use case (matcher/usecases/) or the real-time engine (matcher/realtime/), and converts
what comes back. A `ServiceError` becomes its gRPC status (status.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from blindmatch.matcher.core import tickets
from blindmatch.matcher.core.ratelimit import NestedRateLimit, RateLimit
from blindmatch.matcher.domain import (
    CLK_MODE,
    LEVEL_CHOICES,
    MAX_INDEX_CHANGE_BYTES,
    MAX_UPLOAD_BYTES,
    TWO_SERVER,
    counted,
)
from blindmatch.matcher.errors import (
    Busy,
    FailedPrecondition,
    InvalidArgument,
    Unauthenticated,
)
from blindmatch.matcher.realtime.engine import Realtime
from blindmatch.matcher.rpc import convert
from blindmatch.matcher.rpc.admin_calls import AdminCalls
from blindmatch.matcher.rpc.auth import (
    Call,
    caller_name,
    either_call,
    member_call,
    operator_call,
    require_administrator,
    require_consulting_member,
    require_member,
)
from blindmatch.matcher.rpc.heldchanges import HeldChanges
from blindmatch.matcher.rpc.realtime_calls import RealtimeCalls
from blindmatch.matcher.rpc.refusals import Refusals
from blindmatch.matcher.rpc.request_calls import RequestCalls
from blindmatch.matcher.rpc.streams import (
    MemberLimiter,
    QueryStreams,
    StreamGuard,
    ended_because,
)
from blindmatch.matcher.rpc.twoserver_holds import where_started
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases import (
    audit_access,
    projects,
    results,
    run_requests,
    tworuns,
    users,
)
from blindmatch.matcher.usecases.erasure import erase
from blindmatch.matcher.usecases.erasure_retry import ErasureRetries
from blindmatch.matcher.usecases.retention import Sweeper
from blindmatch.matcher.usecases.runs import RunManager
from blindmatch.matcher.usecases.uploads import receive_upload
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

log = logging.getLogger("blindmatch.matcher")
# ExportAudit's trailer where no entry follows after_seq: the last the caller may see
AUDIT_LAST_METADATA = "blindmatch-audit-last"

# A member's DescribeProject and ExportAudit calls (each an fsynced audit entry): a burst,
# then this many a minute, per member and RPC; past it the call is refused as busy.
CONSULTATIONS_PER_MINUTE = 60  # per token: a named user's, or the member's own
CONSULTATION_BURST = 20
MEMBER_CONSULTATIONS_PER_MINUTE = 240  # all of a member's tokens together
MEMBER_CONSULTATION_BURST = 80


class MatcherService(RealtimeCalls, RequestCalls, AdminCalls, pb_grpc.MatcherServicer):
    def __init__(
        self,
        store: Store,
        runs: RunManager,
        *,
        realtime: Realtime,
        sweeper: Sweeper,
        limiter: MemberLimiter | None = None,
        query_streams: QueryStreams | None = None,
        streams: StreamGuard | None = None,
        max_upload_bytes: int = MAX_UPLOAD_BYTES,
        max_index_change_bytes: int = MAX_INDEX_CHANGE_BYTES,
        refusals: Refusals | None = None,
        consultations: NestedRateLimit | None = None,
        default_mode: str = CLK_MODE,
        erasures: ErasureRetries | None = None,
    ) -> None:
        # Each DescribeProject and member ExportAudit appends an fsynced audit entry.
        self.consultations = consultations or NestedRateLimit(
            RateLimit(CONSULTATIONS_PER_MINUTE, CONSULTATION_BURST),
            RateLimit(MEMBER_CONSULTATIONS_PER_MINUTE, MEMBER_CONSULTATION_BURST),
        )
        # Refused calls are noted here (status.rpc_errors): logged, rate-limited, counted.
        self.refusals = refusals
        self.store = store
        self.runs = runs
        self.realtime = realtime
        self.sweeper = sweeper  # a project's expiry, and the operator's EndProject
        self.limiter = limiter or MemberLimiter()
        self.query_streams = query_streams or QueryStreams()
        self.streams = streams or StreamGuard()
        self.max_upload_bytes = max_upload_bytes
        self.held_changes = HeldChanges(max_index_change_bytes)
        self.default_mode = default_mode  # a project's mode where CreateProject gives none
        self.erasures = erasures  # erasures that failed part-way, finished in the background

    @property
    def two_server(self) -> tworuns.TwoServerSetup | None:
        """S1 and S2 (`serve --two-server-s1/--two-server-s2`), or None."""
        return self.runs.two_server

    def _parties(self, info: pb.ProjectInfo) -> pb.ProjectInfo:
        """A two-server project's description names S1 and S2."""
        if info.mode == TWO_SERVER and self.two_server is not None:
            info.two_server_s1, info.two_server_s2 = self.two_server.s1, self.two_server.s2
        return info

    def _where_started(self, info: pb.ProjectInfo) -> None:
        """Where a two-server project's started uploads' shares are (S1's and S2's Holds)."""
        if info.mode == TWO_SERVER and self.two_server is not None:
            where_started(self.two_server, self.store, info)

    def _member(self, context: Call, project: str) -> str:
        return require_member(context.caller, project, self.store)

    def _commit_check(self, context: Call, project: str) -> Callable[[], None]:
        """What a stream's commit checks inside its transaction: the project has not
        expired meanwhile, and the call may still commit (`Call.still_valid`)."""

        def check() -> None:
            self.store.project(project)  # expired: NotFound
            context.still_valid()

        return check

    def _consulting(self, context: Call, what: str) -> None:
        """Refuse (retryable, nothing written) a member's audited consultation past its
        rate: per token (a named user's, or the member's own), and for all its tokens."""
        caller = context.caller
        if caller.is_operator:
            return
        group = (caller.project, caller.member, what)
        wait, member_wide = self.consultations.take((*group, caller.user), group)
        if not wait:
            return
        if member_wide:
            limit = f"at most {MEMBER_CONSULTATIONS_PER_MINUTE} a minute for {caller.member}"
            limit += " and all its named users together"
        else:
            whose = f"user {caller.user!r}" if caller.user else f"{caller.member}'s own token"
            limit = f"at most {CONSULTATIONS_PER_MINUTE} a minute per member token or named"
            limit += f" user ({whose})"
        raise Busy(
            f"{what}: {limit} (each is written to the audit log); try again in "
            f"{max(1, round(wait))} s"
        )

    def _stream_header(self, requests: Iterator[Any], context: Call, what: str) -> tuple[Any, str]:
        """A client stream's first message, which must be its header, and the member; the
        project is checked live before the rest of the stream is read."""
        first = next(requests, None)
        if first is None or not first.HasField("header"):
            raise InvalidArgument(f"header: the first message of {what} must be its header")
        member = self._member(context, first.header.project)
        self.store.project(first.header.project)  # expired: NotFound
        return first.header, member

    # -- operator ---------------------------------------------------------------------------

    @operator_call
    def CreateProject(
        self, request: pb.CreateProjectRequest, context: Call
    ) -> pb.CreateProjectReply:
        project, tokens = projects.create_project(
            self.store,
            convert.project_request(request),
            default_mode=self.default_mode,
            two_server_ready=self.two_server is not None,
        )
        if self.two_server is not None:  # its first query's circuits, built off this call
            tworuns.warm_circuits(self.store, [project.name])
        return convert.project_reply(project, tokens, two_server_ready=self.two_server is not None)

    @operator_call
    def RotateToken(self, request: pb.TokenRequest, context: Call) -> pb.RotateTokenReply:
        token = projects.rotate_token(self.store, request.project, request.member)
        self._end_streams(request.project, request.member, "rotated", "")
        return pb.RotateTokenReply(project=request.project, member=request.member, token=token)

    @operator_call
    def RevokeToken(self, request: pb.TokenRequest, context: Call) -> pb.RevokeTokenReply:
        projects.revoke_token(self.store, request.project, request.member)
        self._end_streams(request.project, request.member, "revoked", None)
        return pb.RevokeTokenReply(project=request.project, member=request.member)

    def _end_streams(self, project: str, member: str, what: str, user: str | None) -> None:
        """End the open streams of the tokens that no longer hold, now (what they would
        commit is refused anyway, by `Call.still_valid` inside the transaction): `user`
        None, the member's and all its users' (`StreamGuard.end_member`)."""
        whose = f"user {user!r} of member {member!r}" if user else f"member {member!r}"
        also = " (and its users' tokens with it)" if user is None else ""
        ended = self.streams.end_member(
            project,
            member,
            ended_because(
                Unauthenticated,
                f"the token of {whose} of {project!r} was {what}{also}",
                "to go on watching, start `blindmatch watch` again with a token that holds",
            ),
            user,
        )
        if ended:
            log.info("%s/%s: %s %s, %s ended", project, member, whose, what,
                     counted(ended, "open stream"))  # fmt: skip

    @operator_call
    def ListProjects(self, request: pb.ListProjectsRequest, context: Call) -> pb.ProjectList:
        views = projects.list_projects(self.store, request.project)
        infos = [self._parties(convert.project_info(v)) for v in views]
        if request.project:  # one project (`project show --operator`): its started uploads
            self._where_started(infos[0])
        return pb.ProjectList(projects=infos)

    @operator_call
    def VerifyAudit(self, request: pb.VerifyAuditRequest, context: Call) -> pb.VerifyAuditReply:
        result = audit_access.verify_audit(self.store, request.anchor_seq, request.anchor_hash)
        return pb.VerifyAuditReply(
            ok=result.ok,
            entries=result.entries,
            head_seq=result.head_seq,
            head_hash=result.head_hash,
            problems=result.problems,
        )

    @either_call
    def ExportAudit(self, request: pb.ExportAuditRequest, context: Call) -> Iterator[pb.AuditEntry]:
        caller = caller_name(context.caller, request.project, self.store)
        self._consulting(context, "ExportAudit")
        entries = audit_access.export_audit(self.store, caller, request.project, request.after_seq)
        if not entries:  # none after after_seq: where the caller's numbers end, in the trailer
            last = audit_access.last_seen(self.store, caller, request.project)
            context.set_trailing_metadata(((AUDIT_LAST_METADATA, str(last)),))
        for entry in entries:
            yield convert.audit_entry(entry)

    @operator_call
    def SetQueryLimits(self, request: pb.QueryLimits, context: Call) -> pb.QueryLimits:
        if not request.project:
            raise InvalidArgument("project: required")
        limits = self.realtime.set_limits(
            request.project,
            request.member,
            request.records_per_minute,
            request.records_per_day,
            request.allow_watch if request.HasField("allow_watch") else None,
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
            allow_watch=self.realtime.watching_allowed(request.project),
        )

    @operator_call
    def GetQueryReport(self, request: pb.QueryReportRequest, context: Call) -> pb.QueryReport:
        if not request.project:
            raise InvalidArgument("project: required")
        hours = request.hours or 24
        if self.refusals is not None:
            self.refusals.flush()  # the refused requests counted so far, in the report
        volumes = self.realtime.report(request.project, hours)
        return pb.QueryReport(
            project=request.project, hours=hours, members=[convert.volume_pb(v) for v in volumes]
        )

    # -- members: batch ---------------------------------------------------------------------

    @member_call
    def DescribeProject(self, request: pb.DescribeProjectRequest, context: Call) -> pb.ProjectInfo:
        member = self._member(context, request.project)
        if request.settings_only:  # nothing of a partner: not audited, not a consultation
            view = projects.settings(self.store, request.project, member)
        else:
            self._consulting(context, "DescribeProject")
            view = projects.describe(self.store, request.project, member)
        info = convert.project_info(view)
        info.user = context.caller.user
        if not request.settings_only:
            self._where_started(info)
        return self._parties(info)

    @member_call
    def SetConsent(self, request: pb.SetConsentRequest, context: Call) -> pb.ConsentReply:
        member = self._member(context, request.project)
        level = convert.level_of(request.level, "level")
        if level is None:
            raise InvalidArgument(f"level: required ({LEVEL_CHOICES})")
        projects.set_consent(self.store, request.project, member, level)
        return pb.ConsentReply(
            project=request.project, member=member, level=convert.level_pb(level)
        )

    @member_call
    def Upload(self, request_iterator: Iterator[pb.UploadRequest], context: Call) -> pb.UploadReply:
        header, member = self._stream_header(request_iterator, context, "an upload")
        with self.limiter.slot(header.project, member, "upload"):
            receipt = receive_upload(
                self.store,
                member,
                convert.upload_header(header),
                convert.upload_chunks(request_iterator),
                max_upload_bytes=self.max_upload_bytes,
                check=self._commit_check(context, header.project),
                ticket_key=self.two_server.member_key if self.two_server else "",
            )
        if self.two_server is not None and not receipt.replayed:  # two-server watches
            self.realtime.uploaded(header.project, member, receipt.upload_id)
            tworuns.warm_circuits(self.store, [header.project])  # its shape's, if new
        return convert.upload_reply(receipt)

    @member_call
    def TwoServerTicket(
        self, request: pb.TwoServerTicketRequest, context: Call
    ) -> pb.TwoServerTicketReply:
        member = self._member(context, request.project)
        if request.upload.project not in ("", request.project):  # was ignored (protowalk)
            raise InvalidArgument(
                f"upload.project: {request.upload.project!r}, but this ticket is for project "
                f"{request.project!r}; the upload's header names the project it is sent to "
                "(or leave upload.project empty)"
            )
        planned = convert.upload_header(request.upload) if request.HasField("upload") else None
        if request.query:  # S1 and S2 have forgotten what a killed matcher left (twoforget.py)
            self.realtime.query_ticket(request.project)
        t = tworuns.issue_ticket(self.store, self.two_server, request.project, member, planned,
                                 query=request.query)  # fmt: skip
        if request.query:  # S1 and S2 forget its records if nothing claims it (twounclaimed.py)
            self.realtime.unclaimed.issued(t.name, tickets.QUERY_TTL_SECONDS)
        else:  # its upload's watches compared before this one replaces it (twowatch.py)
            self.realtime.two_watches.release(request.project, member)
        log.info("%s/%s: two-server %s ticket for %s", request.project, member,
                 "query" if request.query else "upload", t.name)  # fmt: skip
        return pb.TwoServerTicketReply(
            ticket=t.ticket, name=t.name, s1=t.s1, s2=t.s2, expires_unix=t.expires
        )

    @member_call
    def StartRun(self, request: pb.StartRunRequest, context: Call) -> pb.RunStatus:
        member = self._member(context, request.project)
        run = run_requests.start_run(self.store, self.runs, request.project, member)
        return convert.run_status(run_requests.as_seen_by(self.store, run, member))

    @member_call
    def WatchRun(self, request: pb.WatchRunRequest, context: Call) -> Iterator[pb.RunStatus]:
        member = self._member(context, request.project)
        with self.limiter.slot(request.project, member, "run watch"):
            for seen in run_requests.follow_as_seen_by(
                self.store, self.runs, request.project, request.run_id, context.is_active, member
            ):
                yield convert.run_status(seen)

    @member_call
    def GetResults(self, request: pb.ResultsRequest, context: Call) -> Iterator[pb.ResultsChunk]:
        member = require_consulting_member(context.caller, request.project, self.store)
        with self.limiter.slot(request.project, member, "results fetch"):
            found = results.member_results(self.store, request.project, member, request.purpose)
            yield from convert.results_chunks(found)

    @member_call
    def Erase(self, request: pb.EraseRequest, context: Call) -> pb.EraseReply:
        member = self._member(context, request.project)
        why = ended_because(
            FailedPrecondition,
            f"member {member!r} erased its data in {request.project!r}",
            "an erasure ends every watch of the member's; to go on watching, start "
            "`blindmatch watch` again (a new watch, logged with its purpose)",
        )
        two_server = self.store.project(request.project).mode == TWO_SERVER
        if self.refusals is not None:
            # The refused requests counted so far go into the query log now, stamped before the
            # erasure, so that it blanks their users' names too (govwalk; else written up to
            # FLUSH_SECONDS later, after it, a named user's name kept until expiry).
            self.refusals.flush()
        # Then S1 and S2 drop its shares; one that cannot does not undo the erasure here:
        # the reply names it, and the matcher asks it again in the background until it
        # answers (`self.erasures`; a matcher stopped before that asks at its next start).
        forgot: list[tworuns.Forgot] = []

        def forget_shares() -> set[str]:
            forgot.extend(tworuns.forget(self.store, self.two_server, request.project, member))
            return {f.server for f in forgot if f.error}

        erased = erase(
            self.store,
            self.realtime,
            request.project,
            member,
            lambda: self.streams.end_member(request.project, member, why),
            forget_shares if two_server else None,
            self.erasures,
        )
        return pb.EraseReply(
            pending=list(erased.pending),
            uploads_deleted=erased.uploads,
            links_deleted=erased.links,
            users_deleted=erased.users,
            index_records_deleted=erased.index_records,
            two_server=[
                pb.ServerForgot(server=f.server, dropped=f.dropped, error=f.error) for f in forgot
            ],
        )

    # -- members: named users ---------------------------------------------------------------

    @member_call
    def AddUser(self, request: pb.UserRequest, context: Call) -> pb.UserToken:
        member = require_administrator(context.caller, request.project, self.store)
        token = users.add_user(self.store, request.project, member, request.user)
        return pb.UserToken(project=request.project, member=member, user=request.user, token=token)

    @member_call
    def ListUsers(self, request: pb.ListUsersRequest, context: Call) -> pb.UserList:
        member = require_administrator(context.caller, request.project, self.store)
        found = users.list_users(self.store, request.project, member)
        return convert.user_list(request.project, member, found)

    @member_call
    def RevokeUser(self, request: pb.UserRequest, context: Call) -> pb.RevokeUserReply:
        member = require_administrator(context.caller, request.project, self.store)
        users.revoke_user(self.store, request.project, member, request.user)
        self._end_streams(request.project, member, "revoked", request.user)
        return pb.RevokeUserReply(project=request.project, member=member, user=request.user)
