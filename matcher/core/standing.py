"""A standing partner upload's CLK bits converted once for every later query compared whole
against it (issue 18 (b); docs/privacy-design.md "A query against a standing partner,
converted once"). core/standingquery.py is a query's side; this module is what S1, S2 and C
keep of the partner between queries.

Once per partner upload (per S1-S2 pair), `convert` in this process, C dealing:

1. the partner's CLK bits b = b1 ^ b2 (every record, every CLK) to additive shares [B] mod
   2^32 by daBits (`bits_size`; mod 2^64 before bytes32), checked by core/ring64.py's
   sacrifice (`DealRefused` otherwise), `CHUNK` records a deal;
2. a persistent mask M_B (N x L a CLK, uniform mod 2^32): each server's share from its own
   32-byte seed from C (`deal`; so C knows M_B, as core/densearith.py's deal, and
   regenerates it a slice at a time for each query's deal, core/standingrows.py
   `stream_times`, or keeps it, `Standing.keep`). M_B is never
   opened, nor any combination of it: core/standingquery.py's check is a sacrifice against
   a fresh spare, not densearith's bilinear check (which opens beta^T M_B: with M_B reused,
   a few queries' openings would give M_B and so B from D_B);
3. D_B = [B] - [M_B] mod 2^k (k = L.bit_length()) opened between S1 and S2, 2 bytes a bit
   each way, and kept by both: uniform, M_B's low k bits pad it;
4. each record's popcounts: [|b|] mod 2^32 (the sum of its [B] row), and the popcounts'
   additive shares mod 2^64 for the rule's margin (core/densemargin.py `convert_pops`),
   beside the XOR shares the upload brought.

What a server keeps (`Partner`): D_B (2 bytes a bit), its [M_B] (4 bytes a bit; or, after
`Partner.forget_mask`, regenerated from its 32-byte seed at each query, an AES stream of 4
bytes a bit), 4 + 8 + 4 bytes a record a CLK of popcounts: `Partner.bytes_kept`. A query's
products against them are core/standingrows.py's (the native kernel, or numpy's einsum).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import densemargin, linkbit, ring64
from blindmatch.matcher.core.linkbit import SEED_BYTES, prg
from blindmatch.matcher.core.margincircuit import Plan

CHUNK = 1024  # partner records a conversion deal (and a regenerated piece of M_B)
U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
Clock = dict[str, float]


def chunks(records: int) -> list[tuple[int, int]]:
    """The partner's records `CHUNK` at a time, (start, stop)."""
    return [(at, min(records, at + CHUNK)) for at in range(0, records, CHUNK)]


def mask_share(seed: bytes, piece: int, rows: int, widths: Sequence[int]) -> list[U32]:
    """A server's share of M_B on chunk `piece` (`rows` records), a CLK each (rows, L), from
    its seed (a seed a chunk, SHA-256 of the seed and the chunk's number: any chunk alone)."""
    own = hashlib.sha256(seed + piece.to_bytes(8, "little")).digest()
    total = rows * sum(widths)
    raw = prg(own, (total + 1) // 2).view(np.uint32)[:total]
    out, at = [], 0
    for w in widths:
        out.append(raw[at : at + rows * w].reshape(rows, w))
        at += rows * w
    return out


@dataclass
class Standing:
    """C's record of a standing partner: both servers' mask seeds (`to_s1`, `to_s2`: what it
    sends each, once), the partner's records and CLK widths; with `keep`, M_B itself (4
    bytes a bit at C, rather than both seeds' AES streams again each query)."""

    to_s1: bytes
    to_s2: bytes
    records: int
    widths: tuple[int, ...]
    kept: dict[int, list[U32]] | None = None
    before: int = 0  # a `view`'s: the bits a record of the CLKs ahead of its one

    def view(self, c: int) -> Standing:
        """CLK `c` alone (a query's fallback part, fallstand): its mask regenerated from the
        same seeds past the CLKs before it (core/standingrows.py `stream_times` `before`)."""
        kept = None if self.kept is None else {k: [v[c]] for k, v in self.kept.items()}
        return Standing(self.to_s1, self.to_s2, self.records, (self.widths[c],), kept,
                        sum(self.widths[:c]))  # fmt: skip

    def mask(self, piece: int) -> list[U32]:
        """M_B on chunk `piece`, a CLK each (C alone can: it holds both seeds; not of a
        `view`, whose kept M_B or streams a query reads)."""
        if self.kept is not None and piece in self.kept:
            return self.kept[piece]
        if self.before:
            raise ValueError("a standing partner's view regenerates no mask a chunk at a time")
        start, stop = chunks(self.records)[piece]
        one = mask_share(self.to_s1, piece, stop - start, self.widths)
        two = mask_share(self.to_s2, piece, stop - start, self.widths)
        return [x + y for x, y in zip(one, two, strict=True)]

    def keep(self) -> None:
        """C keeps M_B between queries."""
        self.kept = {}
        self.kept = {k: self.mask(k) for k in range(len(chunks(self.records)))}


def deal(records: int, widths: Sequence[int], seeds: tuple[bytes, bytes] | None = None,
         ) -> Standing:  # fmt: skip
    """C: a standing partner's mask seeds; `seeds` fixed only by tests."""
    if records < 1 or not widths or any(w < 8 or w % 8 or w > 1 << 15 for w in widths):
        raise ValueError(f"a standing partner of {records} records, CLKs of {widths} bits")
    s1, s2 = seeds or (secrets.token_bytes(SEED_BYTES), secrets.token_bytes(SEED_BYTES))
    return Standing(s1, s2, records, tuple(int(w) for w in widths))


@dataclass
class Partner:
    """A server's standing partner (role 0 S1, 1 S2): per CLK, D_B (opened, mod 2^k, (N, L)),
    its [M_B] (mod 2^32, (N, L)), its [|b|] (mod 2^32), its XOR shares of the popcounts (the
    upload's) and their additive shares mod 2^64 (`convert_pops`)."""

    role: int
    widths: tuple[int, ...]
    seed: bytes
    d: list[U16] = field(default_factory=list)
    mask: list[U32] = field(default_factory=list)
    pops: list[U32] = field(default_factory=list)
    xor_pops: list[U32] = field(default_factory=list)
    arith_pops: list[U64] = field(default_factory=list)
    before: int = 0  # a `view`'s: the bits a record of the CLKs ahead of its one

    def view(self, c: int) -> Partner:
        """CLK `c` alone, the same arrays (a query's fallback part, fallstand); without a
        kept [M_B], its share regenerated past the CLKs before it (`stream_times` `before`)."""
        return Partner(
            self.role, (self.widths[c],), self.seed, [self.d[c]],
            [self.mask[c]] if self.mask else [], [self.pops[c]], [self.xor_pops[c]],
            [self.arith_pops[c]], sum(self.widths[:c]),
        )  # fmt: skip

    @property
    def records(self) -> int:
        return len(self.d[0]) if self.d else 0

    def levels(self, c: int) -> int:
        return self.widths[c].bit_length()

    def forget_mask(self) -> None:
        """Keep no [M_B]: each query regenerates this server's share from its seed instead (an
        AES stream of 4 bytes a bit a query, core/standingrows.py `stream_times`), 4,128
        rather than 12,320 bytes a record at two 1,024-bit CLKs."""
        self.mask = []

    def bytes_kept(self) -> int:
        """What this server keeps of the partner for its queries."""
        arrays: list[npt.NDArray[np.unsignedinteger]] = [
            *self.d, *self.mask, *self.pops, *self.xor_pops, *self.arith_pops
        ]  # fmt: skip
        return sum(int(a.nbytes) for a in arrays) + len(self.seed)


def _unpack(clks: Sequence[npt.NDArray[np.uint8]]) -> npt.NDArray[np.uint8]:
    """(records, sum L): a server's XOR shares of each record's CLK bits, CLK after CLK."""
    return np.hstack([np.unpackbits(np.asarray(c, np.uint8), axis=1, bitorder="little")
                      for c in clks])  # fmt: skip


def bits_size(rows: int, widths: Sequence[int]) -> ring64.Size:
    """The daBits of `rows` records' CLK bits (a piece of the partner, a query's records):
    mod 2^32, 4 bytes a value (bytes32), as everything read of [bits] is (kept mod 2^32, D_B
    and H mod 2^k)."""
    return ring64.Size(rows * sum(widths), 0, width=4)


def bits_to_shares(got: ring64.Ring, rows: int, widths: Sequence[int]) -> list[U32]:
    """ring64's converted bits (rows x sum L, CLK after CLK a record) as [bits] mod 2^32, a
    CLK each (rows, L)."""
    flat = got.astype(np.uint32).reshape(rows, sum(widths))
    out, at = [], 0
    for w in widths:
        out.append(np.ascontiguousarray(flat[:, at : at + w]))
        at += w
    return out


def convert_bits(clks: tuple[Sequence[npt.NDArray[np.uint8]], Sequence[npt.NDArray[np.uint8]]],
                 widths: Sequence[int], t: linkbit.Transcript, clock: Clock | None = None,
                 ) -> tuple[list[U32], list[U32]]:  # fmt: skip
    """C deals daBits for every bit of `clks` (S1's, S2's XOR shares, a CLK each); S1 and
    S2 convert them and check the deal (core/ring64.py `exchange`, `DealRefused`): each
    server's [bits] mod 2^32 a CLK."""
    rows = len(clks[0][0])
    size = bits_size(rows, widths)
    dealt = densemargin._timed(clock, "C", ring64.deal, size)
    setups = (t.send("C", "S1", "setup", dealt.to_s1), t.send("C", "S2", "setup", dealt.to_s2))
    parties = [ring64.Party(role, size, setups[role]) for role in (0, 1)]
    got = ring64.exchange(parties[0], parties[1], (_unpack(clks[0]), _unpack(clks[1])), t, clock)
    return bits_to_shares(got[0], rows, widths), bits_to_shares(got[1], rows, widths)


def convert_popcounts(p: Plan, pops: tuple[Sequence[npt.ArrayLike], Sequence[npt.ArrayLike]],
                      t: linkbit.Transcript, clock: Clock | None = None,
                      ) -> tuple[list[U64], list[U64]]:  # fmt: skip
    """C deals the popcounts' daBits; S1 and S2 turn their XOR shares of each record's two
    popcounts into additive shares mod 2^64 (core/densemargin.py `convert_pops`)."""
    records = len(np.asarray(pops[0][0]))
    dealt = densemargin._timed(clock, "C", densemargin.pops_deal, p, records)
    size = densemargin.pops_size(p, records)
    one = ring64.Party(0, size, t.send("C", "S1", "setup", dealt.to_s1))
    two = ring64.Party(1, size, t.send("C", "S2", "setup", dealt.to_s2))
    xor = ([np.asarray(q) for q in pops[0]], [np.asarray(q) for q in pops[1]])
    return densemargin.convert_pops(p, one, two, xor, t, clock)


def convert(standing: Standing, p: Plan,
            clks: tuple[Sequence[npt.NDArray[np.uint8]], Sequence[npt.NDArray[np.uint8]]],
            pops: tuple[Sequence[npt.ArrayLike], Sequence[npt.ArrayLike]],
            t: linkbit.Transcript | None = None, clock: Clock | None = None,
            keep_mask: bool = True) -> tuple[Partner, Partner]:  # fmt: skip
    """The once-per-upload conversion between S1 and S2 in this process: `clks[role][c]`
    ((N, L/8) bytes) each server's XOR shares of the partner's CLK c, `pops[role][c]` of its
    popcounts; C's seeds `standing` (`deal`). Each server's `Partner` (without its [M_B]
    where not `keep_mask`: `Partner.forget_mask`); `DealRefused` where a daBit is not one."""
    t = t if t is not None else linkbit.Transcript()
    widths = standing.widths
    if len(clks[0]) != len(widths) or any(
        np.shape(x) != (standing.records, w // 8)
        for side in clks for x, w in zip(side, widths, strict=True)
    ):  # fmt: skip
        raise ValueError("a standing partner: each server's share of each record's CLKs")
    setups = (
        t.send("C", "S1", "setup", standing.to_s1),
        t.send("C", "S2", "setup", standing.to_s2),
    )
    sides = [Partner(role, widths, setups[role]) for role in (0, 1)]
    n = standing.records
    for side in sides:  # each array made once and filled a chunk at a time (no copies)
        side.d = [np.zeros((n, w), np.uint16) for w in widths]
        side.mask = [np.zeros((n, w), np.uint32) for w in widths] if keep_mask else []
        side.pops = [np.zeros(n, np.uint32) for _ in widths]
        side.arith_pops = [np.zeros(n, np.uint64) for _ in widths]
    for piece, (start, stop) in enumerate(chunks(n)):
        got = convert_bits(([x[start:stop] for x in clks[0]], [x[start:stop] for x in clks[1]]),
                           widths, t, clock)  # fmt: skip
        shares = []
        for role, who in enumerate(("S1", "S2")):
            mine = densemargin._timed(clock, who, _d_share, sides[role], piece, stop - start,
                                      got[role])  # fmt: skip
            shares.append(mine)
            for c, x in enumerate(got[role]):
                sides[role].pops[c][start:stop] = x.sum(axis=1, dtype=np.uint32)
                if keep_mask:
                    sides[role].mask[c][start:stop] = mine[1][c]
        for role, who in enumerate(("S1", "S2")):
            theirs = t.send(("S2", "S1")[role], who, "open partner", shares[1 - role][2])
            opened = densemargin._timed(clock, who, _opened, sides[role], shares[role][0], theirs)
            for c, y in enumerate(opened):
                sides[role].d[c][start:stop] = y
        # the chunk's popcounts too, as a piece over gRPC (core/standingsteps.py): one chunk's
        # daBits held at a time, not the partner's
        piece_pops = tuple([np.asarray(q)[start:stop] for q in side] for side in pops)
        arith = convert_popcounts(p, (piece_pops[0], piece_pops[1]), t, clock)
        for role in (0, 1):
            for c, v in enumerate(arith[role]):
                sides[role].arith_pops[c][start:stop] = v
    for role, side in enumerate(sides):
        side.xor_pops = [np.asarray(q, np.uint32) for q in pops[role]]
    return sides[0], sides[1]


def _d_share(side: Partner, piece: int, rows: int, bits: list[U32],
             ) -> tuple[list[U16], list[U32], bytes]:  # fmt: skip
    """A server's share of D_B on a chunk (mod 2^k), its [M_B] there, and the message."""
    mask = mask_share(side.seed, piece, rows, side.widths)
    d = [((b - m) & np.uint32((1 << side.levels(c)) - 1)).astype(np.uint16)
         for c, (b, m) in enumerate(zip(bits, mask, strict=True))]  # fmt: skip
    return d, mask, b"".join(x.astype("<u2").tobytes() for x in d)


def _opened(side: Partner, mine: list[U16], theirs: bytes) -> list[U16]:
    """D_B on a chunk from this server's share and the other's message."""
    rows = len(mine[0])
    if len(theirs) != 2 * rows * sum(side.widths):
        raise ValueError("a standing partner: the other server's opening does not fit")
    got = np.frombuffer(theirs, "<u2").astype(np.uint16)
    out, at = [], 0
    for c, m in enumerate(mine):
        w = side.widths[c]
        other = got[at : at + rows * w].reshape(rows, w)
        out.append((m + other) & np.uint16((1 << side.levels(c)) - 1))
        at += rows * w
    return out


__all__ = ["CHUNK", "Partner", "Standing", "bits_size", "chunks", "convert", "convert_bits",
           "convert_popcounts", "deal", "mask_share"]  # fmt: skip
