"""C's side of a query compared whole against a standing partner over gRPC
(rpc/twoserver_standing.py is S1's and S2's): `prepare_standing`, a query part's deal against
a partner converted (C's conversions: rpc/twoserver_conversions.py `Conversions`), and the
conversions' deals: `start`, a conversion's piece 0 (a query's, or one naming the partner
alone: rpc/twoserver_standahead.py), `background`, its later pieces on a thread of their own,
and `give_up` (rpc/twoserver_standgive.py) for one that fails or that C stops. The rules:
rpc/twoserver_standing.py; the wire: docs/protocol.md "A query against a standing partner over
gRPC".
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from blindmatch.matcher import errors
from blindmatch.matcher.core import densemargin, linkbit, ring64, standing
from blindmatch.matcher.core import standingquery as sq
from blindmatch.matcher.core.margincircuit import Plan
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc.twoserver_blocks import cut, largest_batch
from blindmatch.matcher.rpc.twoserver_conversions import (
    CLOSE_SECONDS,
    HELD,
    MOST_PARTNERS,
    PAUSE_SECONDS,
    RECENT_SECONDS,
    STOPPING,
    Cancelled,
    Conversions,
    Key,
)
from blindmatch.matcher.rpc.twoserver_peers import CALL_SECONDS, call_party, wire_rule
from blindmatch.matcher.rpc.twoserver_standcache import (
    STANDING_NEEDED,
    STANDING_ROOM,
    kept_bytes,
)
from blindmatch.matcher.rpc.twoserver_standgive import DROP_SECONDS, give_up
from blindmatch.protos import blindmatch_pb2 as pb

if TYPE_CHECKING:
    from blindmatch.matcher.rpc.twoserver_client import RemoteServers

log = logging.getLogger("blindmatch.matcher.twoserver")

# A knob (standbg): a partner of at most this many records is converted within the query
# that needs it (it waits: 64,000 records took 53 s wall, docs/performance.md) and goes
# standing at once, as before standbg with 100,000; by default none is: a query converts
# piece 0 only (`standing.CHUNK` records) and goes by pairs, the rest converted in the
# background, so no query waits for a conversion and partners of any size admitted go
# standing from the next query (benchmarks/twoserver_standing_rpc.py --inline-records).
INLINE_RECORDS = 0


def _deal(remote: RemoteServers, conversions: Conversions, m: pb.BlockDeal, to_s1: bytes,
          to_s2: bytes, transcript: linkbit.Transcript) -> int:  # fmt: skip
    """A standing deal told to S2 (a stream: its setup in parts), then S1, which runs its
    steps with S2; the most pairs a batch on a query's blocks may have (and `conversions`
    told S1's and S2's room for standing partners)."""
    counts = [m.ByteSize(), 0]

    def s2_parts() -> Iterator[pb.BlockDeal]:
        yield m
        for data, _ in cut(to_s2):
            counts[1] += 1
            yield pb.BlockDeal(setup=data)

    at_s2 = call_party(remote.names[1], remote._s2.PrepareBlocks, s2_parts(),
                       metadata=remote._metadata, timeout=CALL_SECONDS)  # fmt: skip
    to_s1_m = pb.BlockDeal()
    to_s1_m.CopyFrom(m)
    to_s1_m.setup = to_s1
    reply = call_party(remote.names[0], remote._s1.PrepareBlocks, to_s1_m,
                       metadata=remote._metadata, timeout=CALL_SECONDS)  # fmt: skip
    transcript.count("C", "S2", counts[0] + len(to_s2) + 8 * counts[1])
    transcript.count("C", "S1", to_s1_m.ByteSize())
    transcript.count("S1", "S2", reply.round_bytes_sent)
    transcript.count("S2", "S1", reply.round_bytes_received)
    conversions.told(reply.standing_bytes, at_s2.standing_bytes)
    return largest_batch(reply.largest_batch, at_s2.largest_batch)


def _base(remote: RemoteServers, index: int, ident: str) -> pb.BlockDeal:
    p = remote._parts[index]
    return pb.BlockDeal(
        blocks=secrets.token_hex(12), member_a=remote.members[p.member_a],
        member_b=remote.members[p.member_b], records_a=remote.records[p.member_a],
        records_b=remote.records[p.member_b], clk=p.clk, part=index, cutoffs=remote._cutoffs,
        rule=wire_rule(remote._rule), margin=True, standing=ident,
    )  # fmt: skip


def _timed(clock: dict[str, float], fn, *args):  # type: ignore[no-untyped-def]
    t0 = time.process_time()
    out = fn(*args)
    clock["C"] = clock.get("C", 0.0) + time.process_time() - t0
    return out


def _piece(remote: RemoteServers, conversions: Conversions, m: pb.BlockDeal,
           s: standing.Standing, rows: int, p: Plan, transcript: linkbit.Transcript,
           clock: dict[str, float]) -> None:  # fmt: skip
    """Piece `m.standing_piece` of a conversion (`rows` of the partner's records) dealt."""
    bits = _timed(clock, ring64.deal, standing.bits_size(rows, s.widths))
    pops = _timed(clock, densemargin.pops_deal, p, rows)
    _deal(remote, conversions, m, s.to_s1 + bits.to_s1 + pops.to_s1,
          s.to_s2 + bits.to_s2 + pops.to_s2, transcript)  # fmt: skip


def later_piece(m: pb.BlockDeal, piece: int) -> pb.BlockDeal:
    """A conversion's later piece as C sends it (S1 and S2 take it by the conversion's id,
    rpc/twoserver_standing.py `_continued`): its partner alone, no query's member or part."""
    return pb.BlockDeal(
        blocks=secrets.token_hex(12), member_b=m.member_b, records_b=m.records_b,
        cutoffs=m.cutoffs, rule=m.rule if m.HasField("rule") else None, margin=True,
        standing=m.standing, standing_piece=piece, standing_pieces=m.standing_pieces,
    )  # fmt: skip


class Started:
    """A conversion whose piece 0 is made (within the query: S1 checks it against the query's
    proposal); `rest` makes the other pieces, which need nothing of the query."""

    def __init__(self, remote: RemoteServers, first: pb.BlockDeal, s: standing.Standing,
                 p: Plan, w0: float) -> None:  # fmt: skip
        self.remote, self.first, self.s, self.p, self.w0 = remote, first, s, p, w0

    def rest(self, conversions: Conversions, transcript: linkbit.Transcript,
             clock: dict[str, float], background: bool,
             ) -> tuple[str, standing.Standing]:  # fmt: skip
        pieces = standing.chunks(self.s.records)
        for k in range(1, len(pieces)):
            if background:
                conversions.pause()
            if conversions.stopping():
                raise Cancelled(f"{STOPPING} (before piece {k} of {len(pieces)})")
            start, stop = pieces[k]
            m = later_piece(self.first, k)
            _piece(self.remote, conversions, m, self.s, stop - start, self.p, transcript, clock)
        log.info("the combiner had %s's upload converted as a standing partner (%d records) "
                 "in %.1f s (conversion %s)", self.first.member_b, self.s.records,
                 time.perf_counter() - self.w0, self.first.standing)  # fmt: skip
        return self.first.standing, self.s


def convert(remote: RemoteServers, conversions: Conversions, base: pb.BlockDeal, records: int,
            widths: Sequence[int], p: Plan, transcript: linkbit.Transcript,
            clock: dict[str, float], without_mask: bool = False) -> Started:  # fmt: skip
    """A conversion of the partner `base` names (member_b, `records` of CLKs `widths`)
    started at S1 and S2: piece 0 (of `standing.CHUNK` records, `base` with a fresh
    conversion id, saying whether S1 and S2 keep [M_B]) dealt; `Started.rest` deals the
    others. `base`: a query's part (`_base`) or the partner alone (standahead). Piece 0
    failing, the conversion is given up in the background; not dealt once the matcher's
    stop began (`Cancelled`: S1 and S2 hold nothing to give up)."""
    w0 = time.perf_counter()
    s = _timed(clock, standing.deal, records, tuple(widths))
    m = pb.BlockDeal()
    m.CopyFrom(base)
    m.blocks, m.standing = secrets.token_hex(12), secrets.token_hex(12)
    m.standing_piece, m.standing_pieces = 0, len(standing.chunks(records))
    m.standing_without_mask = without_mask
    start, stop = standing.chunks(records)[0]
    if conversions.stopping():  # (admitted before the stop: it may have waited since)
        raise Cancelled(f"{STOPPING} (before piece 0 of {m.standing_pieces})")
    try:
        _piece(remote, conversions, m, s, stop - start, p, transcript, clock)
    except Exception:
        conversions.giving_up(remote, m)
        raise
    return Started(remote, m, s, p, w0)


def _query(remote: RemoteServers, conversions: Conversions, index: int, p: Plan,
           conversion: tuple[str, standing.Standing], transcript: linkbit.Transcript,
           clock: dict[str, float]) -> tuple[str, int]:  # fmt: skip
    """The query's deal against the converted partner; its blocks' id and largest batch."""
    ident, s = conversion
    part = remote._parts[index]
    s = s.view(part.clk) if part.clk else s  # a fallback part: its CLK alone (fallstand)
    rows, widths = remote.records[part.member_a], s.widths
    bits = _timed(clock, ring64.deal, standing.bits_size(rows, widths))
    pops = _timed(clock, densemargin.pops_deal, p, rows)
    dealt = _timed(clock, sq.deal, s, rows)
    m = _base(remote, index, ident)
    m.rows_a.append(rows)
    m.rows_b.append(s.records)
    most = _deal(remote, conversions, m, bits.to_s1 + pops.to_s1 + dealt.to_s1,
                 bits.to_s2 + pops.to_s2 + dealt.to_s2, transcript)  # fmt: skip
    with conversions._lock:
        conversions.queried += 1
    return m.blocks, most


def _finish(conversions: Conversions, key: Key, size: int, started: Started,
            transcript: linkbit.Transcript, clock: dict[str, float], quiet: bool,
            failed: Callable[[str], None] | None = None) -> None:  # fmt: skip
    """The conversion's later pieces (on C's background thread, `quiet`; or within the query
    for a partner of at most INLINE_RECORDS), kept once whole; a failure in the background
    (a server restarted or dropped it, refused a piece) logged and forgotten: a later query
    starts it again. One the matcher's stop ended (`Conversions.by_stop`) is no failure:
    given up the same (while the channels are open), logged at info. `failed(why)`: told of
    either before the give-up's calls to S1 and S2 (watchunfit: a watch waiting for it goes
    at once)."""
    try:
        got = started.rest(conversions, transcript, clock, quiet)
        with conversions._lock:
            conversions.converted += 1
            conversions.seconds += time.perf_counter() - started.w0
        conversions.put(key, got, size)
    except Exception as exc:
        stopped = conversions.by_stop(started.remote, exc)
        if not stopped:
            with conversions._lock:
                conversions.failed += 1
        if failed is not None:
            failed("the matcher stopped" if stopped else f"it stopped half-made: {exc}")
        if quiet:  # (already off the query's thread)
            give_up(started.remote, started.first)
        else:
            conversions.giving_up(started.remote, started.first)
        if stopped:  # (a matcher started again converts it at its start)
            log.info("the combiner's conversion of %s's upload as a standing partner ended "
                     "with the matcher's stop: %s", key[0], exc)  # fmt: skip
        else:
            log.warning("the combiner's conversion of %s's upload as a standing partner "
                        "stopped (a later query starts it again): %s", key[0], exc)  # fmt: skip
        if not quiet:
            raise
    finally:
        conversions.end()


def background(remote: RemoteServers, conversions: Conversions, key: Key, size: int,
               started: Started, failed: Callable[[str], None] | None = None,
               ) -> None:  # fmt: skip
    """The later pieces on a thread of their own (one at a time: `Conversions.admit`), so
    the query that started it is answered by pairs meanwhile; `remote`'s channels are held
    open until it ends (`RemoteServers.keep`); `failed`: `_finish`'s."""
    remote.keep()

    def work() -> None:
        try:
            _finish(conversions, key, size, started, linkbit.Transcript(), {}, True, failed)
        finally:
            remote.let_go()

    conversions.running(threading.Thread(target=work, name=f"standing-{key[0]}", daemon=True))


def key_of(name: str, records: int, bits: Sequence[int], cutoffs: Sequence[float],
           rule: Rule) -> Key:  # fmt: skip
    """C's key of a conversion: the partner's name at S1 and S2, its records and CLK widths,
    the run's cut-offs and rule (a query's and a conversion started ahead of it the same)."""
    return (name, records, tuple(bits), tuple(cutoffs),
            (wire_rule(rule) or pb.ScoreRule()).SerializeToString())  # fmt: skip


def start(remote: RemoteServers, conversions: Conversions, key: Key, base: pb.BlockDeal,
          p: Plan, transcript: linkbit.Transcript, clock: dict[str, float],
          ) -> tuple[Started, int] | str:  # fmt: skip
    """Partner `key`'s conversion admitted (`Conversions.admit`) and its piece 0 (`base`:
    `convert`) dealt: (the conversion started, its bytes at each server), the caller then
    `_finish`es or `_background`s it; or why it was not admitted (STOPPING also where the
    matcher's stop ended it before or during piece 0: `Conversions.by_stop`, no failure).
    Where a server whose bound C did not know yet refuses [M_B] (`STANDING_ROOM`: a role
    older than `HoldsReply`'s bounds, which C asks for first, `Conversions.learn`), piece 0
    again without."""
    conversions.learn(remote)
    records = key[1]
    without = conversions.without_mask(key, records)  # (standq: C decides, S1 and S2 obey)
    size = kept_bytes(records, key[2], mask=not without)
    why = conversions.admit(key, size)
    if why:
        return why
    try:
        try:
            started = convert(remote, conversions, base, records, key[2], p, transcript, clock,
                              without)  # fmt: skip
        except errors.FailedPrecondition as exc:
            if STANDING_ROOM not in str(exc) or without:
                raise
            said = re.search(r"--standing-bytes (\d+)", str(exc))
            conversions.told(int(said.group(1)) if said else 0)
            size = kept_bytes(records, key[2], mask=False)
            started = convert(remote, conversions, base, records, key[2], p, transcript, clock,
                              True)  # fmt: skip
    except BaseException as exc:
        conversions.end()
        if isinstance(exc, Exception) and conversions.by_stop(remote, exc):
            return STOPPING
        raise
    return started, size


def _held(remote: RemoteServers, conversions: Conversions, key: Key, index: int, p: Plan,
          transcript: linkbit.Transcript, clock: dict[str, float],
          ) -> tuple[str, int] | None:  # fmt: skip
    """Part `index` dealt against `key`'s conversion where C holds it (`_query`); None where
    C holds none, or S1 or S2 no longer does (`STANDING_NEEDED`: C drops its own)."""
    got = conversions.get(key)
    if got is None:
        return None
    try:
        return _query(remote, conversions, index, p, got, transcript, clock)
    except errors.FailedPrecondition as exc:
        # (a server restarted, or dropped the conversion for room or for another of the
        # same partner)
        if STANDING_NEEDED not in str(exc):
            raise
        log.info("converting %s's upload again: %s", key[0], exc)
        conversions.drop(key, got[0])
        return None


def prepare_standing(remote: RemoteServers, conversions: Conversions, index: int, p: Plan,
                     transcript: linkbit.Transcript, clock: dict[str, float],
                     ) -> tuple[str, int] | None:  # fmt: skip
    """C: part `index` (a query's records x a partner, whole, under the rule; clk 0 or 1)
    against the partner converted once: the query's blocks' id and largest batch; or None,
    the part goes by pairs: C holds no conversion of the partner (or S1 or S2 no longer
    does), and starts one where admitted (`start`): piece 0 within this query (S1 checks it
    against the query's proposal), the rest in the background (standbg: a query never waits
    for a conversion), the next query going standing. (Most conversions start before any
    query since standahead; this is the fallback: after a drop or a refused start.) One that
    ended whole between this part's look and its admission (`HELD`) is used, not made again."""
    part = remote._parts[index]
    records = remote.records[part.member_b]
    key = key_of(remote.members[part.member_b], records, remote._bits, remote._cutoffs,
                 remote._rule)  # fmt: skip
    conversions.asking(remote)
    queried = _held(remote, conversions, key, index, p, transcript, clock)
    if queried is not None:
        return queried
    made = start(remote, conversions, key, _base(remote, index, ""), p, transcript, clock)
    if made == HELD:  # (the conversion being made as this looked ended whole since: used)
        return _held(remote, conversions, key, index, p, transcript, clock)
    if isinstance(made, str):
        log.info("%s's part goes by pairs, not converted as a standing partner: %s",
                 key[0], made)  # fmt: skip
        return None
    started, size = made
    if records > INLINE_RECORDS:
        background(remote, conversions, key, size, started)
        return None
    _finish(conversions, key, size, started, transcript, clock, False)
    got = conversions.get(key)
    assert got is not None
    return _query(remote, conversions, index, p, got, transcript, clock)


__all__ = [
    "CLOSE_SECONDS",
    "DROP_SECONDS",
    "INLINE_RECORDS",
    "MOST_PARTNERS",
    "PAUSE_SECONDS",
    "RECENT_SECONDS",
    "Conversions",
    "Key",
    "Started",
    "background",
    "convert",
    "give_up",
    "kept_bytes",
    "key_of",
    "later_piece",
    "prepare_standing",
    "start",
]
