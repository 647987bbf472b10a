"""The matcher as the combiner of its two-server projects (`serve --two-server-s1/-s2`):
S1 and S2 reached over gRPC (rpc/twoserver_client.py `RemoteServers`), with the combiner's
key, and the members' key that signs the upload tickets (usecases/tworuns.py)."""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from blindmatch.matcher import errors
from blindmatch.matcher.domain import WATCH_WAIT_SECONDS, Rule
from blindmatch.matcher.rpc.twoserver_channel import (
    KeptChannels,
    Stopping,
    channel,
    close_unwatched,
)
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_conversions import Conversions
from blindmatch.matcher.rpc.twoserver_holds import holds_at, role_stub
from blindmatch.matcher.rpc.twoserver_keys import DIGEST
from blindmatch.matcher.rpc.twoserver_peers import peer_error
from blindmatch.matcher.rpc.twoserver_standahead import Ahead, Partner
from blindmatch.matcher.usecases.tworuns import Forgot, TwoServerSetup
from blindmatch.protos import blindmatch_pb2 as pb

REACH_SECONDS = 5.0  # how long StartRun waits for S1 and S2 to answer
# ... or, where every connection to one fails (refused: nothing listens there), this long: past
# the channels' longest reconnect back-off (twoserver_channel.py, 1 s), so a party that has
# just started listening is connected to first
FAILING_SECONDS = 2.0
FORGET_SECONDS = 5.0  # how long an erasure waits for each of S1 and S2 to drop the shares
# S2's Forget, sent while the caller's thread sends S1's (`combiner_setup`'s `forget`)
FORGETTING = ThreadPoolExecutor(max_workers=4, thread_name_prefix="bm-forget")


def not_started(who: str) -> str:
    """How a run or query refused for `who` (S1 or S2) unreachable ends: what to do (said
    nowhere before, twowalk 2026-12-07; `serve`'s start-up warning says its own)."""
    return (f"nothing was started: run again once {who} answers (is it started, and at the "
            f"matcher's --two-server-{who.lower()}?)")  # fmt: skip


def refused_key(
    caller: str,
    address: str,
    who: str,
    key: str,
    credentials: grpc.ChannelCredentials | None,
) -> str:
    """Why `who` (S1 or S2, at `address`, reached) refuses `caller`'s `key` ("" where it takes
    it, or says anything else): a call that changes nothing, on a channel of its own. The
    combiner's is `Holds` naming no upload (its bounds); S1's, at S2, an `Exchange` of no
    messages, which S2 refuses `INVALID_ARGUMENT` once the key is S1's, before any state
    and unlogged. A role's start (cli/twoparties.py) and `serve`'s ask it, so that keys that
    disagree are said before a run spends a batch's pairs on them (twowalk, 2026-12-07)."""
    c = channel(address, credentials)
    try:
        metadata = (("authorization", f"Bearer {key}"),)
        if caller == "s1":
            list(role_stub(who, c).Exchange(iter(()), metadata=metadata, timeout=REACH_SECONDS))
        else:
            role_stub(who, c).Holds(pb.HoldsRequest(), metadata=metadata, timeout=REACH_SECONDS)
    except grpc.RpcError as exc:
        if exc.code() in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            return str(peer_error(f"{who} ({address})", exc))
    finally:
        c.close()
    return ""


def reachable(
    address: str,
    who: str,
    credentials: grpc.ChannelCredentials | None,
    kept: tuple[KeptChannels, int] | None = None,
) -> None:
    """Raise Unavailable naming `who` unless a connection to `address` is made in time: on
    the `kept` channel the run will use (the set-up's channels and which: 0 S1, 1 S2; left
    open; each channel has subchannels of its own, so this is what wakes it from its
    reconnect back-off), or on a channel of its own. `Stopping` where the kept channels'
    close begins first: it waits for this to unsubscribe."""
    ready = threading.Event()
    failing: list[float] = []  # since when every attempt to connect failed

    def watch(state: grpc.ChannelConnectivity) -> None:
        if state is grpc.ChannelConnectivity.READY:
            ready.set()
        elif state is grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            failing[:] = failing or [time.monotonic()]
        else:  # trying again
            failing.clear()

    if kept is None:
        own, closing = channel(address, credentials), threading.Event()
        own.subscribe(watch, try_to_connect=True)
    elif (subscribed := kept[0].subscribe(kept[1], watch)) is None:
        raise Stopping(f"{who} ({address}): the matcher has stopped")
    else:
        own, closing = subscribed
    try:
        deadline = time.monotonic() + REACH_SECONDS
        while not ready.wait(0.05):
            now = time.monotonic()
            if closing.is_set():
                raise Stopping(f"{who} ({address}): the matcher stopped before it answered")
            if failing and now - failing[0] >= FAILING_SECONDS:
                raise errors.Unavailable(
                    f"{who} ({address}) is unreachable: a two-server run needs it (every "
                    f"connection failed for {FAILING_SECONDS:g} s: refused, reset or its TLS "
                    f"handshake failed); {not_started(who)}"
                )
            if now >= deadline:
                raise errors.Unavailable(
                    f"{who} ({address}) is unreachable: a two-server run needs it (no answer "
                    f"in {REACH_SECONDS:g} s); {not_started(who)}"
                )
    finally:
        own.unsubscribe(watch)
        if kept is None:
            close_unwatched(own)


def forget_at(
    address: str,
    who: str,
    key: str,
    project: str,
    member: str,
    kept: grpc.Channel,
) -> Forgot:
    """`who`'s (S1's or S2's, at `address`) Forget of `member`'s uploads in `project` (no
    member: every upload of the project), with the combiner's `key` over the `kept` channel
    (left open); never raises: a server that cannot be reached in time, or refuses, is a
    `Forgot` saying why (as is a `kept` channel closed: the matcher stopped)."""
    try:
        reply = role_stub(who, kept).Forget(
            pb.ForgetRequest(project=project, member=member),
            metadata=(("authorization", f"Bearer {key}"),),
            timeout=FORGET_SECONDS,
        )
        return Forgot(who, dropped=reply.dropped)
    except grpc.RpcError as exc:
        return Forgot(who, error=str(peer_error(f"{who} ({address})", exc)))
    except ValueError as exc:  # the kept channel closed: the matcher has stopped
        return Forgot(who, error=f"{who} ({address}): {exc}")


def combiner_setup(
    s1: str,
    s2: str,
    key: str,
    member_key: str,
    credentials: grpc.ChannelCredentials | None = None,
    convert_ahead: bool = True,
    watch_wait: float = WATCH_WAIT_SECONDS,
) -> TwoServerSetup:
    """The matcher's two-server set-up: `key` the combiner's (S1 and S2 admit its Propose,
    Evaluate, Prepare, Collect and Forget), `member_key` the members' key S1 and S2 were started
    with (the key itself: it signs tickets), over TLS with `credentials`; `convert_ahead` False
    (`serve --no-two-server-convert-ahead`): no partner converted ahead of its queries;
    `watch_wait`: the longest a watch's comparison waits for such a conversion
    (`serve --two-server-watch-wait-seconds`; 0: it never does)."""
    if not s1 or not s2 or s1 == s2:
        raise ValueError("S1 and S2: two addresses")
    if not key or key.startswith(DIGEST) or not member_key or member_key.startswith(DIGEST):
        raise ValueError("the combiner's key and the members' key: the keys, not digests")
    if key == member_key:
        raise ValueError("the combiner's key and the members' key: two different keys")
    if not 0 <= watch_wait < math.inf:
        raise ValueError(f"a watch's wait: {watch_wait}: 0 or more seconds")

    # One channel to each of S1 and S2 for the matcher's life, shared by its runs' and
    # queries' calls (gRPC channels multiplex concurrent calls, and reconnect themselves):
    # a query then pays no connection set-up (docs/realtime.md "Queries in a two-server
    # project"). Closed as the matcher stops (`disconnect`: a reachability check, `serve`'s
    # at its start included, stops and is waited for), opened again by a matcher started
    # again on this set-up (`connect`; both from realtime/engine.py `Realtime`).
    kept = KeptChannels(s1, s2, credentials)

    # The partners converted once for queries compared whole against them (their seeds:
    # rpc/twoserver_standdeal.py), for the matcher's life; not kept across a restart. The
    # matcher's stop (`close`) stops them; they stay the set-up's until a matcher is started
    # again on it (`connect`), which holds none, as after a restart. (Replaced at the stop,
    # a query or watch the stop had not ended yet, or a conversion queued meanwhile, would
    # have been admitted on new ones no stop waits for, and a conversion ending during the
    # stop counted where no one looks.)
    conversions = [Conversions()]

    def servers(names: list[str], records: list[int], bits: list[int]) -> RemoteServers:
        out = RemoteServers(s1, s2, key, names, records, bits, credentials, kept=kept)
        out.conversions = conversions[0]
        return out

    # Partners converted ahead of their queries (standahead), one at a time with the queries'.
    ahead = Ahead(servers, lambda: conversions[0], on=convert_ahead)

    def queue_ahead(name: str, records: int, bits: tuple[int, ...], threshold: float,
                    rule: Rule) -> None:  # fmt: skip
        ahead.convert(Partner(name, records, bits, threshold, rule))

    def close() -> None:
        ahead.close()
        conversions[0].close()

    def connect() -> None:
        kept.open()
        if conversions[0].stopping():  # (a matcher started again on this set-up)
            conversions[0] = Conversions()

    def check() -> None:
        reachable(s1, "S1", credentials, (kept, 0))
        reachable(s2, "S2", credentials, (kept, 1))

    def forget_one(who: str, project: str, member: str) -> Forgot:
        address, c = (s1, kept.pair()[0]) if who == "S1" else (s2, kept.pair()[1])
        return forget_at(address, who, key, project, member, c)

    def forget(project: str, member: str) -> list[Forgot]:
        """S1's and S2's Forget at once: one that does not answer in time delays the other's
        by nothing (an erasure waits FORGET_SECONDS at most, not twice that)."""
        to_s2 = FORGETTING.submit(forget_one, "S2", project, member)
        return [forget_one("S1", project, member), to_s2.result()]

    def holds(who: str, names: list[str]) -> tuple[list[bool] | None, str]:
        address, c = (s1, kept.pair()[0]) if who == "S1" else (s2, kept.pair()[1])
        return holds_at(address, who, key, names, c)

    return TwoServerSetup(s1, s2, member_key, servers, check, forget, forget_one, holds, close,
                          queue_ahead, converts_ahead=convert_ahead, disconnect=kept.close,
                          connect=connect, when_converted=ahead.when_made,
                          watch_wait=watch_wait)  # fmt: skip


__all__ = ["Stopping", "combiner_setup", "forget_at", "not_started", "reachable", "refused_key"]
