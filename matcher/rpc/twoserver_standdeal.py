"""C's side of a query compared whole against a standing partner over gRPC (docs/protocol.md
"A query against a standing partner over gRPC"; rpc/twoserver_standing.py is S1's and S2's):
the partners it has had converted (`Conversions`: each its mask seeds, core/standing.py
`Standing`, in memory, by the partner's upload at S1 and S2, its records, CLK widths, the
run's cut-offs and rule), and `prepare_standing`, a query part's deal (the partner converted
first where C holds no conversion of it, `standing.CHUNK` records a deal). Where S1 or S2
refuses the query's deal for want of the conversion (`STANDING_NEEDED`: restarted, or it
dropped it), C drops its own and converts again, once, then deals the query again.
C converts only what S1's and S2's room holds (`Conversions.admit`: beside the conversions
used within RECENT_SECONDS, a partner of at most INLINE_RECORDS, one conversion at a time);
a part not admitted goes by pairs, so no query pushes out a conversion the next needs.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from blindmatch.matcher import errors
from blindmatch.matcher.core import densemargin, linkbit, ring64, standing
from blindmatch.matcher.core import standingquery as sq
from blindmatch.matcher.core.margincircuit import Plan
from blindmatch.matcher.rpc.twoserver_blocks import cut, largest_batch
from blindmatch.matcher.rpc.twoserver_peers import CALL_SECONDS, call_party, wire_rule
from blindmatch.matcher.rpc.twoserver_standcache import MOST_BYTES, STANDING_NEEDED
from blindmatch.protos import blindmatch_pb2 as pb

if TYPE_CHECKING:
    from blindmatch.matcher.rpc.twoserver_client import RemoteServers

log = logging.getLogger("blindmatch.matcher.twoserver")

MOST_PARTNERS = 256  # conversions C keeps (each two 32-byte seeds and a few numbers)
# Admission (docs/operations.md "Standing partners: sizing --standing-bytes"): a conversion
# used by a query within this long is never pushed out of S1's and S2's room for another
# partner's. A query is compared against every partner of its project, so where the partners'
# conversions do not all fit, converting one more would drop one the next query needs, and
# every query would pay whole conversions (minutes each) forever; instead the partner that
# does not fit goes by pairs (same answers, ~2x the CPU a pair) and the conversions held stay.
# A partner unqueried for an hour yields its room (its conversion cost ~600 us of CPU a
# record and pays for itself after ~55 queries, so one that idle was earning little).
RECENT_SECONDS = 3600.0
# And a query converts inline (it waits for it) only a partner of at most this many records:
# 64,000 took 53 s wall (docs/performance.md "A query against a standing partner over gRPC"),
# ~0.83 ms a record, so 100,000 about 83 s, under a third of the client's 300 s query timeout
# (client/remote/twoserver_realtime.py QUERY_SECONDS) with room for a loaded host and the
# query itself; a larger partner goes by pairs (320,000 records: ~7 s of CPU a query).
INLINE_RECORDS = 100_000
Key = tuple[str, int, tuple[int, ...], tuple[float, ...], bytes]


def kept_bytes(records: int, widths: tuple[int, ...]) -> int:
    """What S1 and S2 each keep of a partner converted (core/standing.py `Partner.bytes_kept`:
    D_B 2 bytes and [M_B] 4 a bit, 16 bytes of popcounts a record a CLK, its 32-byte seed)."""
    return records * sum(6 * w + 16 for w in widths) + 32


class Conversions:
    """C's standing partners, the least recently used dropped past MOST_PARTNERS; one
    conversion at a time (a query needing another goes by pairs rather than wait), admitted
    only where it fits S1's and S2's room (`budget`, the least they said) beside the
    conversions used within RECENT_SECONDS. `converted`: partners converted (tests, the
    benchmark); `seconds`: their wall time; `declined`: parts sent by pairs for want of room,
    size or because another conversion was being made."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: OrderedDict[Key, tuple[str, standing.Standing]] = OrderedDict()
        self._bytes: dict[Key, int] = {}
        self._used: dict[Key, float] = {}
        self._lock = threading.Lock()
        self._busy = threading.Lock()  # held while a conversion is made
        self.budget: int | None = None  # the least of S1's and S2's `standing_bytes`
        self.converted = 0
        self.seconds = 0.0
        self.declined = 0

    def get(self, key: Key) -> tuple[str, standing.Standing] | None:
        with self._lock:
            got = self._held.get(key)
            if got is not None:
                self._held.move_to_end(key)
                self._used[key] = self.clock()
            return got

    def told(self, *said: int) -> None:
        """S1's and S2's bounds from their replies (0: a role older than the field: 4 GiB)."""
        with self._lock:
            for n in said:
                n = n or MOST_BYTES
                self.budget = n if self.budget is None else min(self.budget, n)

    def admit(self, key: Key, records: int, size: int) -> str:
        """Start converting `key` (of `size` bytes at each server): "" where admitted (the
        caller then `put`s or `end`s), else why not (the part goes by pairs). Admitted, C
        forgets the conversions the servers drop for it (least recently used, none used
        within RECENT_SECONDS)."""
        why = self._admit(key, records, size)
        if why:
            with self._lock:
                self.declined += 1
        return why

    def _admit(self, key: Key, records: int, size: int) -> str:
        if records > INLINE_RECORDS:
            return f"{records:,} records, over {INLINE_RECORDS:,} to convert within a query"
        if not self._busy.acquire(blocking=False):
            return "another partner's conversion is being made"
        with self._lock:
            now, budget = self.clock(), self.budget or MOST_BYTES
            others = [k for k in self._held if k != key]
            recent = sum(self._bytes[k] for k in others if now - self._used[k] <= RECENT_SECONDS)
            if recent and recent + size > budget:
                self._busy.release()
                return (f"its {size:,} bytes do not fit beside the {recent:,} of partners "
                        f"used within {RECENT_SECONDS:.0f} s (room: {budget:,})")  # fmt: skip
            for k in others:  # least recently used first, as S1 and S2 drop them
                if sum(self._bytes[j] for j in self._held if j != key) + size <= budget:
                    break
                self._forget(k)
        return ""

    def put(self, key: Key, conversion: tuple[str, standing.Standing], size: int) -> None:
        with self._lock:
            self._held[key], self._bytes[key], self._used[key] = conversion, size, self.clock()
            self._held.move_to_end(key)
            while len(self._held) > MOST_PARTNERS:
                self._forget(next(iter(self._held)))

    def end(self) -> None:
        """The conversion `admit` started, made or failed."""
        self._busy.release()

    def _forget(self, key: Key) -> None:
        del self._held[key], self._bytes[key], self._used[key]

    def drop(self, key: Key, ident: str) -> None:
        with self._lock:
            if key in self._held and self._held[key][0] == ident:
                self._forget(key)


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


def convert(remote: RemoteServers, conversions: Conversions, index: int, p: Plan,
            transcript: linkbit.Transcript, clock: dict[str, float],
            ) -> tuple[str, standing.Standing]:  # fmt: skip
    """Part `index`'s partner (member_b) converted at S1 and S2, a piece a deal: C's id of
    the conversion and its seeds."""
    part = remote._parts[index]
    records, widths = remote.records[part.member_b], tuple(remote._bits)
    s = _timed(clock, standing.deal, records, widths)
    ident, pieces = secrets.token_hex(12), standing.chunks(records)
    w0 = time.perf_counter()
    for k, (start, stop) in enumerate(pieces):
        rows = stop - start
        bits = _timed(clock, ring64.deal, ring64.Size(rows * sum(widths), 0))
        pops = _timed(clock, densemargin.pops_deal, p, rows)
        m = _base(remote, index, ident)
        m.standing_piece, m.standing_pieces = k, len(pieces)
        _deal(remote, conversions, m, s.to_s1 + bits.to_s1 + pops.to_s1,
              s.to_s2 + bits.to_s2 + pops.to_s2, transcript)  # fmt: skip
    log.info("the combiner had %s's upload converted as a standing partner (%d records) in "
             "%.1f s (conversion %s)", remote.members[part.member_b], records,
             time.perf_counter() - w0, ident)  # fmt: skip
    return ident, s


def _query(remote: RemoteServers, conversions: Conversions, index: int, p: Plan,
           conversion: tuple[str, standing.Standing], transcript: linkbit.Transcript,
           clock: dict[str, float]) -> tuple[str, int]:  # fmt: skip
    """The query's deal against the converted partner; its blocks' id and largest batch."""
    ident, s = conversion
    part = remote._parts[index]
    rows, widths = remote.records[part.member_a], s.widths
    bits = _timed(clock, ring64.deal, ring64.Size(rows * sum(widths), 0))
    pops = _timed(clock, densemargin.pops_deal, p, rows)
    dealt = _timed(clock, sq.deal, s, rows)
    m = _base(remote, index, ident)
    m.rows_a.append(rows)
    m.rows_b.append(s.records)
    most = _deal(remote, conversions, m, bits.to_s1 + pops.to_s1 + dealt.to_s1,
                 bits.to_s2 + pops.to_s2 + dealt.to_s2, transcript)  # fmt: skip
    return m.blocks, most


def prepare_standing(remote: RemoteServers, conversions: Conversions, index: int, p: Plan,
                     transcript: linkbit.Transcript, clock: dict[str, float],
                     ) -> tuple[str, int] | None:  # fmt: skip
    """C: part `index` (a query's records x a partner, whole, on clk 0 under the rule)
    against the partner converted once: converted first where C holds no conversion and one
    is admitted (`Conversions.admit`), and again where S1 or S2 no longer holds it; the
    query's blocks' id and largest batch, or None: the part goes by pairs (not admitted)."""
    part = remote._parts[index]
    records = remote.records[part.member_b]
    key: Key = (remote.members[part.member_b], records, tuple(remote._bits),
                tuple(remote._cutoffs),
                (wire_rule(remote._rule) or pb.ScoreRule()).SerializeToString())  # fmt: skip
    for attempt in (0, 1):
        got = conversions.get(key)
        if got is None:
            size = kept_bytes(records, key[2])
            why = conversions.admit(key, records, size)
            if why:
                log.info("%s's part goes by pairs, not converted as a standing partner: %s",
                         key[0], why)  # fmt: skip
                return None
            try:
                w0 = time.perf_counter()
                got = convert(remote, conversions, index, p, transcript, clock)
                conversions.converted += 1
                conversions.seconds += time.perf_counter() - w0
                conversions.put(key, got, size)
            finally:
                conversions.end()
        try:
            return _query(remote, conversions, index, p, got, transcript, clock)
        except errors.FailedPrecondition as exc:
            # (a server restarted, or dropped the conversion for room or for another of the
            # same partner, even while it was being made)
            if STANDING_NEEDED not in str(exc) or attempt:
                raise
            log.info("converting %s's upload again: %s", key[0], exc)
            conversions.drop(key, got[0])
    raise AssertionError("unreachable")


__all__ = [
    "INLINE_RECORDS",
    "MOST_PARTNERS",
    "RECENT_SECONDS",
    "Conversions",
    "convert",
    "kept_bytes",
    "prepare_standing",
]
