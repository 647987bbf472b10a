"""Where a started two-server upload's shares are, for `project show` (walk2s, issue 18):
the matcher notes each upload ticket it issues until it takes that upload's header
(storage/ticket_store.py), but S1 and S2 check tickets themselves, so on its own it cannot
tell an upload that sent nothing from one whose shares reached S1 (or S1 and S2) only. For a
project with such a ticket, `DescribeProject` asks S1 and S2 (`Holds`, with the combiner's
key, both at once, at most HOLDS_SECONDS each) whether they hold the upload it names; a role
that does not answer is said (`two_server_unasked`), and the description goes on without it.
The operator's view asks of every started upload, a member's of its own only: where a
partner's shares are is no business of the member's.

Each reply also carries the role's public operating limits (capsfirst, issue 18 (b)): its
`--standing-bytes` and, at S1, the largest partner a one-record query is compared whole
against under its caps (core/exhaustive.py `whole_records`). C asks for them alone (`Holds`
naming no upload, `bounds`) before its first standing deal (rpc/twoserver_conversions.py
`Conversions.learn`), so that it deals no piece 0 for nothing. They are limits the operators
set, told to C alone (the combiner's key), which learned the first from its standing replies
already; no data of any member's."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import grpc

from blindmatch.matcher import errors
from blindmatch.matcher.core import exhaustive
from blindmatch.matcher.core.tickets import QUERY_MARK
from blindmatch.matcher.rpc.older_peer import older_peer
from blindmatch.matcher.rpc.twoserver_peers import peer_error
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from blindmatch.matcher.rpc.twoserver_client import RemoteServers
    from blindmatch.matcher.rpc.twoserver_role import _Role
    from blindmatch.matcher.storage.store import Store
    from blindmatch.matcher.usecases.tworuns import TwoServerSetup

MAX_NAMES = 1000  # a request's upload names (a project has at most this many members)
HOLDS_SECONDS = 2.0  # how long `project show` waits for each of S1 and S2
ASKING = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bm-holds")
_HELD = {True: pb.STARTED_HELD_YES, False: pb.STARTED_HELD_NO}


def answer(role: _Role, request: pb.HoldsRequest) -> pb.HoldsReply:
    """A role's `Holds`: whether it holds each named upload (a member's project upload,
    never a query's records), in the request's order; and its bounds (capsfirst: with no
    names, those alone)."""
    names = list(request.names)
    if len(names) > MAX_NAMES:
        raise errors.InvalidArgument(f"names: {len(names)}; 0 to {MAX_NAMES} upload names")
    for i, name in enumerate(names):
        parts = name.split("/")
        if len(parts) != 3 or not all(parts) or QUERY_MARK in name:
            raise errors.InvalidArgument(
                f"names[{i}]: {name[:80]!r} is not an upload's name (project/member/tag)"
            )
    with role.lock:
        reply = pb.HoldsReply(held=[name in role.held for name in names])
    reply.standing_bytes = role.standing.most_bytes()
    if role.role == "s1":  # (rpc/twoserver_service.py `BlockingService`'s caps)
        s1: Any = role
        reply.query_whole_records = exhaustive.whole_records(s1.exhaustive, s1.small_member,
                                                             s1.query_whole)  # fmt: skip
    return reply


def role_stub(who: str, kept: grpc.Channel) -> Any:
    """`who`'s (S1's or S2's) stub over the `kept` channel (left open)."""
    return (pb_grpc.TwoServerBlockingStub if who == "S1" else pb_grpc.TwoServerSharesStub)(kept)


def older_role(who: str, address: str, rpc: str) -> str:
    """What is said of S1 or S2 that does not know a call the matcher makes: a role of an
    older blindmatch than the matcher's (docs/operations.md "Upgrade": a mixed fleet)."""
    return older_peer(f"{who} ({address})", rpc)


def holds_at(
    address: str,
    who: str,
    key: str,
    names: list[str],
    kept: grpc.Channel,
) -> tuple[list[bool] | None, str]:
    """`who`'s (S1's or S2's, at `address`) answer for `names` over the `kept` channel; never
    raises: (None, why) where it cannot be reached in time or refuses (or the `kept` channel
    is closed: the matcher stopped)."""
    try:
        reply = role_stub(who, kept).Holds(
            pb.HoldsRequest(names=names),
            timeout=HOLDS_SECONDS,
            metadata=(("authorization", f"Bearer {key}"),),
        )
    except grpc.RpcError as exc:
        if exc.code() is grpc.StatusCode.UNIMPLEMENTED:  # (said `Method not found!` alone)
            return None, older_role(who, address, "Holds")
        return None, str(peer_error(f"{who} ({address})", exc))
    except ValueError as exc:  # the kept channel closed: the matcher has stopped
        return None, f"{who} ({address}): {exc}"
    if len(reply.held) != len(names):
        return None, f"{who} ({address}) answered for {len(reply.held)} of {len(names)}"
    return list(reply.held), ""


def bounds(remote: RemoteServers) -> list[pb.HoldsReply | None]:
    """S1's and S2's bounds (`Holds` naming no upload, both at once, HOLDS_SECONDS each at
    most), as `remote`'s channels reach them: each one's reply; an empty one (its fields
    unset) where it refused (a role older than bounds-only `Holds`); None where it did not
    answer (C asks again before its next deal)."""

    def ask(stub: Any) -> pb.HoldsReply | None:
        try:
            reply: pb.HoldsReply = stub.Holds(pb.HoldsRequest(), timeout=HOLDS_SECONDS,
                                              metadata=remote._metadata)  # fmt: skip
            return reply
        except grpc.RpcError as exc:
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                return None
            return pb.HoldsReply()

    to_s2 = ASKING.submit(ask, remote._s2)
    return [ask(remote._s1), to_s2.result()]


def where_started(setup: TwoServerSetup, store: Store, info: pb.ProjectInfo) -> None:
    """Fill in where each started upload of the described project is (`info.member` empty:
    the operator's view, every member's; else the member's own only)."""
    if setup.holds is None:
        return
    names = store.started_names(info.project)
    if info.member:
        names = {m: n for m, n in names.items() if m == info.member}
    if not names:
        return
    asked = list(names.values())
    to_s2 = ASKING.submit(setup.holds, "S2", asked)
    answers = {"S1": setup.holds("S1", asked), "S2": to_s2.result()}
    unasked = [why for _, why in answers.values() if why]
    info.two_server_unasked = "; ".join(unasked)
    for m in info.members:
        if m.name not in names:
            continue
        i = asked.index(names[m.name])
        for who, field in (("S1", "started_at_s1"), ("S2", "started_at_s2")):
            held = answers[who][0]
            if held is not None:
                setattr(m, field, _HELD[held[i]])


__all__ = ["HOLDS_SECONDS", "MAX_NAMES", "answer", "bounds", "holds_at", "role_stub",
           "where_started"]  # fmt: skip
