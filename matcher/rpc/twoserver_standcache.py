"""What S1 and S2 keep of standing partners between queries (rpc/twoserver_standing.py; docs/
privacy-design.md "A query against a standing partner over gRPC"): a cache in memory by C's
id of each conversion, for the version of the partner's upload it converted (the upload held
when piece 0 came: one replaced or forgotten drops it, `forget`), bounded by `MOST_BYTES`
(the least recently used dropped), nothing kept across a restart. A query naming a
conversion not held is refused FAILED_PRECONDITION with `STANDING_NEEDED`: C converts again.
A half-made conversion is dropped (standfix2) when one of its pieces fails here, when C gives
it up (`BlockDeal.standing_drop`), or when no piece of it has come for STALE_SECONDS (C
stopped dealing: killed, or its link down); so is any conversion of a partner whose piece 0
of another comes (its reason names the new one: of the same upload, or a newer one), and so
is any of an upload replaced or forgotten (`forget`: its reason says which); each drop
logged and audited `twoserver.standing_dropped`.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from blindmatch.matcher import errors
from blindmatch.matcher.core import memory, standing
from blindmatch.matcher.core.linkbit import SEED_BYTES
from blindmatch.matcher.core.margincircuit import Plan
from blindmatch.matcher.core.standingsteps import Converting
from blindmatch.matcher.rpc.twoserver_uploads import Held as Upload
from blindmatch.protos import blindmatch_pb2 as pb

log = logging.getLogger("blindmatch.matcher.twoserver")

STANDING_NEEDED = "standing_needed"  # a query's refusal: C converts the partner again
# A piece 0's refusal (standq): C asked for the partner kept with [M_B], which this server's
# bound does not hold (its message names the bound, `--standing-bytes N`): C converts it
# without [M_B] from then on.
STANDING_ROOM = "standing_room"
# What S1 or S2 keeps of standing partners at once, the least recently used dropped past it:
# 4 GiB, a partner of ~348,000 records with [M_B] (12,320 bytes a record with two 1,024-bit
# CLKs) or ~1,040,000 without (4,128: what a one-record query is compared whole against under
# the default `--query-whole-pairs`, core/exhaustive.py), or five of 64,000. One partner over
# it is kept alone.
MOST_BYTES = 4 << 30
# A half-made conversion with no piece for this long is dropped (its C stopped dealing it: a C
# that gives one up, or stops cleanly, says so at once, `BlockDeal.standing_drop`). Longer than
# C waits between pieces (its PAUSE_SECONDS, 60 s, while queries are answered) plus the longest
# a piece's call may take at C (CALL_SECONDS, 600 s), so a conversion going on is never dropped.
STALE_SECONDS = 900.0
# A conversion started without a query (standahead: at the upload, or at C's start) is taken
# once in this long for a version of a partner's upload (S1's `ahead`): a combiner restarted
# meanwhile converts it at its first query instead, as before standahead, and a C cannot make
# S1 and S2 convert one upload over and over with no query to count.
AHEAD_SECONDS = 3600.0


# Every rpc/twoserver_standing.py TRIM_EVERY pieces of a conversion (16, standfault) and after its
# last, S1 and S2 give glibc's freed heap back (`trim`): the pieces' temporaries (tens of MB
# each, under glibc's raised mmap threshold) otherwise stay in the process's RSS (+864 MiB
# beside 376 MiB kept at 16,000 records, standmask).
TRIM = True


def trim() -> None:
    """The freed heap given back (core/memory.py `release_free_memory`: glibc's
    `malloc_trim(0)`; nothing elsewhere), where `TRIM`."""
    if TRIM:
        memory.release_free_memory()


def keeps_mask(records: int, widths: tuple[int, ...], bound: int) -> bool:
    """Whether S1 and S2 keep a partner's [M_B] (standmask): where the partner alone fits
    `bound` (a server's `--standing-bytes`; at C the least the servers said) with it, 12,320
    bytes a record at two 1,024-bit CLKs; else each regenerates its share from its seed at
    each query (core/standing.py `Partner.forget_mask`, never kept, not even piece by piece),
    4,128 bytes a record, ~1.1 us a pair a server more (one that fits neither: so too, kept
    alone over the bound as before). C asks with `bound` the room its partners converted so
    far leave (standq: `BlockDeal.standing_without_mask`, which S1 and S2 obey); a server
    told nothing (a combiner older than the field) applies it to its own bound alone."""
    return kept_bytes(records, widths, mask=True) <= bound


def kept_bytes(records: int, widths: tuple[int, ...], bound: int | None = None,
               mask: bool | None = None) -> int:  # fmt: skip
    """What S1 and S2 each keep of a partner converted with [M_B] where `mask`, else (None)
    under `bound` (core/standing.py `Partner.bytes_kept`: D_B 2 bytes a bit, [M_B] 4 where
    `keeps_mask` (None: kept), 16 bytes of popcounts a record a CLK, its 32-byte seed)."""
    if mask is None:
        mask = bound is None or keeps_mask(records, widths, bound)
    return records * sum((6 if mask else 2) * w + 16 for w in widths) + SEED_BYTES


def terms(m: pb.BlockDeal) -> bytes:
    """What a conversion's popcounts depend on beside the upload: the cut-offs and rule."""
    bare = pb.BlockDeal(cutoffs=m.cutoffs, rule=m.rule if m.HasField("rule") else None)
    return bare.SerializeToString(deterministic=True)


@dataclass
class Entry:
    """A partner converted, or being converted, under C's id."""

    member: str
    upload: weakref.ReferenceType[Upload]
    terms: bytes
    conv: Converting
    used: float
    started: float
    asker: str = ""  # member_a of piece 0's query (its audit entry names it)
    run: str = ""  # S1's run piece 0 was checked against (its later pieces' `run`)


class Standings:
    """S1's or S2's standing partners by C's conversion id (a cache: `MOST_BYTES` at most,
    least recently used dropped; gone on a restart; a half-made one dropped where it fails,
    C gives it up or it goes stale). `conversions`: partners converted whole (tests, the
    benchmark); `dropped`: conversions dropped half-made (or whole, given up by C, or
    replaced by a piece 0 of the same partner), not for room or a replaced upload, each
    counted once its audit entry is written; `audit`: the
    role's audit log (`_Role.log`), each drop's entry."""

    def __init__(self, most: int | None = None, clock: Callable[[], float] = time.monotonic,
                 audit: Callable[..., None] | None = None) -> None:  # fmt: skip
        self.most, self.clock, self.audit = most, clock, audit
        self.conversions = self.dropped = 0
        self._held: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._timer: threading.Timer | None = None  # the next stale sweep (`_arm`)
        # member -> (its upload, when) of the last conversion started without a query (`ahead`)
        self._ahead: dict[str, tuple[weakref.ReferenceType[Upload], float]] = {}
        self._closed = False

    def bytes_kept(self) -> int:
        """The bytes of the partners held, whole or half-made (stale ones dropped first)."""
        self.sweep()
        with self._lock:
            return sum(e.conv.bytes_kept() for e in self._held.values())

    def drop(self, ident: str, member: str, why: str, half_made: bool = True) -> bool:
        """Drop conversion `ident` of `member`'s upload (with `half_made`, only one not yet
        whole: a stray piece never drops a partner in use), audited with `why`; whether one
        was held."""
        with self._lock:
            entry = self._held.get(ident)
            if entry is None or entry.member != member or (
                half_made and entry.conv.partner is not None
            ):  # fmt: skip
                return False
            del self._held[ident]
        self._dropped([(ident, entry)], why)
        return True

    def sweep(self) -> None:
        """Drop the half-made conversions no piece of which came for STALE_SECONDS."""
        with self._lock:
            now = self.clock()
            stale = [(k, e) for k, e in self._held.items()
                     if e.conv.partner is None and now - e.used > STALE_SECONDS]  # fmt: skip
            for k, _ in stale:
                del self._held[k]
        self._dropped(stale, f"no piece for {STALE_SECONDS:g} s (the combiner stopped)")

    def _dropped(self, gone: list[tuple[str, Entry]], why: str, replaced: bool = False) -> None:
        """Each of `gone` logged and audited with `why`; counted and its arrays freed, but
        not where its upload was `replaced` or forgotten (`forget`)."""
        for ident, entry in gone:
            freed = entry.conv.bytes_kept()
            if not replaced:
                entry.conv.side = None  # its arrays freed now, whoever still holds the entry
            log.info("dropped standing partner %s (%s, %d of %d pieces converted, %d bytes): "
                     "%s", entry.member, ident, entry.conv.done, entry.conv.pieces, freed,
                     why)  # fmt: skip
            if self.audit is not None:
                self.audit("combiner", "twoserver.standing_dropped",
                           members=[entry.asker, entry.member], run=entry.run, standing=ident,
                           done=entry.conv.done, pieces=entry.conv.pieces, bytes=freed,
                           reason=why)  # fmt: skip
            with self._lock:  # counted once audited, so a reader of `dropped` finds the entry
                self.dropped += not replaced

    def _arm(self, after: float | None = None) -> None:
        """A sweep `after` seconds from now (STALE_SECONDS), where none is due (a daemon
        timer, one at a time; called under the lock), so that a half-made conversion goes
        even where no other standing call comes."""
        if self._closed or self._timer is not None:
            return
        self._timer = threading.Timer(STALE_SECONDS if after is None else after, self._swept)
        self._timer.daemon = True
        self._timer.start()

    def _swept(self) -> None:
        """The timer's sweep; the next one due at the earliest a half-made conversion left
        would go stale."""
        self.sweep()
        with self._lock:
            self._timer, now = None, self.clock()
            left = [STALE_SECONDS - (now - e.used) for e in self._held.values()
                    if e.conv.partner is None]  # fmt: skip
            if left:
                self._arm(max(min(left), 0.0) + 0.01)

    def close(self) -> None:
        """The role stops: its stale sweep's timer cancelled."""
        with self._lock:
            self._closed = True
            if self._timer is not None:
                self._timer.cancel()

    def ahead(self, member: str, upload: Upload) -> float | None:
        """A conversion of `member`'s `upload` started without a query (standahead): None
        where none of this version of the upload was within AHEAD_SECONDS (this one noted),
        else the seconds since that one."""
        with self._lock:
            now, last = self.clock(), self._ahead.get(member)
            if last is not None and last[0]() is upload and now - last[1] < AHEAD_SECONDS:
                return now - last[1]
            for k in [k for k, (u, _) in self._ahead.items() if u() is None]:
                del self._ahead[k]  # (uploads replaced or forgotten)
            self._ahead[member] = (weakref.ref(upload), now)
            return None

    def piece(self, m: pb.BlockDeal, upload: Upload, p: Plan, widths: tuple[int, ...],
              role: int) -> Entry:  # fmt: skip
        """The conversion `m.standing` for its piece: piece 0 starts it (dropping any other of
        the same partner, logged and audited: `_dropped`); a later piece continues it
        (`FailedPrecondition` where it is not held, for this version of the upload)."""
        self.sweep()
        with self._lock:
            self._arm()
            if m.standing_piece:
                entry = self._find(m, upload)
                if entry.conv.partner is not None or entry.conv.pieces != m.standing_pieces:
                    raise errors.InvalidArgument(
                        f"standing_piece: {m.standing_piece} of {m.standing_pieces}, but "
                        f"conversion {m.standing!r} is of {entry.conv.pieces} pieces, "
                        f"{entry.conv.done} done"
                    )
                return entry
            gone = [(k, e) for k, e in self._held.items() if e.member == m.member_b]
            for k, _ in gone:
                del self._held[k]
            now, mask = self.clock(), self.keeps(m, upload.records, widths)
            conv = Converting(role, widths, p, m.standing_pieces, upload.records, keep_mask=mask)
            entry = Entry(m.member_b, weakref.ref(upload), terms(m), conv, now, now, m.member_a)
            self._held[m.standing] = entry
        for k, e in gone:  # logged and audited (leftovers: before, dropped without a word)
            why = "a new conversion of the same upload" if e.upload() is upload else (
                "a newer upload")  # fmt: skip
            self._dropped([(k, e)], f"conversion {m.standing} started: {why}")
        if self.audit is not None:  # a query's piece 0, or one ahead of any query (standahead)
            self.audit("combiner", "twoserver.standing_started", members=[m.member_a, m.member_b],
                       standing=m.standing, records=upload.records, pieces=m.standing_pieces,
                       mask=mask, query=bool(m.member_a))  # fmt: skip
        return entry

    def _find(self, m: pb.BlockDeal, upload: Upload) -> Entry:
        entry = self._held.get(m.standing)
        if entry is None or entry.member != m.member_b or entry.upload() is not upload or (
            entry.terms != terms(m)
        ):  # fmt: skip
            raise errors.FailedPrecondition(
                f"{STANDING_NEEDED}: conversion {m.standing!r} of the upload of {m.member_b!r} is "
                "not held here (not converted, another version of the upload, other cut-offs "
                "or rule, dropped for room, or the server restarted): convert it again"
            )
        entry.used = self.clock()
        return entry

    def partner(self, m: pb.BlockDeal, upload: Upload) -> standing.Partner:
        """A query's partner: conversion `m.standing`, whole, of this version of member_b's
        upload (`FailedPrecondition` naming it otherwise)."""
        with self._lock:
            entry = self._find(m, upload)
            if entry.conv.partner is None:
                raise errors.FailedPrecondition(
                    f"{STANDING_NEEDED}: conversion {m.standing!r} of the upload of {m.member_b!r} "
                    f"is {entry.conv.done} of {entry.conv.pieces} pieces: convert it again"
                )
            return entry.conv.partner

    def keeps(self, m: pb.BlockDeal, records: int, widths: tuple[int, ...]) -> bool:
        """Whether piece 0 `m`'s partner is kept with [M_B]: as C says
        (`standing_without_mask`, standq), refused FAILED_PRECONDITION `STANDING_ROOM` where
        C asks for [M_B] this server's bound does not hold with the partner alone; C saying
        nothing (older), `keeps_mask` on this server's bound."""
        most = self.most_bytes()
        if not m.HasField("standing_without_mask"):
            return keeps_mask(records, widths, most)
        if not m.standing_without_mask and not keeps_mask(records, widths, most):
            raise errors.FailedPrecondition(
                f"{STANDING_ROOM}: the combiner asked for {m.member_b!r}'s {records} records "
                f"kept with [M_B] ({kept_bytes(records, widths):,} bytes), over this server's "
                f"--standing-bytes {most}: convert it without (standing_without_mask)"
            )
        return not m.standing_without_mask

    def most_bytes(self) -> int:
        """This server's bound on the partners it keeps (told to C in its standing replies)."""
        return MOST_BYTES if self.most is None else self.most

    def bound(self) -> None:
        """Drop the least recently used whole partners while over `MOST_BYTES` (read when
        called; after each piece: a conversion's arrays are made at its piece 0, so room is
        made for it then, not at its end). A half-made one is not dropped for room (one C no
        longer deals is swept: `sweep`); one partner over the bound is kept alone."""
        most = self.most_bytes()
        with self._lock:
            while len(self._held) > 1 and sum(e.conv.bytes_kept()
                                               for e in self._held.values()) > most:  # fmt: skip
                whole = [k for k, e in self._held.items() if e.conv.partner is not None]
                if not whole:
                    break
                oldest = min(whole, key=lambda k: self._held[k].used)
                log.info("dropped standing partner %s (%s) for room", self._held[oldest].member,
                         oldest)  # fmt: skip
                del self._held[oldest]

    def forget(self, names: set[str], why: str) -> None:
        """Drop the partners of any of `names` (uploads replaced or dropped), logged and
        audited with `why` (leftovers2: before, without a word at S1 and S2). Not counted
        in `dropped`, and their arrays left to whoever still holds them (a piece under way)."""
        with self._lock:
            gone = [(k, e) for k, e in self._held.items() if e.member in names]
            for k, _ in gone:
                del self._held[k]
        self._dropped(gone, why, replaced=True)


__all__ = ["AHEAD_SECONDS", "MOST_BYTES", "STALE_SECONDS", "STANDING_NEEDED", "STANDING_ROOM",
           "TRIM", "Entry", "Standings", "keeps_mask", "kept_bytes", "terms", "trim"]  # fmt: skip
