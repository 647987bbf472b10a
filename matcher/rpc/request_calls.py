"""The servicer's request-reference RPCs (IssueRequestRef, IssueRequestRefs,
ResolveRequestRef, WithdrawRequestRef; docs/requests.md): part of `MatcherService`
(matcher/rpc/servicer.py), which holds the store; each authorises the caller as a consulting
member, calls matcher/usecases/requests.py and converts what comes back."""

from __future__ import annotations

from blindmatch.matcher.rpc import convert
from blindmatch.matcher.rpc.auth import Call, member_call, require_consulting_member
from blindmatch.matcher.storage.store import Store
from blindmatch.matcher.usecases import requests
from blindmatch.protos import blindmatch_pb2 as pb


class RequestCalls:
    """Mixed into `MatcherService`, which provides the store."""

    store: Store

    @member_call
    def IssueRequestRef(self, request: pb.IssueRefRequest, context: Call) -> pb.IssueRefReply:
        member = require_consulting_member(context.caller, request.project, self.store)
        run_id, refs, erased = requests.issue(
            self.store,
            request.project,
            member,
            list(request.rows),
            request.partner,
            request.upload_sha256,
            request.purpose,
        )
        return convert.issue_ref_reply(run_id, refs, erased)

    @member_call
    def IssueRequestRefs(self, request: pb.IssueRefsRequest, context: Call) -> pb.IssueRefsReply:
        member = require_consulting_member(context.caller, request.project, self.store)
        hits = [(list(h.rows), h.partner) for h in request.hits]
        run_id, refs = requests.issue_for_hits(
            self.store, request.project, member, hits, request.upload_sha256, request.purpose
        )
        return pb.IssueRefsReply(run_id=run_id, references=refs)

    @member_call
    def ResolveRequestRef(self, request: pb.ResolveRefRequest, context: Call) -> pb.ResolveRefReply:
        member = require_consulting_member(context.caller, request.project, self.store)
        ref = requests.resolve(
            self.store,
            request.project,
            member,
            request.reference,
            request.purpose,
            request.upload_sha256,
        )
        return convert.resolve_ref_reply(ref)

    @member_call
    def WithdrawRequestRef(
        self, request: pb.WithdrawRefRequest, context: Call
    ) -> pb.WithdrawRefReply:
        member = require_consulting_member(context.caller, request.project, self.store)
        ref, withdrawn, resolved = requests.withdraw(
            self.store, request.project, member, request.reference, request.purpose
        )
        return pb.WithdrawRefReply(
            reference=ref.reference,
            partner=ref.partner,
            run_id=ref.run_id,
            issued_unix=ref.issued,
            withdrawn_unix=withdrawn,
            resolved=resolved,
        )
