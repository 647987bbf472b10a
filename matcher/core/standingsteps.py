"""A standing partner's conversion and a query against it (core/standing.py,
core/standingquery.py) as each server's own steps, for S1 and S2 in two processes
(rpc/twoserver_standing.py drives them over BlockExchange; docs/protocol.md "A query against
a standing partner over gRPC").

Each step function is a generator of swaps: it yields this server's next message and is sent
the other server's message of the same step (both send, then both read: neither waits on the
other's message to make its own). `piece_steps` converts one piece of the partner
(`standing.CHUNK` records: their CLK bits and popcounts by daBits, checked, then D_B's share
opened) into a `Converting`; `query_steps` converts a query's bits and popcounts the same way,
runs core/standingquery.py's `Query` (nonce, open, check, finish) and returns the query's
`denseblock.Blocks`: one block of every query record x every partner record, its H shares
from the query and the popcounts' XOR and additive shares, which the part's margin batches
read as they read a part's blocks (rpc/twoserver_margin.py `inputs`). `DealRefused` where C's
deal fails a check, at the same step on both servers.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import densearith, denseblock, densemargin, ring64, standing
from blindmatch.matcher.core import standingquery as sq
from blindmatch.matcher.core.linkbit import SEED_BYTES
from blindmatch.matcher.core.margincircuit import Plan

Steps = Generator[bytes, bytes, None]
U64 = npt.NDArray[np.uint64]
EMPTY = np.zeros(0, np.uint64)


def split(message: bytes, sizes: Sequence[int], what: str, view: bool = False,
          ) -> list[bytes]:  # fmt: skip
    """The other server's message of a step, cut where this server's own parts end
    (`ValueError` where it does not fit); `view`: each part a memoryview of `message`, not a
    copy (a piece's setup and first message: tens of MB, convspeed)."""
    if len(message) != sum(sizes):  # (a role of another version: bytes32 halved the bits')
        who = "C's" if what == "setup" else "the other server's"
        raise ValueError(f"{who} {what} is {len(message):,} bytes, not {sum(sizes):,}")
    whole = memoryview(message) if view else message
    out: list[Any] = []  # (memoryviews where `view`: read as the bytes are)
    at = 0
    for n in sizes:
        out.append(whole[at : at + n])
        at += n
    return out


def piece_setup(records: int, widths: Sequence[int], p: Plan, role: int) -> list[int]:
    """A conversion piece's setup for server `role`, in its parts: the mask seed, the daBits
    of the piece's CLK bits, of its popcounts."""
    bits = standing.bits_size(records, widths).setup_bytes[role]
    return [SEED_BYTES, bits, densemargin.pops_size(p, records).setup_bytes[role]]


def query_setup(rows: int, records: int, widths: Sequence[int], p: Plan, role: int) -> list[int]:
    """A query's setup for server `role`, in its parts: the daBits of its bits, of its
    popcounts, then its masks and products (`standingquery.setup_bytes`)."""
    bits = standing.bits_size(rows, widths).setup_bytes[role]
    pops = densemargin.pops_size(p, rows).setup_bytes[role]
    return [bits, pops, sq.setup_bytes(rows, records, widths, role)]


@dataclass
class Converting:
    """A server's standing partner of `records` records as its pieces are converted
    (`piece_steps`, each into its rows of arrays made once at the first: nothing is copied
    when the last is done), whole once `pieces` are (`partner`); without `keep_mask`, no
    [M_B] (`standing.Partner.forget_mask`: regenerated at each query, never kept)."""

    role: int
    widths: tuple[int, ...]
    plan: Plan
    pieces: int
    records: int = 0
    seed: bytes = b""
    done: int = 0
    side: standing.Partner | None = None  # the arrays being filled
    partner: standing.Partner | None = None
    keep_mask: bool = True  # False: no [M_B] kept, not even piece by piece (`Partner.forget_mask`)

    def bytes_kept(self) -> int:
        got = self.partner or self.side
        return got.bytes_kept() if got is not None else 0

    def _arrays(self, seed: bytes) -> standing.Partner:
        if self.side is None:
            n, side = self.records, standing.Partner(self.role, self.widths, seed)
            side.d = [np.zeros((n, w), np.uint16) for w in self.widths]
            if self.keep_mask:
                side.mask = [np.zeros((n, w), np.uint32) for w in self.widths]
            side.pops = [np.zeros(n, np.uint32) for _ in self.widths]
            side.arith_pops = [np.zeros(n, np.uint64) for _ in self.widths]
            self.side = side
        return self.side

    def finish(self, xor_pops: Sequence[npt.ArrayLike]) -> standing.Partner:
        """The partner whole (`xor_pops`: this server's XOR shares of every record's
        popcounts, the upload's)."""
        side = self._arrays(self.seed)
        side.xor_pops = [np.asarray(q, np.uint32) for q in xor_pops]
        self.partner, self.side = side, None
        return side


Converted = Generator[bytes, bytes, tuple[U64, U64, bytes]]


def _conversions(role: int, bits: ring64.Size, pops: ring64.Size, setups: Sequence[bytes],
                 xor_bits: npt.ArrayLike, xor_pops: npt.ArrayLike,
                 more_nonce: bytes = b"") -> Converted:  # fmt: skip
    """Both daBit conversions of a piece or a query (its bits, its popcounts) side by side:
    nonces (and `more_nonce`, a query's own), the first messages, the checks' digests; this
    server's converted bits and popcount bits, and the other's `more_nonce`."""
    one = ring64.Party(role, bits, setups[0])
    two = ring64.Party(role, pops, setups[1])
    mine = [one.nonce(), two.nonce(), more_nonce]
    theirs = split((yield b"".join(mine)), [len(x) for x in mine], "nonces")
    one.agree(theirs[0])
    two.agree(theirs[1])
    mine = [one.first(xor_bits), two.first(xor_pops)]
    theirs_first = split((yield b"".join(mine)), [len(x) for x in mine], "conversion", True)
    got = (one.converted(theirs_first[0]), two.converted(theirs_first[1]))
    mine = [one.second(EMPTY, EMPTY), two.second(EMPTY, EMPTY)]
    digests = split((yield b"".join(mine)), [len(x) for x in mine], "digests")
    one.products(digests[0])  # DealRefused where C's daBits are not
    two.products(digests[1])
    return got[0], got[1], theirs[2]


def _unpack(clks: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
    return np.hstack([np.unpackbits(np.asarray(c, np.uint8), axis=1, bitorder="little")
                      for c in clks])  # fmt: skip


def piece_steps(into: Converting, piece: int, setup: bytes,
                shares: Sequence[npt.NDArray[np.uint8]],
                popshares: Sequence[npt.NDArray[np.integer]], start: int) -> Steps:  # fmt: skip
    """Piece `piece` of the partner converted (`shares`, `popshares`: this server's of the
    piece's records, from record `start`, a CLK each) into `into`; `ValueError` for a setup
    that does not fit or a piece out of order, `DealRefused` where C's daBits fail the
    check."""
    rows, widths, role = len(shares[0]), into.widths, into.role
    if piece != into.done or piece >= into.pieces:
        raise ValueError(f"piece {piece}: the conversion is at piece {into.done} of {into.pieces}")
    seed, bits_setup, pops_setup = split(setup, piece_setup(rows, widths, into.plan, role),
                                         "setup", True)  # fmt: skip
    seed = bytes(seed)  # (kept: not a view of the setup)
    if piece and seed != into.seed:
        raise ValueError(f"piece {piece}: a mask seed that is not piece 0's")
    bits = standing.bits_size(rows, widths)
    pops = densemargin.pops_size(into.plan, rows)
    got, got_pops, _ = yield from _conversions(
        role, bits, pops, (bits_setup, pops_setup), _unpack(shares).ravel(),
        densemargin.pop_bits(into.plan, popshares).ravel(),
    )  # fmt: skip
    converted = standing.bits_to_shares(got, rows, widths)
    side = standing.Partner(role, widths, seed)
    d, mask, message = standing._d_share(side, piece, rows, converted)
    opened = standing._opened(side, d, (yield message))
    into.seed = seed
    side, at = into._arrays(seed), slice(start, start + rows)
    arith = densemargin.pop_values(into.plan, got_pops, rows)
    for c in range(len(widths)):
        side.d[c][at] = opened[c]
        if into.keep_mask:
            side.mask[c][at] = mask[c]
        side.pops[c][at] = converted[c].sum(axis=1, dtype=np.uint32)
        side.arith_pops[c][at] = arith[c]
    into.done += 1


class _Held:
    """A query's H shares as one of a part's blocks (`denseblock.Blocks.blocks`): what the
    margin's `gather` (or, a fallback part's, `Blocks.inputs`) reads of it."""

    def __init__(self, query: sq.Query, rows: int, records: int) -> None:
        self._query = query
        self.role = query.role
        self.shape = densearith.Shape(rows, records, query.partner.widths)

    def hamming(self, c: int) -> npt.NDArray[np.uint16]:
        return self._query.hamming(c)


def query_steps(partner: standing.Partner, p: Plan, setup: bytes,
                shares: Sequence[npt.NDArray[np.uint8]],
                popshares: Sequence[npt.NDArray[np.integer]],
                out: list[denseblock.Blocks], clk: int = 0) -> Steps:  # fmt: skip
    """A query (`shares`, `popshares`: this server's of its records, a CLK each) against the
    converted `partner`: its bits and popcounts converted, the query's products checked
    (`DealRefused` otherwise), then its `Blocks` appended to `out`: for the rule's margin
    (both CLKs' H shares, the popcounts' XOR and additive shares); or (`clk` 1, a query's
    fallback part: fallstand) on the fallback CLK alone (`Partner.view`: its bits converted
    and its products made, not the record CLK's), the block its H shares and popcounts' XOR
    shares, what the kernel's test on a block's H shares reads (core/gmwsum.py
    `sum_circuit`). The popcounts are converted as the margin's plan `p` reads them either
    way (a query's few records)."""
    rows, n, role = len(shares[0]), partner.records, partner.role
    if clk:
        partner, shares = partner.view(clk), [shares[clk]]
    widths = partner.widths
    bits_setup, pops_setup, own = split(setup, query_setup(rows, n, widths, p, role), "setup")
    query = sq.Query(role, partner, rows, own)
    got, got_pops, nonce = yield from _conversions(
        role, standing.bits_size(rows, widths), densemargin.pops_size(p, rows),
        (bits_setup, pops_setup), _unpack(shares).ravel(),
        densemargin.pop_bits(p, popshares).ravel(), query.nonce(),
    )  # fmt: skip
    query.agree(nonce)
    theirs = yield query.open(standing.bits_to_shares(got, rows, widths))
    query.finish((yield query.check(theirs)))  # DealRefused where Z or Z' is not
    arith = densemargin.pop_values(p, got_pops, rows)
    mine = [popshares[clk]] if clk else popshares
    xor = [np.concatenate([np.asarray(q, np.uint32), partner.xor_pops[c]])
           for c, q in enumerate(mine)]  # fmt: skip
    sides = [(np.arange(rows, dtype=np.uint32), np.arange(n, dtype=np.uint32))]
    held = cast(densearith.Party, _Held(query, rows, n))  # read as a block's party is
    if clk:  # the kernel's test reads no additive popcounts
        out.append(denseblock.Blocks(sides, [held], [xor]))
        return
    both = [np.concatenate([arith[c], partner.arith_pops[c]]) for c in range(len(widths))]
    out.append(denseblock.Blocks(sides, [held], [xor], [both]))


def drive(s1: Steps, s2: Steps) -> None:
    """Both servers' steps in this process, message for message (tests)."""
    a, b = next(s1), next(s2)
    while True:
        try:
            a_next = s1.send(b)
        except StopIteration:
            a_next = None
        try:
            b_next = s2.send(a)
        except StopIteration:
            b_next = None
        if a_next is None or b_next is None:
            if (a_next is None) != (b_next is None):
                raise ValueError("the two servers' steps ended apart")
            return
        a, b = a_next, b_next


__all__ = ["Converting", "Steps", "drive", "piece_setup", "piece_steps", "query_setup",
           "query_steps", "split"]  # fmt: skip
