"""C's standing partners over gRPC (rpc/twoserver_standdeal.py deals them): `Conversions`, the
partners C has had converted at S1 and S2 (each its mask seeds, core/standing.py `Standing`,
in memory, by the partner's upload at S1 and S2, its records, CLK widths, the run's cut-offs
and rule), their admission within S1's and S2's room (`admit`, `learn`, `unfit`), whether
each is kept with [M_B] (`without_mask`), and the background conversion's pauses and stop
(`pause`, `close`). The rules: rpc/twoserver_standing.py.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from blindmatch.matcher import errors
from blindmatch.matcher.core import standing
from blindmatch.matcher.rpc.twoserver_holds import bounds
from blindmatch.matcher.rpc.twoserver_standcache import MOST_BYTES, keeps_mask, kept_bytes
from blindmatch.matcher.rpc.twoserver_standgive import GivingUp, give_up
from blindmatch.protos import blindmatch_pb2 as pb

if TYPE_CHECKING:
    from blindmatch.matcher.rpc.twoserver_client import RemoteServers

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
# A background conversion's next piece waits while a query dealing standing parts is being
# answered (its S1, S2 and C CPU the query's), but no longer than this: under a steady stream
# of queries the conversion still goes on.
PAUSE_SECONDS = 60.0
# The most the matcher's stop waits for its background conversion to stop (`Conversions.close`:
# the piece in flight, then S1's and S2's `standing_drop`, rpc/twoserver_standgive.py's).
CLOSE_SECONDS = 30.0
Key = tuple[str, int, tuple[int, ...], tuple[float, ...], bytes]
BUSY = "another partner's conversion is being made"  # `admit`'s answer while one is made
# `admit`'s answer where C came to hold the partner's conversion after its caller looked
# (`get`, `holds`) and before it was admitted: the one being made ended whole meanwhile. The
# caller uses it (a query's part goes standing); converting again would make S1 and S2 convert
# the same upload twice (minutes of their CPU at 1M records; flaky, 2026-12-07).
HELD = "the partner's conversion is held already"
# `admit`'s answer once the matcher's stop began, and rpc/twoserver_standdeal.py `start`'s for
# a conversion the stop ended before its piece 0 (`Cancelled`)
STOPPING = "the matcher is stopping"


class Cancelled(errors.Unavailable):
    """A conversion the matcher's stop (`Conversions.close`) ended before its next piece was
    dealt (piece 0 included: then S1 and S2 hold nothing of it): not a failure."""


def partner_of(name: str) -> str:
    """A partner's name at S1 and S2 less its upload's tag (`project/member/tag`: each upload
    a tag of its own; S1 and S2 drop a member's conversions as its next upload replaces it)."""
    parts = name.split("/")
    return "/".join(parts[:2]) if len(parts) == 3 else name


def same(a: Key, b: Key) -> bool:
    """Whether two conversions are of one partner (its uploads, terms)."""
    return partner_of(a[0]) == partner_of(b[0])


class Conversions:
    """C's standing partners, the least recently used dropped past MOST_PARTNERS; one
    conversion at a time (a query needing another goes by pairs rather than wait), admitted
    only where it fits S1's and S2's room (`budget`, the least they said) beside the
    conversions used within RECENT_SECONDS. `converted`: partners converted (tests, the
    benchmark); `seconds`: their wall time; `declined`: parts sent by pairs for want of room
    or because another conversion was being made; `queried`: parts dealt standing;
    `failed`: background conversions that stopped (redone by a later query), each given up
    at S1 and S2; `cancelled`: conversions the matcher's stop ended before they were whole
    (`Cancelled`, or a piece's call cut by the stop's closing the channels: not failures,
    logged at info; given up at S1 and S2 where a piece was dealt and the channels are still
    open); `paused`: later pieces that waited for a query being answered."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: OrderedDict[Key, tuple[str, standing.Standing]] = OrderedDict()
        self._bytes: dict[Key, int] = {}
        self._used: dict[Key, float] = {}
        self._lock = threading.Lock()
        self._busy = threading.Lock()  # held while a conversion is made
        self.budget: int | None = None  # the least of S1's and S2's `standing_bytes`
        # S1's `query_whole_records` (None: not said, a role older than the field): `unfit`
        self.whole: int | None = None
        self._learned = False  # `learn`: S1 and S2 answered
        self.converted = 0
        self.seconds = 0.0
        self.declined = 0
        self.queried = 0
        self.failed = 0
        self.cancelled = 0
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

    def holds(self, key: Key) -> bool:
        """Whether C holds a conversion of `key` (not counted as a use: standahead's)."""
        with self._lock:
            return key in self._held

    def told(self, *said: int) -> None:
        """S1's and S2's bounds from their replies (0: a role older than the field: 4 GiB)."""
        with self._lock:
            for n in said:
                n = n or MOST_BYTES
                self.budget = n if self.budget is None else min(self.budget, n)

    def learn(self, remote: RemoteServers) -> None:
        """Before C deals a conversion: S1's and S2's bounds asked once, unless they answered
        already (capsfirst: `Holds` naming no upload, rpc/twoserver_holds.py `bounds`), so
        that C deals piece 0 once, without [M_B] where a server's room holds it only so,
        and none ahead of the queries for a partner S1 would refuse (`unfit`). A role older
        than the fields says nothing: C learns its `standing_bytes` from its standing
        replies (`told`, as before); one that does not answer is asked again next time."""
        with self._lock:
            if self._learned:
                return
        said = bounds(remote)
        if any(r is None for r in said):
            return
        s1, s2 = (r or pb.HoldsReply() for r in said)
        self.told(*(r.standing_bytes for r in (s1, s2) if r.standing_bytes))
        with self._lock:
            self._learned = True
            self.whole = s1.query_whole_records if s1.HasField("query_whole_records") else None

    def learned(self) -> bool:
        """Whether S1 and S2 said their bounds (`learn`)."""
        with self._lock:
            return self._learned

    def unfit(self, records: int, widths: tuple[int, ...]) -> str:
        """Why a partner of `records` records and CLK `widths` is converted by no standing
        conversion started ahead of its queries, by S1's and S2's bounds as they said them
        (`learn`); "" where it may be. Over S1's `query_whole_records` no query is compared
        whole against it (S1 refuses its piece 0); over the least room even without [M_B]
        it would push out every other partner at S1 and S2 (its first query converts it,
        `admit`: alone, where no partner was used within RECENT_SECONDS)."""
        with self._lock:
            whole, budget = self.whole, self.budget
        if whole is not None and records > whole:
            return (
                f"a one-record query against its {records:,} records is not compared whole "
                f"under S1's caps (up to {whole:,}: --query-whole-pairs, "
                "--small-member-pairs, --exhaustive-pairs), so it is never converted"
            )
        size = kept_bytes(records, widths, mask=False)
        if budget is not None and size > budget:
            return (
                f"its {size:,} bytes even without [M_B] are over S1's and S2's room "
                f"({budget:,}, their least --standing-bytes): its first query converts it"
            )
        return ""

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
            now, others = self.clock(), [k for k in self._held if not same(k, key)]
            every = sum(self._bytes[k] for k in others)
            if every + kept_bytes(records, key[2], mask=False) > self.room():
                every = sum(self._bytes[k] for k in others if now - self._used[k] <= RECENT_SECONDS)
            return not keeps_mask(records, key[2], self.room() - every)

    def giving_up(self, remote: RemoteServers, m: pb.BlockDeal) -> None:
        """`give_up` off the query's thread (standq: a query whose piece 0 failed returns
        its error at once, not DROP_SECONDS twice later); `close` waits for it."""
        self._giving.start(remote, m.standing, lambda: give_up(remote, m))

    def admit(self, key: Key, size: int) -> str:
        """Start converting `key` (of `size` bytes at each server): "" where admitted (the
        caller then `put`s or `end`s), HELD where C holds `key`'s conversion by now (the one
        being made as the caller looked ended whole: the caller `get`s it), else why not (the
        part goes by pairs). Admitted, C forgets the conversions the servers drop for it
        (least recently used, none used within RECENT_SECONDS)."""
        why = self._admit(key, size)
        if why and why != HELD:
            with self._lock:
                self.declined += 1
        return why

    def _admit(self, key: Key, size: int) -> str:
        if not self._busy.acquire(blocking=False):
            return BUSY
        self._quiet.clear()  # (before the check: `close` waits for one admitted as it began)
        if self._closing.is_set():
            self.end()
            return STOPPING
        with self._lock:
            if key in self._held:  # (made whole since the caller looked: HELD)
                self.end()
                return HELD
            now, budget = self.clock(), self.room()
            # (the partner's own other conversions, of an earlier upload or other terms, are
            # not counted: S1 and S2 drop them when this one's piece 0 comes)
            others = [k for k in self._held if not same(k, key)]
            recent = sum(self._bytes[k] for k in others if now - self._used[k] <= RECENT_SECONDS)
            if recent and recent + size > budget:
                self.end()
                return (f"its {size:,} bytes do not fit beside the {recent:,} of partners "
                        f"used within {RECENT_SECONDS:.0f} s (room: {budget:,})")  # fmt: skip
            for k in [k for k in self._held if same(k, key) and k != key]:
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

    def by_stop(self, remote: RemoteServers, exc: BaseException) -> bool:
        """Whether `exc`, a conversion's end on `remote`, is the matcher's stop's doing (counted
        `cancelled`): `Cancelled`, or the stop closed the channels under a piece's call."""
        if not self._closing.is_set() or not (isinstance(exc, Cancelled) or remote.stopped()):
            return False
        with self._lock:
            self.cancelled += 1
        return True

    def close(self, timeout: float | None = None) -> bool:
        """The matcher stops: no conversion is started from now on, and no piece is dealt
        (piece 0 of one admitted included: it ends `Cancelled`, nothing given up); the one
        in the background stops before its next piece (not waiting out a pause), given up at
        S1 and S2; this waits for it `timeout` seconds at most (CLOSE_SECONDS: a piece in
        flight). Whether it ended (if not, S1 and S2 drop it STALE_SECONDS after its last
        piece: a give-up that finds the channels closed is not sent, rpc/twoserver_standgive.py)."""
        self._closing.set()
        with self._answered:
            self._answered.notify_all()
        timeout = CLOSE_SECONDS if timeout is None else timeout  # (read here: tests shorten it)
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


__all__ = [
    "BUSY",
    "CLOSE_SECONDS",
    "HELD",
    "MOST_PARTNERS",
    "PAUSE_SECONDS",
    "RECENT_SECONDS",
    "STOPPING",
    "Cancelled",
    "Conversions",
    "Key",
    "partner_of",
    "same",
]
