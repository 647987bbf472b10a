"""The matcher's messages to its look-up servers (rpc/lookup_client.py, rpc/lookup_load.py):
a change forwarded, a load of a server without a data dir in parts below the message size
limit, how long each call is waited for, and how a call ended."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from blindmatch.matcher.domain import Encoding
from blindmatch.matcher.realtime.shards import ERASE_MEMBER, ERASE_PROJECT, ShardChange
from blindmatch.matcher.rpc.older_peer import LOOKUP_FLEET, is_older, older_peer
from blindmatch.matcher.storage.shard_source import ShardRecords
from blindmatch.protos import blindmatch_pb2 as pb

SEARCH_SECONDS = 10.0  # a search that takes longer fails the query (DEADLINE: UNAVAILABLE)
# A forwarded change's deadline (under the writer lock): this floor, plus its size at this
# rate: far below a LAN's, and below a server's building of tables for it (a first 1,500 rows,
# 200 kB: 2.0 s wall on a loaded 2-core host), at most the 60 s every change had before (a
# server hung held every member's change that long: docs/operations.md "A hung look-up server").
FORWARD_FLOOR_SECONDS = 5.0
FORWARD_BYTES_PER_SECOND = 250_000
FORWARD_MAX_SECONDS = 60.0
RELOAD_SECONDS = 2.0  # asking a server that is behind to read its shards again
# A server that missed a search's or a Reload's deadline rests: queries do not ask it (its
# shards are searched in the matcher's own copy), and it is asked again this often, in the
# background, until it answers in time (rpc/lookup_client.py `_rest`).
BACKOFF_SECONDS = 5.0
# Streaming a server without a data dir its shards (changes queued meanwhile): a
# 250,000-record shard took 4 s (docs/scale.md), so this allows tens of millions.
LOAD_SECONDS = 600.0
# At the matcher's start, how long to wait for each look-up server to answer whether it
# holds anything yet (one not up by then is loaded at the first query that finds it empty).
START_SECONDS = 30.0
LOAD_PART_BYTES = 4 * 1024 * 1024  # one part of a load, well below MAX_MESSAGE_BYTES
MAX_REF_BYTES = 128  # domain.REF_RE: at most 128 characters, ASCII


def load_parts(
    shard: int,
    shards: int,
    indexes: dict[tuple[str, str], ShardRecords],
    thresholds: dict[str, float],
    after: pb.ShardFence | None = None,
) -> Iterator[pb.ShardLoad]:
    """A load's messages: each index's records in parts below LOAD_PART_BYTES; the first
    carries `after` (the changes forwarded that the load holds) and how many parts there
    are (the server replaces nothing from a load cut short)."""
    rows = {
        key: max(1, LOAD_PART_BYTES // (part.encoding.clk_bits // 8 + MAX_REF_BYTES))
        for key, part in indexes.items()
    }
    parts = 1 + sum(-(-len(part.refs) // rows[key]) for key, part in indexes.items())
    # (the first part is the whole of a load of nothing)
    yield pb.ShardLoad(shard=shard, shards=shards, after=after, parts=parts)
    for (project, member), part in indexes.items():
        clk_bytes = part.encoding.clk_bits // 8
        step = rows[project, member]
        for start in range(0, len(part.refs), step):
            end = min(start + step, len(part.refs))
            yield pb.ShardLoad(
                shard=shard,
                shards=shards,
                project=project,
                member=member,
                clk_bits=part.encoding.clk_bits,
                fallback_bits=part.encoding.fallback_bits,
                rule=_rule(part.encoding),
                threshold=thresholds.get(project, 0.0),
                refs=part.refs[start:end],
                clks=part.clks[start * clk_bytes : end * clk_bytes],
            )


def _rule(encoding: Encoding | None) -> pb.ScoreRule | None:
    """An index's rule over both CLKs on the wire (None: none)."""
    if encoding is None or not encoding.rule.active:
        return None
    rule = encoding.rule
    return pb.ScoreRule(gap=rule.gap, offset=rule.offset, reach=rule.reach)


def change_message(change: ShardChange, sent: pb.ShardFence | None = None) -> pb.ShardChange:
    """A change forwarded (`sent`: the matcher's n-th)."""
    encoding = change.encoding
    return pb.ShardChange(
        project=change.project,
        member=change.member,
        clk_bits=encoding.clk_bits if encoding else 0,
        fallback_bits=encoding.fallback_bits if encoding else 0,
        rule=_rule(encoding),
        threshold=change.threshold or 0.0,
        put_refs=[r for r, _ in change.puts],
        put_clks=b"".join(c for _, c in change.puts),
        remove_refs=list(change.removes),
        erase_member=change.erase == ERASE_MEMBER,
        erase_project=change.erase == ERASE_PROJECT,
        sent=sent,
    )


def deadline(message: pb.ShardChange) -> float:
    """How long a forward of `message` is waited for (FORWARD_FLOOR_SECONDS)."""
    return min(
        FORWARD_MAX_SECONDS, FORWARD_FLOOR_SECONDS + message.ByteSize() / FORWARD_BYTES_PER_SECOND
    )


def code_of(exc: grpc.RpcError) -> grpc.StatusCode | None:
    return exc.code() if hasattr(exc, "code") else None


def outcome(call: grpc.Future, rpc: str = "") -> tuple[str, grpc.StatusCode | None]:
    """Why `call` (of the method `rpc`, where given) failed, once it has ended, and its
    status ("", None: it did not)."""
    try:
        exc = call.exception()
    except grpc.FutureCancelledError:  # (its channel closed: the matcher is stopping)
        return "cancelled: the matcher is stopping", grpc.StatusCode.CANCELLED
    return ("", None) if exc is None else (reason(exc, rpc=rpc), code_of(exc))


def failure_of(call: grpc.Future, rpc: str = "") -> str:
    """Why `call` failed, once it has ended ("": it did not)."""
    return outcome(call, rpc)[0]


def reason(exc: grpc.RpcError, said: grpc.StatusCode | None = None, rpc: str = "") -> str:
    """`exc`'s detail and its status; the status left out where it is `said`, the one the
    matcher's own refusal carries (a caller is told it once). UNIMPLEMENTED, a call the
    server does not know (`rpc`, where given): that it runs an older blindmatch
    (rpc/older_peer.py)."""
    code = code_of(exc)
    if is_older(exc):  # a call the server does not know: an older blindmatch
        return older_peer("it", rpc, LOOKUP_FLEET)
    detail = exc.details() if hasattr(exc, "details") else str(exc)
    if code is not None and code == said:
        return detail
    return f"{detail} [{code.name if code else 'UNKNOWN'}]"


__all__ = [
    "BACKOFF_SECONDS",
    "FORWARD_BYTES_PER_SECOND",
    "FORWARD_FLOOR_SECONDS",
    "FORWARD_MAX_SECONDS",
    "LOAD_PART_BYTES",
    "LOAD_SECONDS",
    "MAX_REF_BYTES",
    "RELOAD_SECONDS",
    "SEARCH_SECONDS",
    "START_SECONDS",
    "change_message",
    "code_of",
    "deadline",
    "failure_of",
    "load_parts",
    "outcome",
    "reason",
]
