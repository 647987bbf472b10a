"""An unblocked pair of members' pairs, made in slices (core/exhaustive.py `every_pair`).

S1 compares a pair of members within its cap without blocking: every pair of rows through
the circuit. Held as explicit row arrays, with the proposal's permutation and sorted keys,
that was 16 bytes a pair (256 MB while a run at 16 million pairs lasts; 536 MB of peak RSS
proposing it, 1,985 MB at 64 million: docs/performance.md). A `Cross` holds each side's rows
instead (a part is one or two blocks, each every row of one set of A's rows with every row of
one set of B's: the fallback's split of A x B, core/twoblocking.py `fallback_split`) and its
order, a keyed permutation of the positions: 4 bytes a row and a few keys, whatever the
product. The rows at positions offset..offset + count are made when C asks for them
(`slice`), a batch at a time, and a pair C names is S1's if its rows are in one block
(`contains`): no sorted keys.

The order (`shuffled`): a part's pairs in a fresh order C does not hold, as a blocked part's
are (core/proposal.py: a position in a part says nothing of its rows). Position p is
index `order(p)` of the blocks in row order; `order` is a balanced Feistel network of
`ROUNDS` rounds on the smallest even number of bits that holds the part's size, each round
keyed by 64 bits from S1's generator (the one that permutes a blocked part, seeded from
`secrets`), walked again from any index past the size (cycle walking: a permutation of
0..size - 1; the network's domain is under 4 x size, so at most four tries on average).
Like `rng.permutation` of a blocked part it is a fresh permutation from a 128-bit secret
seed, not a cipher C could not in principle invert; unlike it, it is computed for a slice
alone.

A part cut down (`leaving_out`: a resumed run's, rpc/twoserver_resume.py, less the pairs
S1's budget counted in the run a failure cut) stays a `Cross`: its pairs are made `STEP`
positions at a time to find those counted, and a bit a position (`Left`) records which are
left. Its positions are those left, in the order the whole part's were (the k-th is the k-th
left of the whole part): the pairs and order of the whole part's explicit rows less the
counted ones, at an eighth of a byte a pair instead of 16 bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.twoblocking import PairBatch

Rows = npt.NDArray[np.uint32]
Indexes = npt.NDArray[np.uint64]
Bools = npt.NDArray[np.bool_]
ROUNDS = 6
CHUNK = 1 << 13  # positions a count of those left covers (`Left.before`)
STEP = 1 << 18  # positions made at a time to cut a part down (`Cross.leaving_out`; ~16 MB)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(x: Indexes) -> Indexes:
    """splitmix64's finaliser: each output bit depends on every input bit."""
    x = (x ^ (x >> np.uint64(30))) * _M1
    x = (x ^ (x >> np.uint64(27))) * _M2
    out: Indexes = x ^ (x >> np.uint64(31))
    return out


@dataclass(frozen=True)
class Order:
    """A keyed permutation of 0..size - 1 (`at`), computed for any positions alone."""

    size: int
    keys: tuple[int, ...]  # one a round

    @staticmethod
    def fresh(size: int, rng: np.random.Generator) -> Order:
        keys = rng.integers(0, 2**64, size=ROUNDS, dtype=np.uint64, endpoint=False)
        return Order(size, tuple(int(k) for k in keys))

    def _halves(self) -> tuple[np.uint64, np.uint64]:
        half = max(1, ((max(self.size - 1, 1)).bit_length() + 1) // 2)
        return np.uint64(half), np.uint64((1 << half) - 1)

    def _round_trip(self, x: Indexes) -> Indexes:
        shift, mask = self._halves()
        left, right = x >> shift, x & mask
        for k in self.keys:
            left, right = right, left ^ (_mix(right ^ np.uint64(k)) & mask)
        out: Indexes = (left << shift) | right
        return out

    def _back_trip(self, x: Indexes) -> Indexes:
        """`_round_trip` undone: its rounds in reverse."""
        shift, mask = self._halves()
        left, right = x >> shift, x & mask
        for k in reversed(self.keys):
            left, right = right ^ (_mix(left ^ np.uint64(k)) & mask), left
        out: Indexes = (left << shift) | right
        return out

    def at(self, positions: Indexes) -> Indexes:
        """The index of each of `positions` (each < size), all distinct for distinct ones."""
        return self._walk(self._round_trip, positions)

    def position(self, indexes: Indexes) -> Indexes:
        """The position of each of `indexes` (each < size): `at` undone."""
        return self._walk(self._back_trip, indexes)

    def _walk(self, trip: Callable[[Indexes], Indexes], x: Indexes) -> Indexes:
        out = trip(np.asarray(x, np.uint64))
        past = np.flatnonzero(out >= self.size)
        while len(past):  # cycle walking: the network permutes a domain of up to 4 x size
            out[past] = trip(out[past])
            past = past[out[past] >= self.size]
        return out


@dataclass(frozen=True)
class Left:
    """Which of a part's positions are left (a bit a position, little-endian bytes, 1: left)
    and how many are left before each `CHUNK` of positions (`before`, one count more than
    the chunks), so that the k-th left is found by a binary search and a chunk's bits."""

    bits: npt.NDArray[np.uint8]
    before: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.before[-1])

    def positions(self, offset: int, count: int) -> Indexes:
        """The positions of the left ones offset..offset + count, ascending."""
        first = int(np.searchsorted(self.before, offset, side="right")) - 1
        last = int(np.searchsorted(self.before, offset + count, side="left"))
        bits = np.unpackbits(self.bits[first * (CHUNK // 8) : last * (CHUNK // 8)],
                             bitorder="little")  # fmt: skip
        at = np.flatnonzero(bits).astype(np.uint64) + np.uint64(first * CHUNK)
        skip = offset - int(self.before[first])
        return at[skip : skip + count]

    def has(self, positions: Indexes) -> Bools:
        """Whether each of `positions` is left."""
        byte = self.bits[positions >> np.uint64(3)] >> (positions & np.uint64(7)).astype(np.uint8)
        out: Bools = (byte & np.uint8(1)).astype(bool)
        return out


@dataclass(frozen=True)
class Cross:
    """Pairs of `member_a`'s and `member_b`'s rows on CLK `clk`: each block (rows of A, rows
    of B, both ascending) every pair of its two sets, the blocks one after the other in row
    order, then in `order` (None: that row order)."""

    member_a: int
    member_b: int
    clk: int
    blocks: tuple[tuple[Rows, Rows], ...]
    order: Order | None = None
    left: Left | None = None  # a part cut down: the positions of the whole left (`leaving_out`)

    def __len__(self) -> int:
        return self._whole() if self.left is None else len(self.left)

    def _whole(self) -> int:
        return sum(len(a) * len(b) for a, b in self.blocks)

    def shuffled(self, rng: np.random.Generator) -> Cross:
        """The same pairs in a fresh order of `rng`'s (of a part not cut down)."""
        if self.left is not None:
            raise ValueError("a part cut down keeps the order it was cut down in")
        return Cross(self.member_a, self.member_b, self.clk, self.blocks,
                     Order.fresh(len(self), rng))  # fmt: skip

    def _rows(self, index: Indexes) -> tuple[Rows, Rows]:
        rows_a, rows_b = np.empty(len(index), np.uint32), np.empty(len(index), np.uint32)
        start = 0
        for a, b in self.blocks:
            end = start + len(a) * len(b)
            here = np.flatnonzero((index >= start) & (index < end))
            if len(here) and len(b):
                q = index[here] - np.uint64(start)
                rows_a[here] = a[q // np.uint64(len(b))]
                rows_b[here] = b[q % np.uint64(len(b))]
            start = end
        return rows_a, rows_b

    def _made(self, positions: Indexes) -> PairBatch:
        """The pairs at `positions` of the whole part, made now."""
        index = positions if self.order is None else self.order.at(positions)
        return PairBatch(self.member_a, self.member_b, self.clk, *self._rows(index))

    def slice(self, offset: int, count: int) -> PairBatch:
        """The pairs at positions offset..offset + count (within the part), made now."""
        if self.left is not None:
            return self._made(self.left.positions(offset, count))
        return self._made(np.arange(offset, offset + count, dtype=np.uint64))

    def leaving_out(self, counted: Callable[[Rows, Rows], Bools]) -> Cross:
        """The part less the pairs `counted` marks (of rows_a, rows_b), each left one in its
        place in the order (a position after those left before it): made `STEP` positions at
        a time, a bit a position kept."""
        n = self._whole()
        chunks = -(-n // CHUNK)
        bits, per_chunk = np.zeros(chunks * (CHUNK // 8), np.uint8), np.zeros(chunks, np.int64)
        for lo in range(0, n, STEP):
            positions = np.arange(lo, min(lo + STEP, n), dtype=np.uint64)
            batch = self._made(positions)
            keep = ~counted(batch.rows_a, batch.rows_b)
            if self.left is not None:
                keep &= self.left.has(positions)
            packed = np.packbits(keep, bitorder="little")
            bits[lo // 8 : lo // 8 + len(packed)] = packed
            per_chunk[lo // CHUNK : lo // CHUNK + -(-len(keep) // CHUNK)] = np.add.reduceat(
                keep.view(np.uint8), np.arange(0, len(keep), CHUNK), dtype=np.int64
            )
        before = np.concatenate([np.zeros(1, np.int64), np.cumsum(per_chunk)])
        return replace(self, left=Left(bits, before))

    def split(self, size: int) -> Iterator[PairBatch]:
        """Every pair, `size` at a time, in order (as `PairBatch.split`)."""
        n = len(self)
        for lo in range(0, n, size):
            yield self.slice(lo, min(size, n - lo))

    def whole(self) -> PairBatch:
        """Every pair as explicit rows, in order (16 bytes a pair)."""
        return self.slice(0, len(self))

    def contains(self, rows_a: Rows, rows_b: Rows) -> Bools:
        """Whether each pair (rows_a[k], rows_b[k]) is one of the part's (of a part cut
        down, one left)."""
        out = np.zeros(len(rows_a), bool)
        index = np.zeros(len(rows_a), np.uint64)
        start = 0
        for a, b in self.blocks:
            in_a, at_a = _within(a, rows_a)
            in_b, at_b = _within(b, rows_b)
            here = in_a & in_b & ~out  # (the blocks hold no pair twice)
            index[here] = np.uint64(start) + at_a[here] * np.uint64(len(b)) + at_b[here]
            out |= here
            start += len(a) * len(b)
        if self.left is not None and out.any():
            found = np.flatnonzero(out)
            at = index[found] if self.order is None else self.order.position(index[found])
            out[found] = self.left.has(at)
        return out

    def sides(self) -> Iterator[tuple[Rows, Rows]]:
        """Each block's rows of A and of B (the records in some pair; of a part cut down, in
        some pair of the whole part)."""
        return iter(self.blocks)


def _within(ascending: Rows, rows: Rows) -> tuple[Bools, Indexes]:
    """Whether each of `rows` is one of `ascending`, and where."""
    if not len(ascending):
        return np.zeros(len(rows), bool), np.zeros(len(rows), np.uint64)
    at = np.minimum(np.searchsorted(ascending, rows), len(ascending) - 1)
    return ascending[at] == rows, at.astype(np.uint64)


def cross_parts(
    member_a: int,
    member_b: int,
    records: tuple[int, int],
    lacking: Sequence[npt.NDArray[np.bool_]] | None,
    record: int,
    fallback: int,
) -> list[Cross]:
    """All of A x B as parts: on the `record` CLK, or with `lacking` (each member's records
    lacking the fallback's fields) split as `fallback_split` splits blocked pairs: on the
    record-level CLK where neither record lacks them, on the `fallback` CLK where either does
    (A's lacking with every row of B, then A's others with B's lacking)."""
    n_a, n_b = records
    every_a, every_b = np.arange(n_a, dtype=np.uint32), np.arange(n_b, dtype=np.uint32)
    if lacking is None:
        return [Cross(member_a, member_b, record, ((every_a, every_b),))]
    la, lb = np.asarray(lacking[member_a], bool), np.asarray(lacking[member_b], bool)
    ok_a, ok_b = every_a[~la], every_b[~lb]
    return [
        Cross(member_a, member_b, record, ((ok_a, ok_b),)),
        Cross(member_a, member_b, fallback, ((every_a[la], every_b), (ok_a, every_b[lb]))),
    ]


__all__ = ["CHUNK", "ROUNDS", "STEP", "Cross", "Left", "Order", "cross_parts"]
