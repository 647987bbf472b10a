"""The gRPC servicer: protos <-> core types, MatcherError <-> status codes.

Each method authenticates, converts the request, calls the store or the run
manager, and converts back. No matching or disclosure logic lives here.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast

import grpc

from matcher import errors
from matcher.auth import bearer_token, same_hash, token_hash, valid_name
from matcher.disclose import Level, disclose
from matcher.runs import RunManager
from matcher.store import Run, Store
from protos import blindmatch_pb2 as pb
from protos import blindmatch_pb2_grpc as pb_grpc

log = logging.getLogger("blindmatch.matcher")

DEFAULT_THRESHOLD = 0.8
MAX_RECORDS = 50_000_000
MAX_CLK_BITS = 8192
HITS_PER_MESSAGE = 10_000

_STATES = {
    "queued": pb.RUN_STATE_QUEUED,
    "running": pb.RUN_STATE_RUNNING,
    "done": pb.RUN_STATE_DONE,
    "failed": pb.RUN_STATE_FAILED,
}

F = TypeVar("F", bound=Callable[..., Any])


def _abort(context: grpc.ServicerContext, exc: errors.MatcherError) -> None:
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


def _pb_level(level: Level) -> pb.Disclosure:
    return cast(pb.Disclosure, int(level))


def run_status(run: Run) -> pb.RunStatus:
    return pb.RunStatus(
        run_id=run.id,
        state=_STATES[run.state],
        stage=run.stage,
        work_done=run.work_done,
        work_total=run.work_total,
        groups=run.groups,
        message=run.message,
    )


class MatcherService(pb_grpc.MatcherServicer):
    def __init__(self, store: Store, runs: RunManager, admin_token: str) -> None:
        self.store = store
        self.runs = runs
        self._admin_hash = token_hash(admin_token)

    # -- authentication -----------------------------------------------------------

    def _require_admin(self, context: grpc.ServicerContext) -> None:
        token = bearer_token(context.invocation_metadata())
        if token is None:
            raise errors.Unauthenticated(
                "no token: set BLINDMATCH_ADMIN_TOKEN to the operator token"
            )
        if not same_hash(token_hash(token), self._admin_hash):
            raise errors.PermissionDenied("only the operator may do this; wrong operator token")

    def _require_member(self, context: grpc.ServicerContext, project: str) -> str:
        if not project:
            raise errors.InvalidArgument("project: required")
        token = bearer_token(context.invocation_metadata())
        if token is None:
            raise errors.Unauthenticated("no token: pass --token or set BLINDMATCH_TOKEN")
        member = self.store.member_for_token(project, token)
        if member is None:
            raise errors.Unauthenticated(f"the token is not valid for project {project!r}")
        return member

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
        bad = [m for m in members if not valid_name(m)]
        if bad:
            raise errors.InvalidArgument(
                f"members: invalid member name(s) {', '.join(map(repr, bad))}"
            )
        if len(set(members)) != len(members):
            raise errors.InvalidArgument("members: names repeat")
        if len(members) < 2:
            raise errors.InvalidArgument("members: a project needs at least two members")
        disclosure = Level(request.disclosure or pb.DISCLOSURE_HITS)
        threshold = request.threshold or DEFAULT_THRESHOLD
        if not 0.0 < threshold <= 1.0:
            raise errors.InvalidArgument(f"threshold: {threshold} is not in (0, 1]")
        tokens = self.store.create_project(name, members, disclosure, threshold)
        log.info("project %s created with members %s", name, ", ".join(members))
        return pb.CreateProjectReply(
            project=name, tokens=tokens, disclosure=_pb_level(disclosure), threshold=threshold
        )

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
        )
        for name in self.store.members(project.name):
            up = uploads.get(name)
            info.members.add(
                name=name, uploaded=up is not None, record_count=up.record_count if up else 0
            )
        latest = self.store.latest_run(project.name)
        if latest:
            info.latest_run.CopyFrom(run_status(latest))
        return info

    @rpc_errors
    def Upload(
        self, request_iterator: Iterator[pb.UploadRequest], context: grpc.ServicerContext
    ) -> pb.UploadReply:
        first = next(request_iterator, None)
        if first is None or not first.HasField("header"):
            raise errors.InvalidArgument(
                "header: the first message of an upload must be its header"
            )
        header = first.header
        member = self._require_member(context, header.project)
        self.store.project(header.project)
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
        if len(header.sha256) != 64:
            raise errors.InvalidArgument("header.sha256: must be 64 hex digits")
        field_bits = tuple(header.field_bits)
        if field_bits and (sum(field_bits) != bits or any(b == 0 or b % 64 for b in field_bits)):
            raise errors.InvalidArgument(
                "header.field_bits: field sizes must be multiples of 64 adding up to clk_bits"
            )
        clk_bytes = bits // 8
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
            if digest.hexdigest() != header.sha256:
                raise errors.InvalidArgument("clks: content does not match header.sha256")
            upload = self.store.commit_upload(
                header.project,
                member,
                part,
                record_count=count,
                clk_bits=bits,
                fingerprint=header.fingerprint,
                sha256=header.sha256,
                field_bits=field_bits,
            )
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise errors.ResourceExhausted(
                    "the matcher's disk is full; nothing was stored"
                ) from exc
            raise
        finally:
            part.unlink(missing_ok=True)
        log.info("%s/%s uploaded %d CLKs", header.project, member, count)
        return pb.UploadReply(upload_id=upload.id, record_count=count, sha256=upload.sha256)

    @rpc_errors
    def StartRun(self, request: pb.StartRunRequest, context: grpc.ServicerContext) -> pb.RunStatus:
        self._require_member(context, request.project)
        run, created = self.store.create_run(request.project)
        if created:
            self.runs.submit(run.id)
            log.info("run %s queued", run.id)
        return run_status(run)

    @rpc_errors
    def WatchRun(
        self, request: pb.WatchRunRequest, context: grpc.ServicerContext
    ) -> Iterator[pb.RunStatus]:
        self._require_member(context, request.project)
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
        project = self.store.project(request.project)
        run = self.store.latest_run(project.name, state="done")
        if run is None:
            raise errors.FailedPrecondition(
                "no finished run in this project yet; start one with `blindmatch run`"
            )
        upload = dict(self.store.run_inputs(run.id))[member]
        disclosed = disclose(project.disclosure, self.store.links_for(run.id, member))
        header = pb.ResultsHeader(
            run_id=run.id,
            disclosure=_pb_level(project.disclosure),
            upload_sha256=upload.sha256,
            record_count=upload.record_count,
            counts=[pb.PartnerCount(partner=p, shared=n) for p, n in disclosed.counts.items()],
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
