"""A query (its records Q, one or a few) compared whole against a standing partner whose bits
were converted once (core/standing.py; docs/privacy-design.md "A query against a standing
partner, converted once"): the query pays its own records' conversion, two matrix products
against what each server keeps, a check, and the rule's margin a pair (core/densemargin.py).

C deals a query (`deal`), nothing in it depending on the values: for each CLK a fresh mask m
(|Q| x L, uniform mod 2^32) and a fresh spare m' of the same shape, each server's share from
its seed; Z = m M_B^T and Z' = m' M_B^T shared (S1's from its seed, S2's explicit: 8 bytes a
pair a CLK), C regenerating M_B a chunk at a time (core/standingrows.py `stream_times`) or
reading its kept M_B. Q's bits by daBits and its popcounts as core/densemargin.py's
(core/ring64.py's sacrifice, `standing.convert_bits`).

S1 and S2 (`Query`, one each):

1. `nonce` / `agree`: t uniform mod 2^32 from both nonces, drawn after the deal;
2. `open`: each sends its share of D_Q = [Q] - [m] mod 2^k (2 bytes a bit) and of
   rho = t m - m' mod 2^32 (4 bytes a bit): uniform, m's low k bits and m' pad them (each
   fresh, used nowhere else);
3. `check`: [C] = t [Z] - [Z'] - rho [M_B]^T (rho public), which is 0 where Z and Z' are
   the products; each sends the SHA-256 of its share (S2 of its negation), equal iff every
   element is 0;
4. `finish`: `DealRefused` unless the digests agree, then [Q B^T] = D_Q D_B^T (S1 alone) +
   D_Q [M_B]^T + [m] D_B^T + [Z] mod 2^k and [H] = [|q|] + [|b|] - 2 [Q B^T] a pair.

Each product reads what it reads once (core/standingrows.py: the native kernel, or numpy's
einsum): at `check` a server's [M_B] for D_Q and rho together (a 2-row product a query
record); at `finish` D_B for (D_Q + [m]) (S1) or [m] (S2), one row a query record; at C's
`deal` each chunk of M_B for m and m' together, its two seeds' streams regenerated a slice at a
time and summed as the product reads them (or its kept M_B). D_Q [M_B]^T is made before the
digest is sent, but nothing of the H shares is made, let alone sent, until the digests agree.

Nothing here opens a combination of M_B: rho is the fresh masks' alone. An error E in Z
(E' in Z', chosen with it, before t) passes only if t E = E' mod 2^32 element by element.
An error changes an H (mod 2^k, -2 E) only where an element e has 2-adic valuation v <= k - 2,
and t e = e' mod 2^32 then holds for at most 2^v of the 2^32 values of t: a wrong deal that
changes any output passes with probability at most 2^-(32 - v) <= 2^-(34 - k) (2^-23 at
1,024 bits, k = 11; core/densearith.py's daBit sacrifice's bound). An error in Z' alone
(E = 0, E' != 0) never passes. Q's bits' daBits are core/ring64.py's mod 2^32 (the same
2^-(34 - k)), its popcounts' mod 2^64 (2^-(65 - w)).

What each party sees in a query: S1 and S2 the other's D_Q and rho shares (padded by the
other's fresh [m], [m']), and a digest; S2 from C its explicit [Z]2, [Z']2 (padded by S1's
[Z]1, [Z']1 from S1's fresh seed); C nothing but the margin's output shares, as before.

`compare` is the three roles on a query in this process (tests/test_standing.py,
benchmarks/twoserver_standing.py).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import densemargin, linkbit, standing
from blindmatch.matcher.core.densearith import _stream
from blindmatch.matcher.core.linkbit import SEED_BYTES
from blindmatch.matcher.core.margincircuit import Plan, plan
from blindmatch.matcher.core.standing import Partner, Standing
from blindmatch.matcher.core.standingrows import rows_times, stream_times
from blindmatch.matcher.core.triplecheck import DealRefused
from blindmatch.matcher.core.twoblocking import PairBatch
from blindmatch.matcher.domain import Rule

U16 = npt.NDArray[np.uint16]
U32 = npt.NDArray[np.uint32]
U64 = npt.NDArray[np.uint64]
Bits = npt.NDArray[np.bool_]
Clock = dict[str, float]
_timed = densemargin._timed


def _s1_sizes(rows: int, records: int, widths: Sequence[int]) -> list[int]:
    """S1's seed: per CLK [m]1, [m']1 (rows x L), [Z]1, [Z']1 (rows x N)."""
    return [n for w in widths for n in (rows * w, rows * w, rows * records, rows * records)]


def _s2_sizes(rows: int, widths: Sequence[int]) -> list[int]:
    """S2's seed: per CLK [m]2, [m']2."""
    return [rows * w for w in widths for _ in (0, 1)]


def setup_bytes(rows: int, records: int, widths: Sequence[int], role: int) -> int:
    """A query's setup for server `role`: S1's seed; S2's seed and [Z]2, [Z']2 a CLK."""
    return SEED_BYTES + (8 * rows * records * len(widths) if role else 0)


@dataclass(frozen=True)
class QueryDeal:
    """C's messages for a query of `rows` records: S1's seed; S2's seed and explicit values."""

    to_s1: bytes
    to_s2: bytes
    rows: int


def deal(s: Standing, rows: int, seeds: tuple[bytes, bytes] | None = None) -> QueryDeal:
    """C: a query's masks and their products with M_B (Z, and the spare Z')."""
    if rows < 1:
        raise ValueError("a query of at least one record")
    s1, s2 = seeds or (secrets.token_bytes(SEED_BYTES), secrets.token_bytes(SEED_BYTES))
    one = _stream(s1, _s1_sizes(rows, s.records, s.widths))
    two = _stream(s2, _s2_sizes(rows, s.widths))
    both = []  # per CLK [m; m'] (2 rows x L)
    for c, w in enumerate(s.widths):
        m = (one[4 * c] + two[2 * c]).reshape(rows, w)
        m_ = (one[4 * c + 1] + two[2 * c + 1]).reshape(rows, w)
        both.append(np.vstack([m, m_]))
    prods = [np.empty((2 * rows, s.records), np.uint32) for _ in s.widths]
    for piece, (start, stop) in enumerate(standing.chunks(s.records)):
        # Z and Z' in one pass over the chunk's M_B: kept, or both seeds' streams regenerated
        # a slice at a time and summed as the product reads them (never stored whole)
        if s.kept is not None and piece in s.kept:
            got = [rows_times(both[c], mb) for c, mb in enumerate(s.kept[piece])]
        else:
            got = stream_times((s.to_s1, s.to_s2), piece, stop - start, s.widths, both, s.before)
        for c, prod in enumerate(got):
            prods[c][:, start:stop] = prod
    explicit = []
    for c in range(len(s.widths)):
        explicit.append(prods[c][:rows].ravel() - one[4 * c + 2])
        explicit.append(prods[c][rows:].ravel() - one[4 * c + 3])
    body = b"".join(np.ascontiguousarray(e, dtype="<u4").tobytes() for e in explicit)
    return QueryDeal(s1, s2 + body, rows)


def _digest(values: Sequence[U32]) -> bytes:
    h = hashlib.sha256()
    for v in values:
        h.update(np.ascontiguousarray(v, dtype="<u4").tobytes())
    return h.digest()


class Query:
    """S1 (role 0) or S2 (role 1) on a query of `rows` records against its standing
    `partner`: `nonce`/`agree`, `open` (its [Q] a CLK, (rows, L) mod 2^32, from
    `standing.convert_bits`), `check` (the other's `open`), `finish` (the other's `check`;
    `DealRefused` where the deal fails); then `hamming(c)` is its shares (mod 2^k) of every
    pair's H on CLK c, (rows, N)."""

    def __init__(self, role: int, partner: Partner, rows: int, setup: bytes,
                 nonce: bytes | None = None) -> None:  # fmt: skip
        if role not in (0, 1) or partner.role != role:
            raise ValueError("a query: role 0 (S1) or 1 (S2), its own standing partner")
        n, widths = partner.records, partner.widths
        if len(setup) != setup_bytes(rows, n, widths, role):
            raise ValueError("a query: a setup that does not fit the query")
        self.role, self.partner, self.rows = role, partner, rows
        if role == 0:
            got = _stream(setup, _s1_sizes(rows, n, widths))
            self._m = [got[4 * c].reshape(rows, w) for c, w in enumerate(widths)]
            self._m_ = [got[4 * c + 1].reshape(rows, w) for c, w in enumerate(widths)]
            self._z = [got[4 * c + 2].reshape(rows, n) for c in range(len(widths))]
            self._z_ = [got[4 * c + 3].reshape(rows, n) for c in range(len(widths))]
        else:
            got = _stream(setup[:SEED_BYTES], _s2_sizes(rows, widths))
            self._m = [got[2 * c].reshape(rows, w) for c, w in enumerate(widths)]
            self._m_ = [got[2 * c + 1].reshape(rows, w) for c, w in enumerate(widths)]
            body = np.frombuffer(setup[SEED_BYTES:], "<u4").astype(np.uint32).reshape(-1, rows, n)
            self._z, self._z_ = list(body[0::2]), list(body[1::2])
        self._nonce = nonce or secrets.token_bytes(SEED_BYTES)
        self._t: np.uint32 | None = None
        self._q: list[U32] = []
        self._mine: list[tuple[U32, U32]] = []  # its shares of D_Q, rho a CLK
        self._dm: list[U32] = []  # D_Q [M_B]^T a CLK (rows, N)
        self._tau: bytes | None = None
        self._h: list[U16] | None = None

    def nonce(self) -> bytes:
        """Fresh random bytes for the other server, sent once both hold the deal."""
        return self._nonce

    def agree(self, theirs: bytes) -> None:
        """The check's t from both servers' nonces (XOR)."""
        if self._t is not None:
            raise RuntimeError("a query: the check's randomness is agreed already")
        if len(theirs) != SEED_BYTES:
            raise ValueError(f"a query: the other server's nonce is {SEED_BYTES} bytes")
        joint = bytes(x ^ y for x, y in zip(self._nonce, theirs, strict=True))
        self._t = _stream(joint, [1])[0][0]

    def open(self, q: Sequence[U32]) -> bytes:
        """Its shares of D_Q (mod 2^k, 2 bytes a bit) and rho = t m - m' (4 bytes), a CLK
        after another, for the other server."""
        if self._t is None or self._q:
            raise RuntimeError("a query: open once, after agree")
        widths = self.partner.widths
        if len(q) != len(widths) or any(
            np.shape(x) != (self.rows, w) for x, w in zip(q, widths, strict=True)
        ):
            raise ValueError("a query: [Q] a CLK, (rows, L)")
        self._q = [np.asarray(x, np.uint32) for x in q]
        out = []
        for c, x in enumerate(self._q):
            d = (x - self._m[c]) & self._low(c)
            rho = self._t * self._m[c] - self._m_[c]
            self._mine.append((d, rho))
            out += [d.astype("<u2").tobytes(), rho.astype("<u4").tobytes()]
        return b"".join(out)

    def _low(self, c: int) -> np.uint32:
        return np.uint32((1 << self.partner.levels(c)) - 1)

    def check(self, theirs: bytes) -> bytes:
        """From the other's `open`: D_Q and rho opened, D_Q [M_B]^T, and the digest of this
        server's share of t [Z] - [Z'] - rho [M_B]^T (S2's negated), for the other."""
        if not self._mine or self._tau is not None:
            raise RuntimeError("a query: check once, after open")
        widths, rows = self.partner.widths, self.rows
        sizes = [n for w in widths for n in (2 * rows * w, 4 * rows * w)]
        if len(theirs) != sum(sizes):
            raise ValueError("a query: the other server's opening does not fit the query")
        opened, at = [], 0
        for c, w in enumerate(widths):
            d_other = np.frombuffer(theirs[at : at + 2 * rows * w], "<u2").astype(np.uint32)
            at += 2 * rows * w
            rho_other = np.frombuffer(theirs[at : at + 4 * rows * w], "<u4").astype(np.uint32)
            at += 4 * rows * w
            d_mine, rho_mine = self._mine[c]
            d = (d_mine + d_other.reshape(rows, w)) & self._low(c)
            rho = rho_mine + rho_other.reshape(rows, w)
            self._mine[c] = (d, rho)
            opened.append(np.vstack([d, rho]))
        # (2 rows, N) mod 2^32 a CLK, [M_B] read once for D_Q and rho (core/standingrows.py)
        products = self._masked(opened)
        taus = []
        assert self._t is not None
        for c, both in enumerate(products):
            self._dm.append(both[:rows])
            tau = self._t * self._z[c] - self._z_[c] - both[rows:]
            taus.append(tau if self.role == 0 else np.uint32(0) - tau)
        self._tau = _digest(taus)
        return self._tau

    def _masked(self, vecs: list[U32]) -> list[U32]:
        """vecs[c] [M_B]^T mod 2^32 a CLK: from the kept [M_B], or (`Partner.forget_mask`)
        from this server's share regenerated from its seed a chunk at a time."""
        part = self.partner
        if part.mask:
            return [rows_times(v, m) for v, m in zip(vecs, part.mask, strict=True)]
        out = [np.empty((len(v), part.records), np.uint32) for v in vecs]
        for piece, (start, stop) in enumerate(standing.chunks(part.records)):
            got = stream_times((part.seed,), piece, stop - start, part.widths, vecs,
                               part.before)  # fmt: skip
            for c, prod in enumerate(got):
                out[c][:, start:stop] = prod
        return out

    def finish(self, theirs: bytes) -> None:
        """From the other's `check`: `DealRefused` unless the digests agree; then this
        server's shares of every pair's H."""
        if self._tau is None or self._h is not None:
            raise RuntimeError("a query: finish once, after check")
        if theirs != self._tau:
            raise DealRefused(
                "the sacrifice of a query's dealt products failed: Z or its spare Z' is not "
                "the masks' product with the standing partner's mask"
            )
        out = []
        for c, (d, _rho) in enumerate(self._mine):
            left = d + self._m[c] if self.role == 0 else self._m[c]
            md = rows_times(left, self.partner.d[c])  # D_B read once; its low k bits count
            inner = md + self._dm[c] + self._z[c]
            pq = self._q[c].sum(axis=1, dtype=np.uint32)
            h = pq[:, None] + self.partner.pops[c][None, :] - np.uint32(2) * inner
            out.append((h & self._low(c)).astype(np.uint16))
        self._h = out
        self._q, self._mine, self._dm, self._z, self._z_ = [], [], [], [], []

    def hamming(self, c: int) -> U16:
        """(rows, N): this server's additive shares (mod 2^k) of each pair's H on CLK c."""
        if self._h is None:
            raise RuntimeError("a query: hamming before finish")
        return self._h[c]


def exchange(s1: Query, s2: Query, q: tuple[Sequence[U32], Sequence[U32]],
             t: linkbit.Transcript, clock: Clock | None = None) -> None:  # fmt: skip
    """The query's steps between S1 and S2 (`q[role]` each server's [Q]): nonces, openings,
    digests; `DealRefused` where C's deal fails the check."""
    sides, who = (s1, s2), ("S1", "S2")
    nonces = [s1.nonce(), s2.nonce()]
    for k in (0, 1):
        sides[k].agree(t.send(who[1 - k], who[k], "nonce", nonces[1 - k]))
    sent = [t.send(who[k], who[1 - k], "open", _timed(clock, who[k], sides[k].open, q[k]))
            for k in (0, 1)]  # fmt: skip
    back = [t.send(who[k], who[1 - k], "check",
                   _timed(clock, who[k], sides[k].check, sent[1 - k]))
            for k in (0, 1)]  # fmt: skip
    for k in (0, 1):
        _timed(clock, who[k], sides[k].finish, back[1 - k])
    t.rounds += 3


def compare(s: Standing, partners: tuple[Partner, Partner],
            clks: tuple[Sequence[npt.NDArray[np.uint8]], Sequence[npt.NDArray[np.uint8]]],
            pops: tuple[Sequence[npt.ArrayLike], Sequence[npt.ArrayLike]],
            cutoffs: Sequence[float], rule: Rule, transcript: linkbit.Transcript | None = None,
            clock: Clock | None = None, depth: int = 0) -> Bits:  # fmt: skip
    """The three roles on a query in this process: `clks[role][c]` ((rows, L/8) bytes) each
    server's XOR shares of the query's CLK c, `pops[role][c]` of its popcounts, against the
    standing partner (`standing.convert`'s). (cut-offs, rows x N) link bits, pair (i, j) at
    i N + j; `DealRefused` before any output share where C deals any value wrong."""
    t = transcript if transcript is not None else linkbit.Transcript()
    widths = s.widths
    if len(widths) != 2:
        raise ValueError("a query against a standing partner: two CLKs and the gap rule")
    rows, n = len(clks[0][0]), s.records
    p = plan(widths[0], widths[1], tuple(float(x) for x in cutoffs), rule, depth)
    q = standing.convert_bits(clks, widths, t, clock)
    arith = standing.convert_popcounts(p, pops, t, clock)
    dealt = _timed(clock, "C", deal, s, rows)
    sides = []
    for role, who in enumerate(("S1", "S2")):
        setup = t.send("C", who, "setup", (dealt.to_s1, dealt.to_s2)[role])
        sides.append(_timed(clock, who, Query, role, partners[role], rows, setup))
    exchange(sides[0], sides[1], q, t, clock)
    xor = [[np.asarray(x, np.uint32) for x in side] for side in pops]
    return _margin(p, sides, xor, arith, (rows, n), len(cutoffs), t, clock)


def _margin(p: Plan, sides: list[Query], xor: list[list[U32]], arith: tuple[list[U64], list[U64]],
            shape: tuple[int, int], cuts: int, t: linkbit.Transcript, clock: Clock | None,
            ) -> Bits:  # fmt: skip
    """The rule's margin a batch of pairs (core/densemargin.py `Side`, `exchange`) on the
    query's H shares and both sides' popcounts."""
    rows, n = shape
    out = np.zeros((cuts, rows * n), dtype=bool)
    for at in range(0, rows * n, linkbit.BATCH):
        i, j = np.divmod(np.arange(at, min(rows * n, at + linkbit.BATCH)), n)
        d = _timed(clock, "C", densemargin.deal, p, len(i))
        batch = PairBatch(0, 1, 0, i.astype(np.uint32), j.astype(np.uint32))
        parties = []
        for role, who in enumerate(("S1", "S2")):
            setup = t.send("C", who, "setup", (d.to_s1, d.to_s2)[role])
            parties.append(_timed(clock, who, _side, role, p, sides[role], xor[role],
                                  arith[role], batch, setup))  # fmt: skip
        densemargin.exchange(parties[0], parties[1], t, clock)
        o1 = t.send("S1", "C", "output", _timed(clock, "S1", parties[0].output))
        o2 = t.send("S2", "C", "output", _timed(clock, "S2", parties[1].output))
        out[:, at : at + len(i)] = _timed(clock, "C", linkbit.reveal, p.second, o1, o2, len(i))
        t.pairs += len(i)
    return out


def _side(role: int, p: Plan, query: Query, xor: list[U32], arith: list[U64], batch: PairBatch,
          setup: bytes) -> densemargin.Side:  # fmt: skip
    """A server's side of the margin on `batch` (query row i, partner record j a pair): its
    H1, H2 shares, XOR and additive shares of pa1, pb1, pa2, pb2."""
    i, j = batch.rows_a.astype(np.intp), batch.rows_b.astype(np.intp)
    part = query.partner
    h = (query.hamming(0)[i, j], query.hamming(1)[i, j])
    xor_pops = [v for c in (0, 1) for v in (xor[c][i], part.xor_pops[c][j])]
    pops = [v for c in (0, 1) for v in (arith[c][i], part.arith_pops[c][j])]
    return densemargin.Side(role, p, h, xor_pops, pops, setup)


__all__ = ["Query", "QueryDeal", "compare", "deal", "exchange", "setup_bytes"]
