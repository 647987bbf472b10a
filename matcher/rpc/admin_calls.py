"""The servicer's `EndProject` (`blindmatch admin end-project`): part of `MatcherService`
(matcher/rpc/servicer.py). The operator ends a project before its date (an information-sharing
agreement terminated) through the retention sweep a project's expiry runs
(usecases/retention.py `Sweeper.end`): no second way of deleting a project."""

from __future__ import annotations

import logging

from blindmatch.matcher.errors import InvalidArgument
from blindmatch.matcher.rpc.auth import Call, operator_call
from blindmatch.matcher.usecases.retention import Sweeper
from blindmatch.matcher.usecases.tworuns import Forgot
from blindmatch.protos import blindmatch_pb2 as pb

log = logging.getLogger("blindmatch.matcher")


class AdminCalls:
    """Mixed into `MatcherService`, which holds the matcher's retention sweeper."""

    sweeper: Sweeper

    @operator_call
    def EndProject(self, request: pb.EndProjectRequest, context: Call) -> pb.EndProjectReply:
        if not request.project:
            raise InvalidArgument("project: required")
        ended = self.sweeper.end(request.project, request.reason)
        forgot = [f for said in ended.said if isinstance(said, list) for f in said
                  if isinstance(f, Forgot)]  # fmt: skip
        detail = ended.detail
        log.info("project %s ended by the operator: %s", request.project, detail["reason"])
        return pb.EndProjectReply(
            project=request.project,
            uploads_deleted=_count(detail, "uploads"),
            runs_deleted=_count(detail, "runs"),
            links_deleted=_count(detail, "links"),
            users_deleted=_count(detail, "users"),
            two_server=[
                pb.ServerForgot(server=f.server, dropped=f.dropped, error=f.error) for f in forgot
            ],
            audit_seq=_count(detail, "seq"),
        )


def _count(detail: dict[str, object], key: str) -> int:
    value = detail.get(key, 0)
    return value if isinstance(value, int) else 0
