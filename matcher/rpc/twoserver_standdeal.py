"""C's side of a query compared whole against a standing partner over gRPC (docs/protocol.md
"A query against a standing partner over gRPC"; rpc/twoserver_standing.py is S1's and S2's):
the partners it has had converted (`Conversions`: each its mask seeds, core/standing.py
`Standing`, in memory, by the partner's upload at S1 and S2, its records, CLK widths, the
run's cut-offs and rule), and `prepare_standing`, a query part's deal (the partner converted
first where C holds no conversion of it, `standing.CHUNK` records a deal). Where S1 or S2
refuses the query's deal for want of the conversion (`STANDING_NEEDED`: restarted, or it
dropped it), C drops its own and converts again, once, then deals the query again.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import TYPE_CHECKING

from blindmatch.matcher import errors
from blindmatch.matcher.core import densemargin, linkbit, ring64, standing
from blindmatch.matcher.core import standingquery as sq
from blindmatch.matcher.core.margincircuit import Plan
from blindmatch.matcher.rpc.twoserver_blocks import cut, largest_batch
from blindmatch.matcher.rpc.twoserver_peers import CALL_SECONDS, call_party, wire_rule
from blindmatch.matcher.rpc.twoserver_standcache import STANDING_NEEDED
from blindmatch.protos import blindmatch_pb2 as pb

if TYPE_CHECKING:
    from blindmatch.matcher.rpc.twoserver_client import RemoteServers

log = logging.getLogger("blindmatch.matcher.twoserver")

MOST_PARTNERS = 256  # conversions C keeps (each two 32-byte seeds and a few numbers)
Key = tuple[str, int, tuple[int, ...], tuple[float, ...], bytes]


class Conversions:
    """C's standing partners, the least recently used dropped past MOST_PARTNERS; one
    conversion of a partner at a time (a query waits for another's). `converted`: partners
    converted (tests, the benchmark); `seconds`: their wall time."""

    def __init__(self) -> None:
        self._held: OrderedDict[Key, tuple[str, standing.Standing]] = OrderedDict()
        self._lock = threading.Lock()
        self._converting: dict[Key, threading.Lock] = {}
        self.converted = 0
        self.seconds = 0.0

    def lock_of(self, key: Key) -> threading.Lock:
        with self._lock:
            return self._converting.setdefault(key, threading.Lock())

    def get(self, key: Key) -> tuple[str, standing.Standing] | None:
        with self._lock:
            got = self._held.get(key)
            if got is not None:
                self._held.move_to_end(key)
            return got

    def put(self, key: Key, conversion: tuple[str, standing.Standing]) -> None:
        with self._lock:
            self._held[key] = conversion
            while len(self._held) > MOST_PARTNERS:
                self._held.popitem(last=False)

    def drop(self, key: Key, ident: str) -> None:
        with self._lock:
            if key in self._held and self._held[key][0] == ident:
                del self._held[key]


def _deal(remote: RemoteServers, m: pb.BlockDeal, to_s1: bytes, to_s2: bytes,
          transcript: linkbit.Transcript) -> int:  # fmt: skip
    """A standing deal told to S2 (a stream: its setup in parts), then S1, which runs its
    steps with S2; the most pairs a batch on a query's blocks may have."""
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


def convert(remote: RemoteServers, index: int, p: Plan, transcript: linkbit.Transcript,
            clock: dict[str, float]) -> tuple[str, standing.Standing]:  # fmt: skip
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
        _deal(remote, m, s.to_s1 + bits.to_s1 + pops.to_s1, s.to_s2 + bits.to_s2 + pops.to_s2,
              transcript)  # fmt: skip
    log.info("the combiner had %s's upload converted as a standing partner (%d records) in "
             "%.1f s (conversion %s)", remote.members[part.member_b], records,
             time.perf_counter() - w0, ident)  # fmt: skip
    return ident, s


def _query(remote: RemoteServers, index: int, p: Plan, conversion: tuple[str, standing.Standing],
           transcript: linkbit.Transcript, clock: dict[str, float]) -> tuple[str, int]:  # fmt: skip
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
    most = _deal(remote, m, bits.to_s1 + pops.to_s1 + dealt.to_s1,
                 bits.to_s2 + pops.to_s2 + dealt.to_s2, transcript)  # fmt: skip
    return m.blocks, most


def prepare_standing(remote: RemoteServers, conversions: Conversions, index: int, p: Plan,
                     transcript: linkbit.Transcript, clock: dict[str, float],
                     ) -> tuple[str, int]:  # fmt: skip
    """C: part `index` (a query's records x a partner, whole, on clk 0 under the rule)
    against the partner converted once: converted first where C holds no conversion, and
    again where S1 or S2 no longer holds it; the query's blocks' id and largest batch."""
    part = remote._parts[index]
    key: Key = (remote.members[part.member_b], remote.records[part.member_b],
                tuple(remote._bits), tuple(remote._cutoffs),
                (wire_rule(remote._rule) or pb.ScoreRule()).SerializeToString())  # fmt: skip
    for attempt in (0, 1):
        got: tuple[str, standing.Standing] | None = None
        try:
            with conversions.lock_of(key):
                got = conversions.get(key)
                if got is None:
                    w0 = time.perf_counter()
                    got = convert(remote, index, p, transcript, clock)
                    conversions.converted += 1
                    conversions.seconds += time.perf_counter() - w0
                    conversions.put(key, got)
            return _query(remote, index, p, got, transcript, clock)
        except errors.FailedPrecondition as exc:
            # (a server restarted, or dropped the conversion for room or for another of the
            # same partner, even while it was being made)
            if STANDING_NEEDED not in str(exc) or attempt:
                raise
            log.info("converting %s's upload again: %s", key[0], exc)
            if got is not None:
                conversions.drop(key, got[0])
    raise AssertionError("unreachable")


__all__ = ["MOST_PARTNERS", "Conversions", "convert", "prepare_standing"]
