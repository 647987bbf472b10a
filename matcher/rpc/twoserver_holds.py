"""Where a started two-server upload's shares are, for `project show` (walk2s, issue 18):
the matcher notes each upload ticket it issues until it takes that upload's header
(storage/ticket_store.py), but S1 and S2 check tickets themselves, so on its own it cannot
tell an upload that sent nothing from one whose shares reached S1 (or S1 and S2) only. For a
project with such a ticket, `DescribeProject` asks S1 and S2 (`Holds`, with the combiner's
key, both at once, at most HOLDS_SECONDS each) whether they hold the upload it names; a role
that does not answer is said (`two_server_unasked`), and the description goes on without it.
The operator's view asks of every started upload, a member's of its own only: where a
partner's shares are is no business of the member's."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import grpc

from blindmatch.matcher import errors
from blindmatch.matcher.core.tickets import QUERY_MARK
from blindmatch.matcher.rpc.twoserver_channel import channel_options
from blindmatch.matcher.rpc.twoserver_peers import peer_error
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from blindmatch.matcher.rpc.twoserver_role import _Role
    from blindmatch.matcher.storage.store import Store
    from blindmatch.matcher.usecases.tworuns import TwoServerSetup

MAX_NAMES = 1000  # a request's upload names (a project has at most this many members)
HOLDS_SECONDS = 2.0  # how long `project show` waits for each of S1 and S2
ASKING = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bm-holds")
_HELD = {True: pb.STARTED_HELD_YES, False: pb.STARTED_HELD_NO}


def answer(role: _Role, request: pb.HoldsRequest) -> pb.HoldsReply:
    """A role's `Holds`: whether it holds each named upload (a member's project upload,
    never a query's records), in the request's order."""
    names = list(request.names)
    if not 1 <= len(names) <= MAX_NAMES:
        raise errors.InvalidArgument(f"names: {len(names)}; 1 to {MAX_NAMES} upload names")
    for i, name in enumerate(names):
        parts = name.split("/")
        if len(parts) != 3 or not all(parts) or QUERY_MARK in name:
            raise errors.InvalidArgument(
                f"names[{i}]: {name[:80]!r} is not an upload's name (project/member/tag)"
            )
    with role.lock:
        return pb.HoldsReply(held=[name in role.held for name in names])


@contextmanager
def role_stub(
    address: str, who: str, credentials: grpc.ChannelCredentials | None,
    kept: grpc.Channel | None = None,
) -> Iterator[Any]:  # fmt: skip
    """`who`'s (S1's or S2's) stub over the `kept` channel (left open), or over a channel of
    its own, closed after."""
    channel = kept or (
        grpc.insecure_channel(address, options=channel_options())
        if credentials is None
        else grpc.secure_channel(address, credentials, options=channel_options())
    )
    try:
        yield (pb_grpc.TwoServerBlockingStub if who == "S1" else pb_grpc.TwoServerSharesStub)(
            channel
        )
    finally:
        if kept is None:
            channel.close()


def holds_at(
    address: str,
    who: str,
    key: str,
    credentials: grpc.ChannelCredentials | None,
    names: list[str],
    kept: grpc.Channel | None = None,
) -> tuple[list[bool] | None, str]:
    """`who`'s (S1's or S2's) answer for `names` over the `kept` channel (None: one of its
    own); never raises: (None, why) where it cannot be reached in time or refuses."""
    try:
        with role_stub(address, who, credentials, kept) as stub:
            reply = stub.Holds(pb.HoldsRequest(names=names), timeout=HOLDS_SECONDS,
                               metadata=(("authorization", f"Bearer {key}"),))  # fmt: skip
    except grpc.RpcError as exc:
        return None, str(peer_error(f"{who} ({address})", exc))
    if len(reply.held) != len(names):
        return None, f"{who} ({address}) answered for {len(reply.held)} of {len(names)}"
    return list(reply.held), ""


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


__all__ = ["HOLDS_SECONDS", "MAX_NAMES", "answer", "holds_at", "role_stub", "where_started"]
