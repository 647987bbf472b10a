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
alone."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.twoblocking import PairBatch

Rows = npt.NDArray[np.uint32]
Indexes = npt.NDArray[np.uint64]
ROUNDS = 6
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

    def _round_trip(self, x: Indexes) -> Indexes:
        half = max(1, ((max(self.size - 1, 1)).bit_length() + 1) // 2)
        shift, mask = np.uint64(half), np.uint64((1 << half) - 1)
        left, right = x >> shift, x & mask
        for k in self.keys:
            left, right = right, left ^ (_mix(right ^ np.uint64(k)) & mask)
        out: Indexes = (left << shift) | right
        return out

    def at(self, positions: Indexes) -> Indexes:
        """The index of each of `positions` (each < size), all distinct for distinct ones."""
        out = self._round_trip(np.asarray(positions, np.uint64))
        past = np.flatnonzero(out >= self.size)
        while len(past):  # cycle walking: the network permutes a domain of up to 4 x size
            out[past] = self._round_trip(out[past])
            past = past[out[past] >= self.size]
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

    def __len__(self) -> int:
        return sum(len(a) * len(b) for a, b in self.blocks)

    def shuffled(self, rng: np.random.Generator) -> Cross:
        """The same pairs in a fresh order of `rng`'s."""
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

    def slice(self, offset: int, count: int) -> PairBatch:
        """The pairs at positions offset..offset + count (within the part), made now."""
        positions = np.arange(offset, offset + count, dtype=np.uint64)
        index = positions if self.order is None else self.order.at(positions)
        return PairBatch(self.member_a, self.member_b, self.clk, *self._rows(index))

    def split(self, size: int) -> Iterator[PairBatch]:
        """Every pair, `size` at a time, in order (as `PairBatch.split`)."""
        n = len(self)
        for lo in range(0, n, size):
            yield self.slice(lo, min(size, n - lo))

    def whole(self) -> PairBatch:
        """Every pair as explicit rows, in order (16 bytes a pair: for a part cut down, as a
        resumed one is, rpc/twoserver_resume.py)."""
        return self.slice(0, len(self))

    def contains(self, rows_a: Rows, rows_b: Rows) -> npt.NDArray[np.bool_]:
        """Whether each pair (rows_a[k], rows_b[k]) is one of the part's."""
        out = np.zeros(len(rows_a), bool)
        for a, b in self.blocks:
            out |= _within(a, rows_a) & _within(b, rows_b)
        return out

    def sides(self) -> Iterator[tuple[Rows, Rows]]:
        """Each block's rows of A and of B (the records in some pair)."""
        return iter(self.blocks)


def _within(ascending: Rows, rows: Rows) -> npt.NDArray[np.bool_]:
    if not len(ascending):
        return np.zeros(len(rows), bool)
    at = np.minimum(np.searchsorted(ascending, rows), len(ascending) - 1)
    out: npt.NDArray[np.bool_] = ascending[at] == rows
    return out


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


__all__ = ["ROUNDS", "Cross", "Order", "cross_parts"]
