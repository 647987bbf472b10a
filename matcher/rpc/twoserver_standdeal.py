"""C's side of a query compared whole against a standing partner over gRPC (docs/protocol.md
"A query against a standing partner over gRPC"; rpc/twoserver_standing.py is S1's and S2's):
the partners it has had converted (`Conversions`: each its mask seeds, core/standing.py
`Standing`, in memory, by the partner's upload at S1 and S2, its records, CLK widths, the
run's cut-offs and rule), and `prepare_standing`, a query part's deal against a partner
converted (`standing.CHUNK` records a deal). Where S1 or S2 refuses the query's deal for want
of the conversion (`STANDING_NEEDED`: restarted, or it dropped it), C drops its own, the
part goes by pairs and C starts converting the partner again.
C converts only what S1's and S2's room holds (`Conversions.admit`: beside the conversions
used within RECENT_SECONDS, one conversion at a time); a part not admitted goes by pairs, so
no query pushes out a conversion the next needs. A query never waits for a conversion
(standbg): it deals piece 0 (S1 checks it against the query's proposal) and goes by pairs,
and C deals the later pieces on a background thread (S1 and S2 take them by the
conversion's id), the next query going standing. A conversion that fails, or that C stops
(the matcher stopping: `Conversions.close`), is given up at S1 and S2 (`give_up`, their
`standing_drop`), so neither keeps its half-made arrays (standfix2); off the query's thread
(standq). C decides whether S1 and S2 keep a partner with [M_B], for all its partners
together (`Conversions.without_mask`), and says so in piece 0 (standq).
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from blindmatch.matcher import errors
from blindmatch.matcher.core import densemargin, linkbit, ring64, standing
from blindmatch.matcher.core import standingquery as sq
from blindmatch.matcher.core.margincircuit import Plan
from blindmatch.matcher.rpc.twoserver_blocks import cut, largest_batch
from blindmatch.matcher.rpc.twoserver_peers import CALL_SECONDS, call_party, wire_rule
from blindmatch.matcher.rpc.twoserver_standcache import (
    MOST_BYTES,
    STANDING_NEEDED,
    STANDING_ROOM,
    keeps_mask,
    kept_bytes,
)
from blindmatch.matcher.rpc.twoserver_standgive import DROP_SECONDS, GivingUp, give_up
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
# A knob (standbg): a partner of at most this many records is converted within the query
# that needs it (it waits: 64,000 records took 53 s wall, docs/performance.md) and goes
# standing at once, as before standbg with 100,000; by default none is: a query converts
# piece 0 only (`standing.CHUNK` records) and goes by pairs, the rest converted in the
# background, so no query waits for a conversion and partners of any size admitted go
# standing from the next query (benchmarks/twoserver_standing_rpc.py --inline-records).
INLINE_RECORDS = 0
# A background conversion's next piece waits while a query dealing standing parts is being
# answered (its S1, S2 and C CPU the query's), but no longer than this: under a steady stream
# of queries the conversion still goes on.
PAUSE_SECONDS = 60.0
# The most the matcher's stop waits for its background conversion to stop (`Conversions.close`:
# the piece in flight, then S1's and S2's `standing_drop`, rpc/twoserver_standgive.py's).
CLOSE_SECONDS = 30.0
Key = tuple[str, int, tuple[int, ...], tuple[float, ...], bytes]


class Conversions:
    """C's standing partners, the least recently used dropped past MOST_PARTNERS; one
    conversion at a time (a query needing another goes by pairs rather than wait), admitted
    only where it fits S1's and S2's room (`budget`, the least they said) beside the
    conversions used within RECENT_SECONDS. `converted`: partners converted (tests, the
    benchmark); `seconds`: their wall time; `declined`: parts sent by pairs for want of room
    or because another conversion was being made; `queried`: parts dealt standing;
    `failed`: background conversions that stopped (redone by a later query), each given up
    at S1 and S2; `paused`: later pieces that waited for a query being answered."""

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
        self.queried = 0
        self.failed = 0
        self.paused = 0
        self._closing = threading.Event()  # `close`: no more conversions
        self._quiet = threading.Event()  # no conversion being made (`idle`, `close`)
        self._quiet.set()
        self._asking: weakref.WeakSet[RemoteServers] = weakref.WeakSet()  # `pause`
        self._answered = threading.Condition()
        self._giving = GivingUp()  # `giving_up`'s threads

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

    def room(self) -> int:
        """The least of S1's and S2's bounds said so far (`MOST_BYTES` before any)."""
        return self.budget or MOST_BYTES

    def without_mask(self, key: Key, records: int) -> bool:
        """Whether `key`'s partner is converted without [M_B] (standq: C decides for all its
        partners together, and tells S1 and S2, `BlockDeal.standing_without_mask`): with it
        only where it fits beside every other partner converted, so that later partners go
        without it rather than by pairs; where it fits beside them in neither form (`admit`
        forgets idle ones), beside those used within RECENT_SECONDS."""
        with self._lock:
            now, others = self.clock(), [k for k in self._held if k[0] != key[0]]
            every = sum(self._bytes[k] for k in others)
            if every + kept_bytes(records, key[2], mask=False) > self.room():
                every = sum(self._bytes[k] for k in others if now - self._used[k] <= RECENT_SECONDS)
            return not keeps_mask(records, key[2], self.room() - every)

    def giving_up(self, remote: RemoteServers, m: pb.BlockDeal) -> None:
        """`give_up` off the query's thread (standq: a query whose piece 0 failed returns
        its error at once, not DROP_SECONDS twice later); `close` waits for it."""
        self._giving.start(remote, m.standing, lambda: give_up(remote, m))

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
        if not self._busy.acquire(blocking=False):
            return "another partner's conversion is being made"
        self._quiet.clear()  # (before the check: `close` waits for one admitted as it began)
        if self._closing.is_set():
            self.end()
            return "the matcher is stopping"
        with self._lock:
            now, budget = self.clock(), self.room()
            # (the partner's own other conversions, of an earlier upload or other terms, are
            # not counted: S1 and S2 drop them when this one's piece 0 comes)
            others = [k for k in self._held if k[0] != key[0]]
            recent = sum(self._bytes[k] for k in others if now - self._used[k] <= RECENT_SECONDS)
            if recent and recent + size > budget:
                self.end()
                return (f"its {size:,} bytes do not fit beside the {recent:,} of partners "
                        f"used within {RECENT_SECONDS:.0f} s (room: {budget:,})")  # fmt: skip
            for k in [k for k in self._held if k[0] == key[0] and k != key]:
                self._forget(k)
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
        self._quiet.set()

    def running(self, thread: threading.Thread) -> None:
        """Start `thread`, the admitted conversion's later pieces (it calls `end`)."""
        thread.start()

    def asking(self, remote: RemoteServers) -> None:
        """`remote`'s query deals standing parts (a background conversion pauses for it)."""
        with self._answered:
            self._asking.add(remote)

    def answered(self) -> None:
        """A query's servers closed (`RemoteServers.close`): a paused conversion looks again."""
        with self._answered:
            self._answered.notify_all()

    def pause(self) -> None:
        """Before a background conversion's piece: wait while a query dealing standing parts
        is being answered, PAUSE_SECONDS at most (or until `close`)."""
        with self._answered:
            if self._ready():
                return
            self.paused += 1
            self._answered.wait_for(self._ready, PAUSE_SECONDS)

    def _ready(self) -> bool:
        return self._closing.is_set() or all(r.closed for r in self._asking)

    def stopping(self) -> bool:
        return self._closing.is_set()

    def close(self, timeout: float = CLOSE_SECONDS) -> bool:
        """The matcher stops: no conversion is started from now on, and the one in the
        background stops before its next piece (not waiting out a pause), given up at S1 and
        S2; this waits for it `timeout` seconds at most (a piece in flight). Whether it
        ended (if not, S1 and S2 drop it STALE_SECONDS after its last piece)."""
        self._closing.set()
        with self._answered:
            self._answered.notify_all()
        end = time.monotonic() + timeout
        return self._quiet.wait(timeout) & self._giving.join(end)

    def idle(self, timeout: float) -> bool:
        """Wait until no conversion is being made (tests, the benchmark; never a query):
        True, or False where `timeout` seconds passed first."""
        return self._quiet.wait(timeout)

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


def _piece(remote: RemoteServers, conversions: Conversions, m: pb.BlockDeal,
           s: standing.Standing, rows: int, p: Plan, transcript: linkbit.Transcript,
           clock: dict[str, float]) -> None:  # fmt: skip
    """Piece `m.standing_piece` of a conversion (`rows` of the partner's records) dealt."""
    bits = _timed(clock, ring64.deal, ring64.Size(rows * sum(s.widths), 0))
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
                raise errors.Unavailable(f"the matcher is stopping (at piece {k} of {len(pieces)})")
            start, stop = pieces[k]
            m = later_piece(self.first, k)
            _piece(self.remote, conversions, m, self.s, stop - start, self.p, transcript, clock)
        log.info("the combiner had %s's upload converted as a standing partner (%d records) "
                 "in %.1f s (conversion %s)", self.first.member_b, self.s.records,
                 time.perf_counter() - self.w0, self.first.standing)  # fmt: skip
        return self.first.standing, self.s


def convert(remote: RemoteServers, conversions: Conversions, index: int, p: Plan,
            transcript: linkbit.Transcript, clock: dict[str, float],
            without_mask: bool = False) -> Started:  # fmt: skip
    """Part `index`'s partner (member_b): its conversion at S1 and S2 started, piece 0 (of
    `standing.CHUNK` records, saying whether S1 and S2 keep [M_B]) dealt; `Started.rest`
    deals the others. Piece 0 failing, the conversion is given up in the background."""
    part = remote._parts[index]
    records, widths = remote.records[part.member_b], tuple(remote._bits)
    w0 = time.perf_counter()
    s = _timed(clock, standing.deal, records, widths)
    m = _base(remote, index, secrets.token_hex(12))
    m.standing_piece, m.standing_pieces = 0, len(standing.chunks(records))
    m.standing_without_mask = without_mask
    start, stop = standing.chunks(records)[0]
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
    bits = _timed(clock, ring64.deal, ring64.Size(rows * sum(widths), 0))
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
            ) -> None:  # fmt: skip
    """The conversion's later pieces (on C's background thread, `quiet`; or within the query
    for a partner of at most INLINE_RECORDS), kept once whole; a failure in the background
    (a server restarted or dropped it, refused a piece) logged and forgotten: a later query
    starts it again."""
    try:
        got = started.rest(conversions, transcript, clock, quiet)
        with conversions._lock:
            conversions.converted += 1
            conversions.seconds += time.perf_counter() - started.w0
        conversions.put(key, got, size)
    except Exception as exc:
        with conversions._lock:
            conversions.failed += 1
        if quiet:  # (already off the query's thread)
            give_up(started.remote, started.first)
        else:
            conversions.giving_up(started.remote, started.first)
        log.warning("the combiner's conversion of %s's upload as a standing partner stopped "
                    "(a later query starts it again): %s", key[0], exc)  # fmt: skip
        if not quiet:
            raise
    finally:
        conversions.end()


def _background(remote: RemoteServers, conversions: Conversions, key: Key, size: int,
                started: Started) -> None:  # fmt: skip
    """The later pieces on a thread of their own (one at a time: `Conversions.admit`), so
    the query that started it is answered by pairs meanwhile; `remote`'s channels are held
    open until it ends (`RemoteServers.keep`)."""
    remote.keep()

    def work() -> None:
        try:
            _finish(conversions, key, size, started, linkbit.Transcript(), {}, True)
        finally:
            remote.let_go()

    conversions.running(threading.Thread(target=work, name=f"standing-{key[0]}", daemon=True))


def prepare_standing(remote: RemoteServers, conversions: Conversions, index: int, p: Plan,
                     transcript: linkbit.Transcript, clock: dict[str, float],
                     ) -> tuple[str, int] | None:  # fmt: skip
    """C: part `index` (a query's records x a partner, whole, under the rule; clk 0 or 1)
    against the partner converted once: the query's blocks' id and largest batch; or None,
    the part goes by pairs: C holds no conversion of the partner (or S1 or S2 no longer
    does), and starts one where admitted (`Conversions.admit`): piece 0 within this query
    (S1 checks it against the query's proposal), the rest in the background (standbg: a
    query never waits for a conversion), the next query going standing."""
    part = remote._parts[index]
    records = remote.records[part.member_b]
    key: Key = (remote.members[part.member_b], records, tuple(remote._bits),
                tuple(remote._cutoffs),
                (wire_rule(remote._rule) or pb.ScoreRule()).SerializeToString())  # fmt: skip
    conversions.asking(remote)
    got = conversions.get(key)
    if got is not None:
        try:
            return _query(remote, conversions, index, p, got, transcript, clock)
        except errors.FailedPrecondition as exc:
            # (a server restarted, or dropped the conversion for room or for another of the
            # same partner)
            if STANDING_NEEDED not in str(exc):
                raise
            log.info("converting %s's upload again: %s", key[0], exc)
            conversions.drop(key, got[0])
    without = conversions.without_mask(key, records)  # (standq: C decides, S1 and S2 obey)
    size = kept_bytes(records, key[2], mask=not without)
    why = conversions.admit(key, records, size)
    if why:
        log.info("%s's part goes by pairs, not converted as a standing partner: %s",
                 key[0], why)  # fmt: skip
        return None
    try:
        try:
            started = convert(remote, conversions, index, p, transcript, clock, without)
        except errors.FailedPrecondition as exc:
            if STANDING_ROOM not in str(exc) or without:
                raise
            # (a server whose bound C did not know yet refused [M_B]: piece 0 again without)
            said = re.search(r"--standing-bytes (\d+)", str(exc))
            conversions.told(int(said.group(1)) if said else 0)
            without, size = True, kept_bytes(records, key[2], mask=False)
            started = convert(remote, conversions, index, p, transcript, clock, True)
    except BaseException:
        conversions.end()
        raise
    if records > INLINE_RECORDS:
        _background(remote, conversions, key, size, started)
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
    "Started",
    "convert",
    "give_up",
    "kept_bytes",
    "later_piece",
    "prepare_standing",
]
