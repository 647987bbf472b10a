"""The operator's calls (projects, tokens, the audit log, query limits and reports) and a
member's governance calls (named users, consent, erasure): part of `MatcherClient`
(client/remote/client.py), kept apart from the data calls (uploads, runs, results, indexes,
queries), which share its connection, metadata and retries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from google.protobuf.message import Message

from blindmatch.client.remote import convert
from blindmatch.client.remote.channel import translate_errors
from blindmatch.client.remote.model import (
    AuditCheck,
    Ended,
    Erased,
    MemberVolume,
    ProjectInfo,
    ProjectTokens,
    QueryLimits,
    UserInfo,
)
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

T = TypeVar("T")
# ExportAudit's trailer where no entry follows after_seq (matcher/rpc/servicer.py)
AUDIT_LAST_METADATA = "blindmatch-audit-last"


class OperatorCalls:
    """Mixed into `MatcherClient`, which provides the connection below."""

    target: str
    timeout: float
    _stub: pb_grpc.MatcherStub

    if TYPE_CHECKING:

        def _metadata(self) -> list[tuple[str, str]]: ...

        def _unary(self, rpc: str, request: Message) -> Any: ...

        def _retrying(self, what: str, attempt: Callable[[], T]) -> T: ...

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
        require_users: bool = False,
        mode: str = "",
    ) -> ProjectTokens:
        """Operator: a new project; `expires_unix` 0: the matcher's default (180 days);
        `require_users`: consultations need a named user's token; `mode`: "clk", "two-server"."""
        request = convert.create_project_request(name, members, disclosure, threshold, blocking,
                                                 require_purpose, expires_unix)  # fmt: skip
        request.require_users, request.mode = require_users, mode
        return convert.project_tokens(self._unary("CreateProject", request))

    def rotate_token(self, project: str, member: str) -> str:
        """Operator: a new token for `member` (returned once); its old token stops working."""
        request = pb.TokenRequest(project=project, member=member)
        return str(self._unary("RotateToken", request).token)

    def revoke_token(self, project: str, member: str) -> None:
        """Operator: `member`'s token stops working; rotate to issue a new one."""
        self._unary("RevokeToken", pb.TokenRequest(project=project, member=member))

    def list_projects(self, project: str = "") -> list[ProjectInfo]:
        """Operator: every live project (or one), without tokens."""
        request = pb.ListProjectsRequest(project=project)
        reply = self._retrying("list", lambda: self._unary("ListProjects", request))
        return [convert.project_info(p) for p in reply.projects]

    def verify_audit(self, anchor: tuple[int, str] | None = None) -> AuditCheck:
        """Operator: check the audit chain (and that `anchor` (seq, hash) is still in it)."""
        request = pb.VerifyAuditRequest()
        if anchor:
            request.anchor_seq, request.anchor_hash = anchor
        with translate_errors(self.target):
            reply = self._stub.VerifyAudit(request, metadata=self._metadata(), timeout=600)
        return convert.audit_check(reply)

    def audit(
        self, project: str = "", after: int = 0, on_none: Callable[[int | None], None] | None = None
    ) -> Iterator[dict[str, object]]:
        """Audit entries as plain dicts, oldest first: all for the operator (or one
        project's), those that concern it for a member. Where none follows `after`,
        `on_none` is told the number of the last entry the caller may see (0: none; None
        from a matcher that does not say, before 2026-12-07)."""
        with translate_errors(self.target):
            call = self._stub.ExportAudit(
                pb.ExportAuditRequest(project=project, after_seq=after),
                metadata=self._metadata(),
                timeout=3600,
            )
            none = True
            for e in call:
                none = False
                yield convert.audit_entry(e)
            if none and on_none is not None:
                said = dict(call.trailing_metadata() or ()).get(AUDIT_LAST_METADATA)
                on_none(int(said) if said is not None and said.isdigit() else None)

    def add_user(self, project: str, user: str) -> str:
        """Member (its own token): a token for a new named user (returned once)."""
        return str(self._unary("AddUser", pb.UserRequest(project=project, user=user)).token)

    def list_users(self, project: str) -> list[UserInfo]:
        """Member (its own token): its named users, revoked ones included."""
        reply = self._unary("ListUsers", pb.ListUsersRequest(project=project))
        return [convert.user_info(u) for u in reply.users]

    def revoke_user(self, project: str, user: str) -> None:
        """Member (its own token): the user's token stops working at once."""
        self._unary("RevokeUser", pb.UserRequest(project=project, user=user))

    def set_consent(self, project: str, level: str) -> str:
        """Member: the most partners may learn about this member (count/hits/mapping/scores)."""
        request = pb.SetConsentRequest(project=project, level=convert.level_number(level))
        return convert.level_name(self._unary("SetConsent", request).level)

    def erase(self, project: str) -> Erased:
        """Member: delete this member's uploads and every result involving them, now."""
        return convert.erased(self._unary("Erase", pb.EraseRequest(project=project)))

    def end_project(self, project: str, reason: str) -> Ended:
        """Operator: end `project` now, before its date, for `reason` (kept in the audit
        log): its data deleted as at its expiry, at S1 and S2 too in a two-server project."""
        request = pb.EndProjectRequest(project=project, reason=reason)
        return convert.ended(self._unary("EndProject", request))

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
        request = convert.query_limits_request(project, member, per_minute, per_day, allow_watch)
        with translate_errors(self.target):
            reply = self._stub.SetQueryLimits(
                request, metadata=self._metadata(), timeout=self.timeout
            )
        return convert.query_limits(reply)

    def query_report(self, project: str, hours: int = 24) -> list[MemberVolume]:
        """Operator: each member's query volume over the last `hours`, unusual volume flagged."""
        with translate_errors(self.target):
            reply = self._stub.GetQueryReport(
                pb.QueryReportRequest(project=project, hours=hours),
                metadata=self._metadata(),
                timeout=self.timeout,
            )
        return convert.member_volumes(reply)
