"""A typed client for the matcher: callers get our exceptions, never grpc.RpcError."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import cast

import grpc

from client.encoded import Encoded
from client.errors import (
    AuthError,
    MatcherError,
    NotFoundError,
    RejectedError,
    UnavailableError,
)
from protos import blindmatch_pb2 as pb
from protos import blindmatch_pb2_grpc as pb_grpc

# Whole CLKs per upload message: 2 MiB of 1024-bit CLKs, well under gRPC's limits.
UPLOAD_RECORDS_PER_MESSAGE = 16_384

LEVELS = {"count": 1, "hits": 2, "mapping": 3, "scores": 4}
LEVEL_NAMES = {v: k for k, v in LEVELS.items()}

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
        if cls is UnavailableError:
            hint = TLS_HINT if any(w in detail.lower() for w in _TLS_WORDS) else ""
            detail = f"cannot reach the matcher at {target}: {detail}{hint}"
        raise cls(f"{detail} [{code.name}]") from None


@dataclass(frozen=True)
class ProjectTokens:
    project: str
    tokens: dict[str, str]
    disclosure: str
    threshold: float
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

    @classmethod
    def from_pb(cls, msg: pb.RunStatus) -> RunProgress:
        state = pb.RunState.Name(msg.state).removeprefix("RUN_STATE_").lower()
        return cls(
            msg.run_id, state, msg.stage, msg.work_done, msg.work_total, msg.groups, msg.message
        )


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


class MatcherClient:
    """One connection to a matcher, with one token (operator's or a member's)."""

    def __init__(
        self,
        target: str,
        token: str | None = None,
        *,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.target = target
        self.token = token
        self.timeout = timeout
        options = [
            ("grpc.max_receive_message_length", 16 * 1024 * 1024),
            ("grpc.max_send_message_length", 16 * 1024 * 1024),
        ]
        if credentials is None:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = pb_grpc.MatcherStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> MatcherClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")] if self.token else []

    def create_project(
        self,
        name: str,
        members: list[str],
        disclosure: str = "hits",
        threshold: float = 0.0,
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
        with translate_errors(self.target):
            return self._stub.DescribeProject(
                pb.DescribeProjectRequest(project=project),
                metadata=self._metadata(),
                timeout=self.timeout,
            )

    def upload(self, project: str, encoded: Encoded, *, progress: bool = False) -> pb.UploadReply:
        """Stream an ENCODED folder's CLKs; the matcher replaces our earlier upload."""
        from tqdm import tqdm

        bar = tqdm(
            total=encoded.record_count,
            desc="uploading",
            unit="rec",
            file=sys.stderr,
            disable=not progress,
            leave=False,
        )

        def messages() -> Iterator[pb.UploadRequest]:
            yield pb.UploadRequest(
                header=pb.UploadHeader(
                    project=project,
                    clk_bits=encoded.clk_bits,
                    record_count=encoded.record_count,
                    fingerprint=encoded.fingerprint,
                    sha256=encoded.sha256,
                )
            )
            for block in encoded.iter_chunks(UPLOAD_RECORDS_PER_MESSAGE):
                yield pb.UploadRequest(clks=block)
                bar.update(len(block) // encoded.clk_bytes)

        try:
            with translate_errors(self.target):
                return self._stub.Upload(messages(), metadata=self._metadata(), timeout=3600)
        finally:
            bar.close()

    def start_run(self, project: str) -> RunProgress:
        with translate_errors(self.target):
            status = self._stub.StartRun(
                pb.StartRunRequest(project=project), metadata=self._metadata(), timeout=self.timeout
            )
        return RunProgress.from_pb(status)

    def watch_run(self, project: str, run_id: str = "") -> Iterator[RunProgress]:
        """Progress updates until the run is done or failed."""
        with translate_errors(self.target):
            for status in self._stub.WatchRun(
                pb.WatchRunRequest(project=project, run_id=run_id), metadata=self._metadata()
            ):
                yield RunProgress.from_pb(status)

    def results(self, project: str, purpose: str = "") -> Results:
        """Everything the project's level and the partners' consent let this member learn.

        `purpose` (a case reference) goes to the audit log; some projects require one.
        """
        results: Results | None = None
        with translate_errors(self.target):
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
