"""A member's request-reference calls (issue, resolve, withdraw; docs/requests.md): part of
`MatcherClient` (client/remote/client.py), which provides the connection; each is one unary
call, not retried (each changes something once, and is audited)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from google.protobuf.message import Message

from blindmatch.client.remote import convert
from blindmatch.client.remote.model import HitRefs, IssuedRefs, ResolvedRef, WithdrawnRef
from blindmatch.protos import blindmatch_pb2 as pb


class RequestCalls:
    """Mixed into `MatcherClient`, which provides `_unary`."""

    if TYPE_CHECKING:

        def _unary(self, rpc: str, request: Message) -> Any: ...

    def issue_request_refs(
        self, project: str, rows: Sequence[int], sha256: str,
        *, partner: str = "", purpose: str = "",
    ) -> IssuedRefs:  # fmt: skip
        """Member: references for its record at `rows` of its upload `sha256`, for `partner`
        (or every partner the latest run found holds it)."""
        request = convert.issue_ref_request(project, rows, sha256, partner, purpose)
        return convert.issued_refs(self._unary("IssueRequestRef", request))

    def issue_hit_refs(
        self, project: str, hits: Sequence[tuple[Sequence[int], str]], sha256: str,
        *, purpose: str = "",
    ) -> HitRefs:  # fmt: skip
        """Member: one reference per hit (rows of its upload `sha256`, partner), all or none."""
        request = convert.issue_refs_request(project, hits, sha256, purpose)
        return convert.hit_refs(self._unary("IssueRequestRefs", request))

    def resolve_request_ref(
        self, project: str, reference: str, sha256: str, purpose: str = ""
    ) -> ResolvedRef:
        """Member: its own rows that a reference addressed to it points at, in its upload
        `sha256` (as the matcher acknowledged it); a reference to another upload is refused
        and nothing is recorded."""
        request = pb.ResolveRefRequest(
            project=project, reference=reference, purpose=purpose, upload_sha256=sha256
        )
        return convert.resolved_ref(self._unary("ResolveRequestRef", request))

    def withdraw_request_ref(self, project: str, reference: str, purpose: str = "") -> WithdrawnRef:
        """Member: withdraw a reference it was issued; its partner can resolve it no more."""
        request = pb.WithdrawRefRequest(project=project, reference=reference, purpose=purpose)
        return convert.withdrawn_ref(self._unary("WithdrawRequestRef", request))
