"""The look-up server: shards of the standing indexes behind a gRPC service.

`blindmatch lookup-server` runs `create_lookup_server`: it listens at once (changes the
matcher forwards are queued), reads its shards from the matcher's index.sqlite
(realtime/shards.py), then answers `Search`. Every call must carry the data dir's
look-up key (`authorization: Bearer <key>`, storage/shard_source.py); off loopback the
CLI refuses plaintext, and mutual TLS (`--client-ca`) admits only the matcher's
certificate besides.

Without a data dir (`--key-file`: the matcher's look-up key, copied; a server on another
machine) it starts empty, refuses searches (FAILED_PRECONDITION) until the matcher has
streamed its shards to it (`Load`), and answers from them after.
"""

from __future__ import annotations

import functools
import hmac
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from blindmatch.matcher import errors
from blindmatch.matcher.core.encodings import check_clk_bits
from blindmatch.matcher.core.fallback import checked_rule
from blindmatch.matcher.core.index import as_words
from blindmatch.matcher.domain import MAX_QUERY_RECORDS, REF_RE, Encoding
from blindmatch.matcher.realtime.shards import (
    ERASE_MEMBER,
    ERASE_PROJECT,
    Fence,
    ShardChange,
    Shards,
    shard_of,
)
from blindmatch.matcher.rpc.auth import bearer_token
from blindmatch.matcher.rpc.listen import EXCLUSIVE_PORT, add_port, cannot_listen
from blindmatch.matcher.rpc.status import abort, rpc_errors
from blindmatch.matcher.storage.shard_source import (
    ShardRecords,
    lookup_key,
    newer_stores,
    refuse_newer_stores,
)
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

log = logging.getLogger("blindmatch.matcher.lookupserver")

# A forwarded change carries at most the matcher's largest index change; with room.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
LOOKUP_THREADS = 16
F = TypeVar("F", bound=Callable[..., Any])


def _keyed(method: F) -> F:
    """Refuse a call without the data dir's look-up key, then map errors to statuses."""
    wrapped = rpc_errors(method)

    @functools.wraps(method)
    def call(self: LookupService, request: Any, context: Any) -> Any:
        try:  # two `authorization` entries: Unauthenticated (`bearer_token`)
            token = bearer_token(context.invocation_metadata()) or ""
        except errors.Unauthenticated as exc:
            abort(context, exc)
        if not hmac.compare_digest(token.encode(), self.key.encode()):
            abort(
                context,
                errors.Unauthenticated(
                    "a look-up server answers only its matcher (the look-up key of the data dir)"
                ),
            )
        return wrapped(self, request, context)

    return call  # type: ignore[return-value]


class LookupService(pb_grpc.LookupServerServicer):
    def __init__(self, shards: Shards, key: str) -> None:
        self.shards = shards
        self.key = key

    def _state(self) -> pb.ShardState:
        s = self.shards
        return pb.ShardState(
            shard=s.shard,
            shards=s.shards,
            ready=s.ready,
            records=s.records,
            started=s.started,
            loaded=s.loaded,
            read_after_stop=s.read_after_stop,
        )

    @_keyed
    def Search(self, request: pb.ShardSearchRequest, context: Any) -> pb.ShardSearchReply:
        if not request.project:
            raise errors.InvalidArgument("project: required")
        check_clk_bits(request.clk_bits, "clk_bits")
        clk_bytes = request.clk_bits // 8
        if not request.clks or len(request.clks) % clk_bytes:
            raise errors.InvalidArgument(
                f"clks: {len(request.clks)} bytes is not a whole, non-zero number of "
                f"{request.clk_bits}-bit CLKs"
            )
        if len(request.clks) // clk_bytes > MAX_QUERY_RECORDS:
            raise errors.InvalidArgument(f"clks: at most {MAX_QUERY_RECORDS} CLKs in one search")
        if not 0 < request.threshold <= 1:
            raise errors.InvalidArgument(f"threshold: {request.threshold} is not in (0, 1]")
        members = list(request.members)
        if len(set(members)) != len(members) or not all(members):
            raise errors.InvalidArgument("members: each named once, none empty")
        words = as_words(request.clks, request.clk_bits)
        found = self.shards.search(request.project, members, words, request.threshold)
        reply = pb.ShardSearchReply(state=self._state())
        queries, which, refs, scores = [], [], [], []
        for q, per_member in enumerate(found):
            for k, m in enumerate(members):
                for ref, score in per_member[m]:
                    queries.append(q)
                    which.append(k)
                    refs.append(ref)
                    scores.append(score)
        reply.queries.extend(queries)
        reply.members.extend(which)
        reply.refs.extend(refs)
        reply.scores.extend(scores)
        return reply

    @_keyed
    def Apply(self, request: pb.ShardChange, context: Any) -> pb.ShardState:
        self.shards.apply(_change(request), _fence(request.sent))
        return self._state()

    @_keyed
    def Reload(self, request: pb.ShardReloadRequest, context: Any) -> pb.ShardState:
        self._refuse_newer()
        self.shards.reload(after=_fence(request.after))
        log.info("the matcher asked for the shards to be read again from index.sqlite")
        return self._state()

    def _refuse_newer(self) -> None:
        """A Reload of a data dir whose store or index.sqlite a newer blindmatch wrote
        (replaced since this server started: the matcher upgraded, this server not) is
        refused, UNAVAILABLE, naming the file and both layouts: nothing is read from it. The
        shards held are kept but no search is answered from them (the matcher asks for a
        read because they miss a change), until a read asked for later succeeds."""
        if self.shards.data_dir is None:
            return  # (refused as it was: the matcher loads it)
        newer = newer_stores(self.shards.data_dir)
        if newer is None:
            return
        if self.shards.failed != str(newer):
            log.error("refused to read the shards again: %s", newer)
        self.shards.failed = str(newer)
        raise errors.Unavailable(str(newer))

    @_keyed
    def Load(self, request_iterator: Iterator[pb.ShardLoad], context: Any) -> pb.ShardState:
        after: list[Fence] = []
        indexes, thresholds = _load(
            request_iterator, self.shards.shard, self.shards.shards, after.append
        )
        self.shards.replace(indexes, thresholds, after[0] if after else None)
        return self._state()

    @_keyed
    def Describe(self, request: pb.ShardDescribeRequest, context: Any) -> pb.ShardState:
        self.shards.retry_failed()  # (the matcher asks whether a read it asked for is in)
        return self._state()


def _fence(m: pb.ShardFence) -> Fence | None:
    """A forward's place in its matcher's order (None: not given)."""
    return Fence(m.matcher, m.seq, m.epoch) if m.seq or m.epoch else None


def _load(
    parts: Iterator[pb.ShardLoad],
    shard: int,
    shards: int,
    fenced: Callable[[Fence], None],
) -> tuple[dict[tuple[str, str], ShardRecords], dict[str, float]]:
    """A load's parts, checked whole (nothing is replaced unless every part is good);
    `fenced` is told the first part's fence, if given."""
    refs: dict[tuple[str, str], list[str]] = {}
    clks: dict[tuple[str, str], list[bytes]] = {}
    encodings: dict[tuple[str, str], Encoding] = {}
    thresholds: dict[str, float] = {}
    got = said = 0
    for n, m in enumerate(parts):
        got += 1
        where = f"part {n}"
        if n == 0:
            said = m.parts  # 0: not said (an older matcher)
            if (after := _fence(m.after)) is not None:
                fenced(after)
        if (m.shard, m.shards) != (shard, shards):
            raise errors.InvalidArgument(
                f"shard/shards ({where}): {m.shard} of {m.shards}, but this server holds "
                f"shard {shard} of {shards}"
            )
        if not m.project:
            if m.member or m.refs or m.clks:
                raise errors.InvalidArgument(f"project ({where}): required with records")
            continue
        if not m.member:
            raise errors.InvalidArgument(f"member ({where}): required")
        check_clk_bits(m.clk_bits, f"clk_bits ({where})")
        if m.fallback_bits and (m.fallback_bits % 64 or m.fallback_bits >= m.clk_bits):
            raise errors.InvalidArgument(
                f"fallback_bits ({where}): a multiple of 64 below clk_bits (or 0)"
            )
        if not 0 <= m.threshold <= 1:
            raise errors.InvalidArgument(
                f"threshold ({where}): {m.threshold} is not in [0, 1] (0: not given)"
            )
        if len(m.clks) != m.clk_bits // 8 * len(m.refs):
            raise errors.InvalidArgument(
                f"clks ({where}): {len(m.clks)} bytes for {len(m.refs)} refs of "
                f"{m.clk_bits}-bit CLKs"
            )
        for ref in m.refs:
            if not REF_RE.fullmatch(ref):
                raise errors.InvalidArgument(
                    f"refs ({where}): {ref[:40]!r} is not a valid reference"
                )
            if shard_of(ref, shards) != shard:
                raise errors.InvalidArgument(
                    f"refs ({where}): {ref!r} falls in shard {shard_of(ref, shards)}, not {shard}"
                )
        key = (m.project, m.member)
        rule = checked_rule(
            m.rule.gap, m.rule.offset, m.rule.reach, m.fallback_bits, f"rule ({where})"
        )
        encoding = Encoding(m.clk_bits, b"", m.fallback_bits, rule)
        if encodings.setdefault(key, encoding) != encoding:
            raise errors.InvalidArgument(
                f"clk_bits/fallback_bits/rule ({where}): {m.member}'s index in {m.project} came "
                "with another layout in an earlier part"
            )
        if m.threshold:
            thresholds[m.project] = m.threshold
        refs.setdefault(key, []).extend(m.refs)
        clks.setdefault(key, []).append(m.clks)
    if not got:
        raise errors.InvalidArgument("a load of no parts (a load of nothing is one empty part)")
    if said and got != said:  # gRPC ends a load cut short as it ends a finished one
        raise errors.InvalidArgument(
            f"parts: the first part says {said}, but {got} came (cut short?); nothing was replaced"
        )
    indexes = {}
    for key, held in refs.items():
        if len(set(held)) != len(held):
            raise errors.InvalidArgument(
                f"refs: a ref of {key[1]}'s index in {key[0]} was sent more than once"
            )
        if held:
            indexes[key] = ShardRecords(encodings[key], held, b"".join(clks[key]))
    return indexes, thresholds


def _change(m: pb.ShardChange) -> ShardChange:
    """A forwarded change, checked whole."""
    if not m.project:
        raise errors.InvalidArgument("project: required")
    if m.erase_project:
        return ShardChange(m.project, "", erase=ERASE_PROJECT)
    if not m.member:
        raise errors.InvalidArgument("member: required")
    if m.erase_member:
        return ShardChange(m.project, m.member, erase=ERASE_MEMBER)
    check_clk_bits(m.clk_bits, "clk_bits")
    if m.fallback_bits and (m.fallback_bits % 64 or m.fallback_bits >= m.clk_bits):
        raise errors.InvalidArgument("fallback_bits: a multiple of 64 below clk_bits (or 0)")
    if not 0 <= m.threshold <= 1:
        raise errors.InvalidArgument(f"threshold: {m.threshold} is not in [0, 1] (0: not given)")
    rule = checked_rule(m.rule.gap, m.rule.offset, m.rule.reach, m.fallback_bits, "rule")
    clk_bytes = m.clk_bits // 8
    if len(m.put_clks) != clk_bytes * len(m.put_refs):
        raise errors.InvalidArgument(
            f"put_clks: {len(m.put_clks)} bytes for {len(m.put_refs)} refs of {m.clk_bits}-bit CLKs"
        )
    bad = next((r for r in [*m.put_refs, *m.remove_refs] if not REF_RE.fullmatch(r)), None)
    if bad is not None:
        raise errors.InvalidArgument(f"put_refs/remove_refs: {bad[:40]!r} is not a valid reference")
    data = np.frombuffer(m.put_clks, dtype=np.uint8)
    puts = [
        (ref, data[i * clk_bytes : (i + 1) * clk_bytes].tobytes())
        for i, ref in enumerate(m.put_refs)
    ]
    return ShardChange(
        m.project,
        m.member,
        Encoding(m.clk_bits, b"", m.fallback_bits, rule),
        m.threshold or None,
        puts,
        list(m.remove_refs),
    )


@dataclass
class RunningLookupServer:
    server: grpc.Server
    port: int
    shards: Shards

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace).wait()


def create_lookup_server(
    address: str,
    data_dir: str | Path | None,
    shard: int,
    shards: int,
    *,
    key: str | None = None,
    credentials: grpc.ServerCredentials | None = None,
    wait: bool = False,
) -> RunningLookupServer:
    """Listen on `address` (port 0: a free one), then read the shards from `data_dir` in
    the background (`wait`: before returning); forwarded changes are queued meanwhile.
    Without a data dir: `key` is the matcher's look-up key, and the server waits, empty,
    for its matcher to load it."""
    if (data_dir is None) == (key is None):
        raise ValueError("a data dir (whose look-up key is used) or a key, not both")
    if data_dir is not None:
        refuse_newer_stores(data_dir)  # (before its look-up key is made, or a port taken)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=LOOKUP_THREADS, thread_name_prefix="bm-lookup"),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            EXCLUSIVE_PORT,
        ],
    )
    # Bound before the data dir's look-up key is made: a port taken since the command line's
    # probe leaves no lookup.key behind (the service is added after, before the start).
    port = add_port(server, address, credentials)
    if not port:
        server.stop(None)
        raise cannot_listen(address)
    holder = Shards(Path(data_dir) if data_dir is not None else None, shard, shards)
    try:
        service = LookupService(holder, key if key is not None else lookup_key(data_dir or ""))
    except BaseException:
        server.stop(None)
        raise
    pb_grpc.add_LookupServerServicer_to_server(service, server)
    server.start()
    log.info("look-up server for shard %d of %d listening on port %d", shard, shards, port)
    if wait:
        holder.load()
    else:
        threading.Thread(target=holder.load, name="blindmatch-shards", daemon=True).start()
    return RunningLookupServer(server, port, holder)
