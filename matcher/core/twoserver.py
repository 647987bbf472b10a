"""A run on two non-colluding servers and a combiner (docs/privacy-design.md, options a + b).

The three roles, as plain objects over arrays, each given only what it receives in the
design (matcher/rpc/twoserver_service.py puts each behind a gRPC service of its own):

- `BlockingServer` (S1): every member's sealed band keys (client/encoding/sharing.py
  `seal_bands`: each band's distinct keys once, each with its rows as tokens only S2 can open)
  and the first XOR share of each CLK. `join` matches the keys of each pair of members band by
  band and pairs the matched keys' tokens (`join`: slot s of one with slot t of the other,
  each through a copy of its own, all bands shuffled together); for a batch of pairs, `party`
  is its side of the link-bit circuit (core/linkbit.py) on each pair's share difference, and
  `messages` (the Dice oracle's) each pair's share difference with its bits permuted
  (core/sharing.py `pair_messages`). S1 never holds a record's band key: it learns each band's
  count of distinct keys, which keys two members share and each key's size class, not which
  records hold them, nor which of one member's records collide.
- `ShareServer` (S2): the second XOR shares and each upload's seal key; `expand` opens the
  tokens S1 paired into each CLK's pairs sharing a key (de-duplicated across bands), which
  `fallback_split` (S1, which knows which records lack the fallback's fields) turns into the
  pairs S1 proposed when it held every record's keys (`record_blocking`, the tests'
  reference). S2 opens each token once (but where two matched keys' classes differ, or
  more than 16 records share a key), so it learns of each candidate pair the number of bands
  its records share (an approximate similarity: docs/privacy-design.md measures that view)
  and not which pairs came from one key. `party` and `messages` as S1's.
- `Combiner` (C): the popcounts; never a CLK nor a share. With `reveal="link-bit"` (the
  default) C computes each pair's Hamming bound from the popcounts, deals the circuit's
  triples and the bounds' shares, and learns from the servers' output shares each pair's link
  bit (and, with `buckets`, which cut-offs above the threshold its Dice reaches) and nothing
  else; S1 and S2 exchange masked gate inputs, a round an AND-depth (core/tworun.py). With
  `reveal="dice"`, the stepping stone kept as the tests' oracle, `decide` XORs the servers'
  permuted differences and learns each pair's exact Dice (an attack on that view crosses the
  bar: docs/privacy-design.md). Either way C keeps the pairs by the kernel's own test (same
  popcount pre-filter, same float64 score); the run's candidates are then solved and turned
  into links as a normal run's are (core/solve.py), a link-bit candidate scored by the lower
  end of its bucket (the threshold without buckets), so the links' scores are bounds, not
  Dice values.

core/tworun.py `run` drives them: C tells S1 which records lack the fallback CLK's left-out
fields (from the popcounts, core/fallback.py's rule), S1 joins, S2 expands, S1 splits the
pairs by the fallback's rule, S1 and S2 run the circuit
(or send messages) batch by batch, C decides, solves, and scores the links inside each group
(a few more pairs through S1 and S2: a group of three members holds a pair blocking may not
have proposed).

With a fallback CLK (schema `blindmatch.fallback`) every record's two CLKs are shared and
blocked the same way, each with band keys and shares of its own (CLK 0 the record-level one,
CLK 1 the fallback), and a pair is compared on the CLK the normal run scores it by
(`fallback.on_fallback`): blocking proposes record-level pairs between records that both have
the left-out fields, and fallback pairs where either lacks them. So with blocking that misses
no pair at or above the threshold the links are exactly the exhaustive run's
(tests/test_twoserver.py); with keyed blocking at r=20 the cost is the pairs blocking misses:
none in F1 on the benchmark's cells of 20,000-50,000 people (benchmarks/twoserver_quality.py,
docs/privacy-design.md).

What each role learns here beyond the design's option (b): S1 and S2 which records lack the
left-out fields, one bit a record the normal matcher reads from the popcounts too, the
candidate pairs (S2 expands them, S1 relays them to C and evaluates them), and which pairs
inside matched groups blocking did not propose (they are sent through the circuit to score
the links); S2 each candidate's count of shared bands; C those pairs' link bits (buckets), or
with the Dice oracle their exact Dice. S1 joins keys a range of bands at a time and checks
that matched keys are of one band.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from blindmatch.matcher.core import fallback as fallback_
from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.kernel import _check_threshold
from blindmatch.matcher.core.sharing import pair_messages

Keys = npt.NDArray[np.uint64]
Shares = npt.NDArray[np.uint8]
Rows = npt.NDArray[np.uint32]
Popcounts = npt.NDArray[np.int64]

RECORD, FALLBACK = 0, 1  # the CLKs of an upload
BAND_STEP = 64  # bands S1 collides in one sort (memory: rows x this many keys a side)
BATCH_PAIRS = 100_000  # pairs a message batch (memory: 2 x this x the CLK's bytes)


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


def colliding_pairs(keys_a: Keys, keys_b: Keys, band_step: int = BAND_STEP) -> tuple[Rows, Rows]:
    """Each pair (row of a, row of b) sharing a key in at least one band, once, in row order:
    for each run of `band_step` bands, both sides' keys sorted together by value and joined."""
    if keys_a.ndim != 2 or keys_b.ndim != 2 or keys_a.shape[1] != keys_b.shape[1]:
        raise ValueError("band keys must be (rows, bands) with as many bands on both sides")
    n_a, bands = keys_a.shape
    n_b = len(keys_b)
    found: list[npt.NDArray[np.uint64]] = []
    for lo in range(0, bands if n_a and n_b else 0, band_step):
        ka = keys_a[:, lo : lo + band_step].ravel()
        kb = keys_b[:, lo : lo + band_step].ravel()
        width = keys_a[:, lo : lo + band_step].shape[1]
        # Both sides sorted: the look-ups of a's keys in b's then walk b in order.
        order_a, order_b = np.argsort(ka), np.argsort(kb)
        sorted_a, sorted_b = ka[order_a], kb[order_b]
        start = np.searchsorted(sorted_b, sorted_a, side="left")
        counts = np.searchsorted(sorted_b, sorted_a, side="right") - start
        hit = np.flatnonzero(counts)
        if not len(hit):
            continue
        c = counts[hit]
        total = int(c.sum())
        row_a = (order_a[hit] // width).astype(np.uint64)
        at = np.repeat(start[hit] - (np.cumsum(c) - c), c) + np.arange(total)
        row_b = (order_b[at] // width).astype(np.uint64)
        found.append((np.repeat(row_a, c) << np.uint64(32)) | row_b)
    if not found:
        empty = np.empty(0, dtype=np.uint32)
        return empty, empty.copy()
    codes = _distinct(np.concatenate(found))
    return (codes >> np.uint64(32)).astype(np.uint32), (codes & np.uint64(0xFFFFFFFF)).astype(
        np.uint32
    )


def _distinct(codes: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
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

    def token_offsets(self) -> npt.NDArray[np.int64]:
        """Where each key's tokens start, in tokens (one past the end last)."""
        out = np.zeros(len(self.keys) + 1, dtype=np.int64)
        np.cumsum(slots(self.classes) * copies(self.classes), out=out[1:])
        return out

    def tokens(self) -> Shares:
        """(tokens, TOKEN_BYTES)."""
        return self.sealed.reshape(-1, TOKEN_BYTES)


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


def matched_keys(
    a: Sealed, b: Sealed, band_step: int = BAND_STEP
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(indexes into a's keys, into b's): each key both hold in the same band, a band range at
    a time (each band's keys are distinct on each side, so each matches at most one)."""
    if len(a.counts) != len(b.counts):
        raise ValueError("sealed band keys with different numbers of bands")
    ends_a = np.concatenate([[0], np.cumsum(a.counts)])
    ends_b = np.concatenate([[0], np.cumsum(b.counts)])
    got_a, got_b = [], []
    for lo in range(0, len(a.counts), band_step):
        hi = min(lo + band_step, len(a.counts))
        ka = a.keys[ends_a[lo] : ends_a[hi]]
        kb = b.keys[ends_b[lo] : ends_b[hi]]
        if not len(ka) or not len(kb):
            continue
        band_a = np.repeat(np.arange(lo, hi), a.counts[lo:hi])
        band_b = np.repeat(np.arange(lo, hi), b.counts[lo:hi])
        order_b = np.argsort(kb, kind="stable")
        sorted_b = kb[order_b]
        start = np.searchsorted(sorted_b, ka, side="left")
        counts = np.searchsorted(sorted_b, ka, side="right") - start
        hit = np.flatnonzero(counts)
        c = counts[hit]
        at = np.repeat(start[hit] - (np.cumsum(c) - c), c) + np.arange(int(c.sum()))
        ia, ib = np.repeat(hit, c), order_b[at]
        same = band_a[ia] == band_b[ib]  # equal keys of two bands: a 2^-64 chance
        got_a.append(ends_a[lo] + ia[same])
        got_b.append(ends_b[lo] + ib[same])
    if not got_a:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    return np.concatenate(got_a).astype(np.intp), np.concatenate(got_b).astype(np.intp)


def join(x: int, y: int, clk: int, a: Sealed, b: Sealed) -> Matched:
    """S1's join of two members' sealed band keys of a CLK: for each key both hold in a band,
    slot s of a's with slot t of b's, through a's copy t and b's copy s (modulo their copies:
    each token once where the classes agree), every band's pairs shuffled together (so S2
    cannot tell which pairs came from one key)."""
    ia, ib = matched_keys(a, b)
    sa, sb = slots(a.classes[ia]), slots(b.classes[ib])
    ca, cb = copies(a.classes[ia]), copies(b.classes[ib])
    per = sa * sb
    total = int(per.sum())
    key = np.repeat(np.arange(len(per)), per)
    within = np.arange(total) - np.repeat(np.cumsum(per) - per, per)
    s, t = within // sb[key], within % sb[key]
    at_a = a.token_offsets()[ia][key] + s * ca[key] + t % ca[key]
    at_b = b.token_offsets()[ib][key] + t * cb[key] + s % cb[key]
    order = np.random.default_rng(secrets.randbits(128)).permutation(total)
    return Matched(x, y, clk, a.tokens()[at_a[order]], b.tokens()[at_b[order]])


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


class ShareServer:
    """S2 (and S1's share side): one XOR share of each member's CLKs, `shares[member][clk]`,
    the key the two servers share for the pairs' permutations, and (S2) each member's seal
    key, which opens the rows S1 forwards."""

    def __init__(
        self,
        shares: Sequence[Sequence[Shares]],
        pair_key: bytes,
        seal_keys: Sequence[bytes] = (),
    ) -> None:
        self._shares = [[np.ascontiguousarray(s, dtype=np.uint8) for s in m] for m in shares]
        self._key = pair_key
        self._seal = list(seal_keys)

    def records(self, member: int) -> int:
        return len(self._shares[member][0])

    def expand(self, matched: Sequence[Matched], clks: int = 1) -> list[PairBatch]:
        """S2's expansion of what S1 matched: per pair of members and CLK (the first `clks`;
        every pair of members and CLK listed, with pairs or none), the pairs sharing a key in
        at least one band, once, in row order; ValueError for a token that does not open.
        `fallback_split` then applies the fallback's rule (whoever holds which records lack
        its fields: S1)."""
        if not self._seal:
            raise ValueError("S2 holds no seal keys")
        got: dict[tuple[int, int, int], list[npt.NDArray[np.uint64]]] = {}
        members = len(self._shares)
        for x in range(members):
            for y in range(x + 1, members):
                for clk in range(clks):
                    got[x, y, clk] = [np.empty(0, dtype=np.uint64)]
        for m in matched:
            x, y = m.member_a, m.member_b
            if (x, y, m.clk) not in got:
                raise ValueError(f"member_a/member_b/clk: {x}, {y}, {m.clk} not of the run")
            got[x, y, m.clk].append(expanded_pairs(m, (self._seal[x], self._seal[y]),
                                                   (self.records(x), self.records(y))))  # fmt: skip
        out = []
        for (x, y, clk), parts in sorted(got.items()):
            codes = _distinct(np.concatenate(parts))
            rows_a = (codes >> np.uint64(32)).astype(np.uint32)
            rows_b = (codes & np.uint64(0xFFFFFFFF)).astype(np.uint32)
            out.append(PairBatch(x, y, clk, rows_a, rows_b))
        return out

    def bits(self, clk: int) -> int:
        """The width of CLK `clk` in bits (public: the schema's)."""
        return 8 * int(self._shares[0][clk].shape[1])

    def differences(self, batch: PairBatch) -> Shares:
        """(pairs, width): each pair's share difference, unpermuted (the link-bit step's
        input: S1's and S2's XOR to a ^ b, which neither holds)."""
        a = self._shares[batch.member_a][batch.clk][batch.rows_a]
        out: Shares = a ^ self._shares[batch.member_b][batch.clk][batch.rows_b]
        return out

    def party(
        self, role: int, batch: PairBatch, circuit: linkbit.Circuit, setup: bytes
    ) -> linkbit.Party:
        """This server's side of the link-bit circuit on `batch`, from C's `setup`."""
        return linkbit.Party(role, circuit, self.differences(batch), setup)

    def messages(self, batch: PairBatch) -> Shares:
        """(pairs, width): each pair's share difference, permuted (core/sharing.py): the
        Dice-revealing step's message to C."""
        return pair_messages(
            self._shares[batch.member_a][batch.clk],
            self._shares[batch.member_b][batch.clk],
            batch.member_a,
            batch.member_b,
            batch.rows_a,
            batch.rows_b,
            self._key,
        )


class BlockingServer(ShareServer):
    """S1: S2's part (no seal keys), and every member's sealed band keys, `bands[member][clk]`
    (`Sealed`): each band's distinct keys, each with its rows sealed for S2."""

    def __init__(
        self, bands: Sequence[Sequence[SealedLike]], shares: Sequence[Sequence[Shares]],
        pair_key: bytes,
    ) -> None:  # fmt: skip
        super().__init__(shares, pair_key)
        self._bands = [[Sealed(b.counts, b.keys, b.classes, b.sealed) for b in m] for m in bands]
        if len(self._bands) != len(shares):
            raise ValueError("S1: band keys and shares of different numbers of members")

    def join(self, clks: int | None = None) -> list[Matched]:
        """Per pair of members and CLK (the first `clks`; None: every one), the keys both hold
        in a band with their sealed rows, shuffled: all S1 learns of the band keys is which
        distinct keys of two members are equal, and how many distinct keys each member has in
        each band."""
        out = []
        members = len(self._bands)
        for x in range(members):
            for y in range(x + 1, members):
                for clk in range(len(self._bands[x]) if clks is None else clks):
                    out.append(join(x, y, clk, self._bands[x][clk], self._bands[y][clk]))
        return out


def record_blocking(
    keys: Sequence[Sequence[Keys]], lacking: Sequence[npt.NDArray[np.bool_]] | None = None
) -> list[PairBatch]:
    """The cross-member pairs from every record's band keys, `keys[member][clk]` ((rows,
    bands)), as S1 proposed them when it held them (the reference the sealed join plus S2's
    expansion is tested against: the same pairs)."""
    out = []
    for x in range(len(keys)):
        for y in range(x + 1, len(keys)):
            if lacking is None:
                ia, ib = colliding_pairs(keys[x][RECORD], keys[y][RECORD])
                out.append(PairBatch(x, y, RECORD, ia, ib))
                continue
            lx, ly = lacking[x], lacking[y]
            for clk in (RECORD, FALLBACK):
                ia, ib = colliding_pairs(keys[x][clk], keys[y][clk])
                either = lx[ia] | ly[ib]
                keep = either if clk == FALLBACK else ~either
                out.append(PairBatch(x, y, clk, ia[keep], ib[keep]))
    return out


def default_buckets(threshold: float) -> tuple[float, ...]:
    """Three cut-offs evenly between the threshold and 1 (0.85, 0.9, 0.95 at 0.8): with the
    link bit alone the solver has no order and F1 drops (0.9906 -> 0.9873 on `messy`, 20,000
    people); with these it is the Dice run's (benchmarks/twoserver_quality.py)."""
    return tuple(round(threshold + k * (1 - threshold) / 4, 6) for k in (1, 2, 3))


class Combiner:
    """C: each member's popcounts, `popcounts[member][clk]`, and the threshold.

    `reveal` is what C learns of a pair: "link-bit" (the default) its link bit from the
    servers' circuit (core/linkbit.py) and, with `buckets` (cut-offs above the threshold;
    `default_buckets` unless given, () for the link bit alone), the highest cut-off its Dice
    reaches; "dice" its exact Dice from the servers' permuted
    differences (the stepping stone and the test oracle: docs/privacy-design.md measured that
    this view leaks). With link bits a candidate's score, for the solver and in the links, is
    the lower end of its bucket: the threshold, or the highest cut-off reached; a pair inside
    a group that does not reach the threshold scores 0.0 (C learns only that)."""

    def __init__(
        self,
        popcounts: Sequence[Sequence[Popcounts]],
        threshold: float,
        *,
        reveal: str = "link-bit",
        buckets: Sequence[float] | None = None,
    ) -> None:
        self._pops = [[np.asarray(p, dtype=np.int64) for p in m] for m in popcounts]
        self.threshold = _check_threshold(threshold)
        if not self.threshold > 0:
            raise ValueError("the two-server run needs a positive threshold")
        if reveal not in ("link-bit", "dice"):
            raise ValueError(f"C reveals 'link-bit' or 'dice', not {reveal!r}")
        self.reveal = reveal
        if buckets is None:
            buckets = default_buckets(self.threshold) if reveal == "link-bit" else ()
        cuts = sorted({_check_threshold(b) for b in buckets})
        if cuts and (cuts[0] <= self.threshold or reveal == "dice"):
            raise ValueError("score buckets: cut-offs above the threshold, with link bits")
        self.cutoffs = (self.threshold, *cuts)
        clks = {len(m) for m in self._pops}
        if len(clks) > 1:
            raise ValueError("C: every member must upload the same CLKs")
        self.has_fallback = clks == {2}

    def lacking(self) -> list[npt.NDArray[np.bool_]] | None:
        """Each member's records lacking the fallback's fields (fallback.py's rule), or None
        without a fallback CLK: what C tells S1."""
        if not self.has_fallback:
            return None
        return [fallback_.lacking_from_popcounts(m[RECORD], m[FALLBACK]) for m in self._pops]

    def scores(self, batch: PairBatch, m1: Shares, m2: Shares) -> npt.NDArray[np.float64]:
        """Each pair's Dice from the two servers' messages: 2|a & b| / (|a| + |b|) as the
        kernel computes it, |a| + |b| - Hamming being 2|a & b|; 0 for two empty CLKs."""
        if m1.shape != m2.shape or len(m1) != len(batch):
            raise ValueError("C: the two servers' messages differ in shape")
        hamming = np.bitwise_count(m1 ^ m2).sum(axis=1, dtype=np.int64)
        total = (
            self._pops[batch.member_a][batch.clk][batch.rows_a]
            + (self._pops[batch.member_b][batch.clk][batch.rows_b])
        )
        out = np.zeros(len(batch), dtype=np.float64)
        np.divide((total - hamming).astype(np.float64), total, out=out, where=total > 0)
        return out

    def decide(self, batch: PairBatch, m1: Shares, m2: Shares) -> Candidates:
        """The batch's pairs at or above the threshold, by the kernel's test: anonlink's
        popcount pre-filter |pa - pb| <= int(2 pa (1/t - 1)), then Dice >= t."""
        sims = self.scores(batch, m1, m2)
        pa = self._pops[batch.member_a][batch.clk][batch.rows_a]
        pb = self._pops[batch.member_b][batch.clk][batch.rows_b]
        width = 8 * m1.shape[1] if m1.ndim == 2 else 0
        delta = np.minimum((2 * pa).astype(np.float64) * (1.0 / self.threshold - 1.0), width)
        keep = (np.abs(pa - pb) <= delta.astype(np.int64)) & (sims >= self.threshold) & (pa > 0)
        n = int(keep.sum())
        return Candidates(
            sims[keep],
            np.full(n, batch.member_a, dtype=np.uint32),
            np.full(n, batch.member_b, dtype=np.uint32),
            batch.rows_a[keep].astype(np.uint32),
            batch.rows_b[keep].astype(np.uint32),
        )

    def deal(self, batch: PairBatch, n_bits: int) -> tuple[linkbit.Circuit, linkbit.Deal]:
        """The link-bit circuit for the batch and C's messages to S1 and S2: each pair's
        Hamming bounds (one a cut-off; from the popcounts, 0 where the pre-filter fails)
        shared, and the triples."""
        pa = self._pops[batch.member_a][batch.clk][batch.rows_a]
        pb = self._pops[batch.member_b][batch.clk][batch.rows_b]
        bounds = linkbit.hamming_bounds(pa, pb, self.cutoffs, n_bits)
        circuit = linkbit.circuit(n_bits, len(self.cutoffs))
        return circuit, linkbit.deal(circuit, bounds)

    def bucket_scores(self, bits: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
        """(pairs,): the highest cut-off each pair reaches, 0.0 for none (bits: (cut-offs,
        pairs), monotone down the cut-offs)."""
        reached = bits.sum(axis=0)
        out: npt.NDArray[np.float64] = np.asarray((0.0, *self.cutoffs))[reached]
        return out

    def decide_bits(self, batch: PairBatch, bits: npt.NDArray[np.bool_]) -> Candidates:
        """The batch's pairs whose link bit is set, scored by their bucket."""
        keep = bits[0]
        n = int(keep.sum())
        return Candidates(
            self.bucket_scores(bits[:, keep]),
            np.full(n, batch.member_a, dtype=np.uint32),
            np.full(n, batch.member_b, dtype=np.uint32),
            batch.rows_a[keep].astype(np.uint32),
            batch.rows_b[keep].astype(np.uint32),
        )


__all__ = [
    "FALLBACK",
    "RECORD",
    "BlockingServer",
    "Combiner",
    "Matched",
    "PairBatch",
    "Sealed",
    "ShareServer",
    "colliding_pairs",
    "join",
    "record_blocking",
]
