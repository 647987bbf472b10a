"""Blocking for the two-server run without a record's band key at S1 (docs/privacy-design.md,
docs/protocol.md "Sealed band keys").

Each member uploads, per CLK, each band's distinct keys once, each with its rows sealed as
tokens only S2 can open (client/encoding/sharing.py `seal_bands`). S1 `join`s two members'
keys band by band and pairs the matched keys' tokens (slot s of one with slot t of the other,
each through a copy of its own, all bands shuffled together); S2 `expand`s the pairs of
tokens into the pairs of rows sharing a key in at least one band, once; S1's `fallback_split`
applies the fallback CLK's rule (S1 knows which records lack the fallback's fields: the
members told it). The result is the pairs S1 proposed when it held every record's keys
(core/recordblocking.py `record_blocking`, the tests' reference).

S1 learns each band's count of distinct keys, which keys two members share and each key's
size class, not which records hold them, nor which of one member's records collide. S2 opens
each token once (but where two matched keys' classes differ, or more than 16 records share a
key), so it learns of each candidate pair the number of bands its records share (an
approximate similarity: docs/privacy-design.md measures that view), not which pairs came from
one key.

Pure: arrays in, arrays out.
"""

from __future__ import annotations

import functools
import itertools
import mmap
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

Keys = npt.NDArray[np.uint64]
Shares = npt.NDArray[np.uint8]
Rows = npt.NDArray[np.uint32]
Order = npt.NDArray[np.uint32] | npt.NDArray[np.intp]  # positions in a range of keys
PopShares = npt.NDArray[np.uint32]  # a server's XOR shares of popcounts

RECORD, FALLBACK = 0, 1  # the CLKs of an upload
BAND_STEP = 64  # bands S1 collides in one sort (memory: rows x this many keys a side)
# A join looks a's keys up band by band, with no sort of b's, where a holds at most this
# share of b's keys in a band range (`matched_keys`: a query's few records).
LOOKUP_SHARE = 1 / 16
JOIN_PAIRS = 1 << 18  # pairs of tokens a join makes at a time (`join`; ~20 MB of arrays)
OPENED_PAIRS = 1 << 20  # pairs S2's `expand` holds opened before it makes them distinct


@dataclass(frozen=True)
class PairBatch:
    """Pairs (member_a's row rows_a[k], member_b's row rows_b[k]), member_a < member_b, to be
    compared on CLK `clk` (RECORD or FALLBACK)."""

    member_a: int
    member_b: int
    clk: int
    rows_a: Rows
    rows_b: Rows

    def __len__(self) -> int:
        return len(self.rows_a)

    def split(self, size: int) -> Iterator[PairBatch]:
        for lo in range(0, len(self), size):
            yield PairBatch(
                self.member_a,
                self.member_b,
                self.clk,
                self.rows_a[lo : lo + size],
                self.rows_b[lo : lo + size],
            )


def distinct_codes(codes: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """Sorted, each once: a sort and a comparison of neighbours (np.unique on 10^7 uint64s
    takes 40 times longer with numpy 2.3's hashing path)."""
    codes.sort()
    keep = np.empty(len(codes), dtype=bool)
    keep[:1] = True
    np.not_equal(codes[1:], codes[:-1], out=keep[1:])
    return codes[keep]


# Sealed band keys (client/encoding/sharing.py `seal_bands`, docs/protocol.md "Sealed band
# keys"): each key CLASS_BASE ** class slots, each in as many copies (MIN_COPIES to
# MAX_COPIES), each a 16-byte token, AES-256 of (row uint32 LE || clk || TOKEN_TAG || 8 random
# bytes) under the member's seal key; a padding slot's row is TOKEN_PAD.
TOKEN_BYTES, TOKEN_TAG, TOKEN_PAD = 16, b"bm1", 0xFFFFFFFF
CLASS_BASE, MAX_CLASS, MIN_COPIES, MAX_COPIES, SEAL_KEY_BYTES = 4, 16, 2, 16, 32


def slots(classes: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    out: npt.NDArray[np.int64] = np.power(CLASS_BASE, np.asarray(classes, dtype=np.int64))
    return out


def copies(classes: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    return np.clip(slots(classes), MIN_COPIES, MAX_COPIES)


_TOKENS = slots(np.arange(MAX_CLASS + 1)) * copies(np.arange(MAX_CLASS + 1))  # a key's, by class


def sealed_size(classes: npt.NDArray[np.integer]) -> npt.NDArray[np.int64]:
    """The bytes of each key's tokens: slots x copies x TOKEN_BYTES."""
    out: npt.NDArray[np.int64] = TOKEN_BYTES * slots(classes) * copies(classes)
    return out


class SealedLike(Protocol):
    """A member's sealed band keys of a CLK as it uploads them (client/encoding/sharing.py
    `SealedBands`)."""

    @property
    def counts(self) -> npt.NDArray[np.int64]: ...
    @property
    def keys(self) -> Keys: ...
    @property
    def classes(self) -> npt.NDArray[np.uint8]: ...
    @property
    def sealed(self) -> Shares: ...


@dataclass(frozen=True)
class Sealed:
    """One member's band keys of one CLK as S1 holds them: each band's distinct keys
    (`counts[band]` of them, band by band), each key's size class and tokens (slot-major:
    slot s's copies together), one key after the other."""

    counts: npt.NDArray[np.int64]
    keys: Keys
    classes: npt.NDArray[np.uint8]
    sealed: npt.NDArray[np.uint8]

    def token_offsets(self) -> npt.NDArray[np.uint32] | npt.NDArray[np.int64]:
        """Where each key's tokens start, in tokens (one past the end last); read-only. Kept
        for the upload's later joins, as uint32 (4 bytes a key) where the tokens are fewer
        than 2^32. Computed once, under this upload's own lock (not functools.cached_property,
        whose lock in Python 3.11 is one for every instance: a query's own offsets waited
        for a partner's)."""
        with self._offsetting:
            if not self._offsets:
                kind = np.uint32 if len(self.sealed) // TOKEN_BYTES < 1 << 32 else np.int64
                out: Any = np.zeros(len(self.keys) + 1, kind)
                np.cumsum(_TOKENS[self.classes].astype(kind), out=out[1:])
                out.setflags(write=False)
                self._offsets.append(out)
            return self._offsets[0]

    @functools.cached_property
    def ends(self) -> npt.NDArray[np.int64]:
        """Where each band's keys start (one past the end last); read-only."""
        out = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        out.setflags(write=False)
        return out

    # Each band range's sort order (`sorted_keys`), kept for the upload's later joins; the
    # lock a range is sorted under (a second caller waits for the first's sort); `_guard`
    # over both dicts. Not compared: an upload's cache, not its contents.
    _sorted: dict[tuple[int, int], Order] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _sorting: dict[tuple[int, int], threading.Lock] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _guard: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )
    # `token_offsets`, once computed (a list of one), and the lock it is computed under.
    _offsets: list[npt.NDArray[np.uint32] | npt.NDArray[np.int64]] = field(
        default_factory=list, init=False, repr=False, compare=False
    )
    _offsetting: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def sorted_keys(self, lo: int, hi: int) -> tuple[Order, Keys]:
        """Bands lo..hi's keys sorted: (the order, read-only, kept for the upload's next join;
        the sorted keys, gathered by it for this one). A run's join: a query's few records are
        looked up with no sort, `looked_up`. S1 sorts an upload's ranges when it arrives
        (`presort`, off the request path: rpc/twoserver_presort.py); a join that comes first
        sorts the range itself, or waits for the sort under way: each range is sorted once,
        and another upload's sort never holds it up. Only the order is kept (4 bytes a key,
        uint32 positions: a range's keys are far fewer than 2^32); keeping the sorted keys
        too took 12 (docs/performance.md "Two-server share files and S1's memory at 20,000
        records")."""
        with self._guard:
            order = self._sorted.get((lo, hi))
            sorting = self._sorting.setdefault((lo, hi), threading.Lock())
        if order is None:
            with sorting:
                with self._guard:
                    order = self._sorted.get((lo, hi))
                if order is None:
                    keys = self.keys[self.ends[lo] : self.ends[hi]]
                    found = np.argsort(keys, kind="stable")
                    order = found.astype(np.uint32) if len(keys) < 1 << 32 else found
                    order.setflags(write=False)
                    with self._guard:
                        self._sorted[lo, hi] = order
        return order, self.keys[self.ends[lo] : self.ends[hi]][order]

    def ranges(self) -> list[tuple[int, int]]:
        """The band ranges a join looks keys up in (`matched_keys`), those holding keys."""
        n, ends = len(self.counts), self.ends
        out = [(lo, min(lo + BAND_STEP, n)) for lo in range(0, n, BAND_STEP)]
        return [(lo, hi) for lo, hi in out if ends[lo] != ends[hi]]

    def presort(self, wanted: Callable[[], bool] = lambda: True) -> int:
        """What a join needs of this upload, ahead of the first: its tokens' offsets
        (`token_offsets`) and every range a run's join looks keys up in sorted (`sorted_keys`);
        stop early once `wanted()` is false (the upload replaced). The ranges sorted here."""
        if not wanted():
            return 0
        self.token_offsets()
        done = 0
        for lo, hi in self.ranges():
            if not wanted():
                break
            with self._guard:
                if (lo, hi) in self._sorted:
                    continue
            self.sorted_keys(lo, hi)
            done += 1
        return done

    def kept_bytes(self) -> int:
        """The bytes kept for joins beyond the upload's own: the sorted keys (`sorted_keys`)
        and the tokens' offsets (`token_offsets`), those computed so far."""
        with self._guard:
            kept = sum(order.nbytes for order in self._sorted.values())
        return kept + sum(a.nbytes for a in self._offsets)

    def tokens(self) -> Shares:
        """(tokens, TOKEN_BYTES)."""
        return self.sealed.reshape(-1, TOKEN_BYTES)

    def drop_tokens(self) -> None:
        """Drop the tokens' pages from the process's memory where they are mapped from a file
        (S1's upload, rpc/twoserver_uploads.py `Spool`): they stay in the file, read again when
        next used. A join reads nearly every page; kept, they counted in S1's RSS to the end
        (docs/performance.md "S1's memory at a run's start (2026-12-06)"). Else nothing."""
        base: Any = self.sealed
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        base = base.obj if isinstance(base, memoryview) else base
        if not isinstance(base, mmap.mmap) or not self.sealed.nbytes or base.closed:
            return
        lo = self.sealed.ctypes.data - np.frombuffer(base, np.uint8, 1).ctypes.data
        page = lo - lo % mmap.PAGESIZE
        base.madvise(mmap.MADV_DONTNEED, page, lo + self.sealed.nbytes - page)


@dataclass(frozen=True)
class Matched:
    """What S1 forwards to S2 for a pair of members and a CLK: pairs of tokens (one of each
    member's, (pairs, TOKEN_BYTES) each), every pair of slots of every key both hold in a
    band, all bands' in one random order."""

    member_a: int
    member_b: int
    clk: int
    tokens_a: Shares
    tokens_b: Shares

    def __len__(self) -> int:
        return len(self.tokens_a)

    def split(self, size: int) -> Iterator[Matched]:
        """In parts of at most `size` pairs of tokens."""
        for lo in range(0, len(self), size):
            yield Matched(self.member_a, self.member_b, self.clk, self.tokens_a[lo : lo + size],
                          self.tokens_b[lo : lo + size])  # fmt: skip


def looked_up(
    ka: Keys, first: npt.NDArray[np.int64], end: npt.NDArray[np.int64], kb: Keys
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:
    """Each of `ka` looked up in its own slice of `kb`, kb[first[i]:end[i]] (ascending: a
    band's keys), by a binary search of them all at once: (the indexes into ka found, where in
    kb). No sort: one CLK of one record (1,600 keys) against a partner of 1,050 records costs
    0.26 ms CPU (0.61 ms searching on with only the keys not yet settled: more numpy calls).

    Branchless: each key's window [base, base + n) halves every step (the same steps for
    all, none dropped), then its first key not below the key's is base + (kb[base] < key)."""
    if not len(ka) or not len(kb):
        return np.empty(0, np.intp), np.empty(0, np.int64)
    base, n = first.astype(np.int64), (end - first).astype(np.int64)
    top = len(kb) - 1
    while (half := n >> 1).any():
        probe = np.minimum(base + half, top)
        base = np.where((half > 0) & (kb[probe] < ka), probe, base)
        n -= half
    at = base + ((n > 0) & (kb[np.minimum(base, top)] < ka))
    hit = np.flatnonzero((at < end) & (kb[np.minimum(at, top)] == ka))
    return hit, at[hit]


def matched_keys(a: Sealed, b: Sealed) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(indexes into a's keys, into b's): each key both hold in the same band, a band range at
    a time (each band's keys are distinct on each side, so each matches at most one). Where a
    holds few keys beside b's (at most LOOKUP_SHARE: a query's records), each is looked up in
    its band of b's (`looked_up`: b's keys are not sorted, nor waited for); else b's range
    sorted (`Sealed.sorted_keys`, kept) and a's keys searched in it (a run's)."""
    if len(a.counts) != len(b.counts):
        raise ValueError("sealed band keys with different numbers of bands")
    ends_a, ends_b = a.ends, b.ends
    if _all_looked_up(ends_a, ends_b):  # one search over every band, no loop
        band = np.repeat(np.arange(len(a.counts)), a.counts)
        found, where = looked_up(a.keys, ends_b[band], ends_b[band + 1], b.keys)
        return found.astype(np.intp), where.astype(np.intp)
    got_a, got_b = [], []
    for lo in range(0, len(a.counts), BAND_STEP):
        hi = min(lo + BAND_STEP, len(a.counts))
        ka = a.keys[ends_a[lo] : ends_a[hi]]
        if not len(ka) or ends_b[lo] == ends_b[hi]:
            continue
        if len(ka) <= LOOKUP_SHARE * (ends_b[hi] - ends_b[lo]):
            band = np.repeat(np.arange(lo, hi), a.counts[lo:hi])
            found, where = looked_up(ka, ends_b[band], ends_b[band + 1], b.keys)
            got_a.append(ends_a[lo] + found)
            got_b.append(where)
            continue
        order_b, sorted_b = b.sorted_keys(lo, hi)
        start = np.searchsorted(sorted_b, ka, side="left")
        counts = np.searchsorted(sorted_b, ka, side="right") - start
        hit = np.flatnonzero(counts)
        c = counts[hit]
        at = np.repeat(start[hit] - (np.cumsum(c) - c), c) + np.arange(int(c.sum()))
        ia, ib = np.repeat(hit, c), order_b[at]
        # Each match's band (equal keys of two bands: a 2^-64 chance), of the matches only.
        band_a = np.searchsorted(ends_a[lo : hi + 1] - ends_a[lo], ia, side="right")
        band_b = np.searchsorted(ends_b[lo : hi + 1] - ends_b[lo], ib, side="right")
        same = band_a == band_b
        got_a.append(ends_a[lo] + ia[same])
        got_b.append(ends_b[lo] + ib[same])
    if not got_a:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    return np.concatenate(got_a).astype(np.intp), np.concatenate(got_b).astype(np.intp)


def _all_looked_up(ends_a: npt.NDArray[np.int64], ends_b: npt.NDArray[np.int64]) -> bool:
    """Whether `matched_keys` looks every band range of a's up (none of b's sorted): then
    one binary search over all bands finds the same matches, in the same order, as one a
    range (a query's record against a partner of 1,000: 0.6 ms CPU a CLK against 2.4 ms, the
    25 ranges' numpy calls)."""
    cuts = np.append(np.arange(0, len(ends_a) - 1, BAND_STEP), len(ends_a) - 1)
    na, nb = np.diff(ends_a[cuts]), np.diff(ends_b[cuts])
    some = (na > 0) & (nb > 0)
    return bool(np.all(na[some] <= LOOKUP_SHARE * nb[some]))


def join(x: int, y: int, clk: int, a: Sealed, b: Sealed, *, dummies: float = 0.0) -> Matched:
    """S1's join of two members' sealed band keys of a CLK: for each key both hold in a band,
    slot s of a's with slot t of b's, through a's copy t and b's copy s (modulo their copies:
    each token once where the classes agree), every band's pairs shuffled together (so S2
    cannot tell which pairs came from one key). With `dummies` > 0, as many more pairs as that
    share of the real ones, each a token of a and a token of b drawn at random from all their
    tokens of the CLK (S1 cannot tell which rows they name, nor padding from a row), shuffled
    in with the real ones: S2 cannot tell them apart, so its counts of shared bands are noised.
    The pairs of rows they add go through the circuit as candidates: C's links are unchanged
    but where a dummy lands on a pair at the threshold that no band found (then one more link).
    Measured, not the default (docs/privacy-design.md "S2's counts of shared bands: dummy
    pairs and other band plans")."""
    ia, ib = matched_keys(a, b)
    per = slots(a.classes[ia]) * slots(b.classes[ib])
    total = int(per.sum())
    rng = np.random.default_rng(secrets.randbits(128))
    extra = round(dummies * total) if len(a.sealed) and len(b.sealed) else 0
    # Each pair's two token indexes side by side (4 bytes each where the tokens are fewer
    # than 2^32), made about JOIN_PAIRS at a time (whole keys) and shuffled in place: a join
    # held about 140 bytes a pair of tokens at its peak, 4.4 times the 32 it returns.
    kind = np.uint32 if max(len(a.sealed), len(b.sealed)) // TOKEN_BYTES < 1 << 32 else np.int64
    at = np.empty(total + extra, [("a", kind), ("b", kind)])
    off_a, off_b, done = a.token_offsets(), b.token_offsets(), 0
    cuts = np.searchsorted(np.cumsum(per), np.arange(JOIN_PAIRS, total, JOIN_PAIRS), "right")
    for lo, hi in itertools.pairwise([0, *np.unique(cuts).tolist(), len(per)]):
        ka, kb, p = ia[lo:hi], ib[lo:hi], per[lo:hi]
        n = int(p.sum())
        key = np.repeat(np.arange(len(p)), p)
        within = np.arange(n) - np.repeat(np.cumsum(p) - p, p)
        sb = slots(b.classes[kb])[key]
        s, t = within // sb, within % sb
        ca, cb = copies(a.classes[ka])[key], copies(b.classes[kb])[key]
        at["a"][done : done + n] = off_a[ka][key] + s * ca + t % ca
        at["b"][done : done + n] = off_b[kb][key] + t * cb + s % cb
        done += n
    if extra:
        at["a"][total:] = rng.integers(0, len(a.tokens()), extra)
        at["b"][total:] = rng.integers(0, len(b.tokens()), extra)
    rng.shuffle(at)
    return Matched(x, y, clk, a.tokens()[at["a"]], b.tokens()[at["b"]])


def open_tokens(
    seal_key: bytes, clk: int, tokens: Shares, records: int, side: str
) -> npt.NDArray[np.int64]:
    """Each token's row (-1 for padding), opened under the member's seal key; ValueError
    naming `side` for a token that is not the member's for this CLK or names a row beyond its
    `records`."""
    if tokens.ndim != 2 or tokens.shape[1] != TOKEN_BYTES:
        raise ValueError(f"tokens_{side}: {TOKEN_BYTES} bytes a token")
    dec = Cipher(algorithms.AES(seal_key), modes.ECB()).decryptor()
    plain = np.frombuffer(dec.update(np.ascontiguousarray(tokens).tobytes()) + dec.finalize(),
                          np.uint8).reshape(-1, TOKEN_BYTES)  # fmt: skip
    tag = np.frombuffer(TOKEN_TAG, np.uint8)
    ok = (plain[:, 4] == clk) & (plain[:, 5:8] == tag).all(axis=1)
    if not ok.all():
        raise ValueError(
            f"tokens_{side}: a token that does not open under the member's seal key for this "
            "CLK (not this upload's)"
        )
    rows = np.ascontiguousarray(plain[:, :4]).view("<u4").ravel().astype(np.int64)
    real = rows != TOKEN_PAD
    if real.any() and int(rows[real].max()) >= records:
        raise ValueError(f"tokens_{side}: row {int(rows[real].max())} of {records}")
    rows[~real] = -1
    return rows


def expanded_pairs(
    matched: Matched, seal_keys: tuple[bytes, bytes], records: tuple[int, int]
) -> npt.NDArray[np.uint64]:
    """Each pair (row of a, row of b) of the matched tokens, row_a << 32 | row_b, padding
    dropped: a pair appears once for each band whose keys the two records share (S2's
    view)."""
    a = open_tokens(seal_keys[0], matched.clk, matched.tokens_a, records[0], "a")
    b = open_tokens(seal_keys[1], matched.clk, matched.tokens_b, records[1], "b")
    real = (a >= 0) & (b >= 0)
    out: npt.NDArray[np.uint64] = (a[real].astype(np.uint64) << np.uint64(32)) | b[real].astype(
        np.uint64
    )
    return out


def fallback_split(
    batches: Sequence[PairBatch], lacking: Sequence[npt.NDArray[np.bool_]] | None
) -> list[PairBatch]:
    """The pairs compared, from each CLK's pairs sharing a band key: with `lacking` (each
    member's records lacking the fallback's fields), record-level pairs between records that
    have them and fallback pairs where either lacks them; without, the record-level pairs (the
    pairs S1 proposed when it held every record's keys, `record_blocking`)."""
    out = []
    for b in batches:
        if lacking is None:
            if b.clk == RECORD:
                out.append(b)
            continue
        either = lacking[b.member_a][b.rows_a] | lacking[b.member_b][b.rows_b]
        keep = either if b.clk == FALLBACK else ~either
        out.append(PairBatch(b.member_a, b.member_b, b.clk, b.rows_a[keep], b.rows_b[keep]))
    return out


def expand(
    matched: Iterable[Matched], seal_keys: Sequence[bytes], records: Sequence[int], clks: int = 1
) -> list[PairBatch]:
    """S2's expansion of what S1 matched: per pair of members and CLK (the first `clks`;
    every pair of members and CLK listed, with pairs or none), the pairs sharing a key in at
    least one band, once, in row order; ValueError for a token that does not open.
    `fallback_split` then applies the fallback's rule (whoever holds which records lack its
    fields: S1). Each part's pairs made distinct again once those added since reach those
    kept (and OPENED_PAIRS): S2 holds about 8 bytes a distinct pair, not one a band shared."""
    got: dict[tuple[int, int, int], list[npt.NDArray[np.uint64]]] = {}
    members = len(records)
    for x in range(members):
        for y in range(x + 1, members):
            for clk in range(clks):
                got[x, y, clk] = [np.empty(0, dtype=np.uint64)]  # the distinct, then added
    for m in matched:
        x, y = m.member_a, m.member_b
        if (x, y, m.clk) not in got:
            raise ValueError(f"member_a/member_b/clk: {x}, {y}, {m.clk} not of the run")
        parts = got[x, y, m.clk]
        parts.append(expanded_pairs(m, (seal_keys[x], seal_keys[y]), (records[x], records[y])))
        if sum(map(len, parts[1:])) >= max(len(parts[0]), OPENED_PAIRS):
            codes, parts[:] = np.concatenate(parts), []  # (let go before the copy kept)
            parts.append(distinct_codes(codes))
            del codes
    out = []
    for x, y, clk in sorted(got):  # each let go once made distinct
        codes = distinct_codes(np.concatenate(got.pop((x, y, clk))))
        rows_a = (codes >> np.uint64(32)).astype(np.uint32)
        rows_b = (codes & np.uint64(0xFFFFFFFF)).astype(np.uint32)
        out.append(PairBatch(x, y, clk, rows_a, rows_b))
    return out
