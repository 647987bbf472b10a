"""A typed client for the matcher: callers get our exceptions, never grpc.RpcError."""

from __future__ import annotations

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
            detail = f"cannot reach the matcher at {target}: {detail}"
        raise cls(f"{detail} [{code.name}]") from None


@dataclass(frozen=True)
class ProjectTokens:
    project: str
    tokens: dict[str, str]
    disclosure: str
    threshold: float


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
        self, name: str, members: list[str], disclosure: str = "hits", threshold: float = 0.0
    ) -> ProjectTokens:
        request = pb.CreateProjectRequest(
            name=name,
            members=members,
            disclosure=cast(pb.Disclosure, LEVELS[disclosure]),
            threshold=threshold,
        )
        with translate_errors(self.target):
            reply = self._stub.CreateProject(
                request, metadata=self._metadata(), timeout=self.timeout
            )
        return ProjectTokens(
            reply.project, dict(reply.tokens), LEVEL_NAMES[reply.disclosure], reply.threshold
        )

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
                    field_bits=encoded.field_bits,
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

    def results(self, project: str) -> Results:
        """Everything the project's disclosure level lets this member learn."""
        results: Results | None = None
        with translate_errors(self.target):
            for chunk in self._stub.GetResults(
                pb.ResultsRequest(project=project), metadata=self._metadata(), timeout=3600
            ):
                if chunk.HasField("header"):
                    h = chunk.header
                    results = Results(
                        run_id=h.run_id,
                        disclosure=LEVEL_NAMES[h.disclosure],
                        upload_sha256=h.upload_sha256,
                        record_count=h.record_count,
                        counts={c.partner: c.shared for c in h.counts},
                    )
                elif results is not None:
                    results.hits.extend(
                        ResultHit(x.row, x.partner, x.partner_row, x.score) for x in chunk.hits.hits
                    )
        if results is None:
            raise MatcherError("the matcher sent no results header")
        return results
