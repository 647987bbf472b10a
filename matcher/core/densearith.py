"""Every pair of a block (all of A's rows x all of B's: an unblocked part, core/crosspart.py)
has its Hamming distances computed by arithmetic sharing, a matrix product for the whole
block, instead of a popcount circuit a pair (docs/privacy-design.md "A whole block by
arithmetic sharing"; core/gmwsum.py takes the result into the rule's circuit).

S1 and S2 hold XOR shares a = a1 ^ a2 of each record's CLKs. C (the combiner) deals, for the
block's shape alone (its rows, public), correlated randomness in Z_2^32 (`deal`); S1's from a
32-byte seed, S2's from a seed and explicit values:

1. A daBit a CLK bit of every record: bits x (S1's) and y (S2's) and additive shares [p] of
   p = x y. S1 sends a1 ^ x, S2 a2 ^ y (one bit each), both then hold u = a ^ w (w = x ^ y)
   and additive shares [a] = u + (1 - 2u) [w], [w] = x + y - 2 [p] (mod 2^k, k = L.bit_length()
   for L-bit CLKs: every value wanted, an inner product or H, is below 2^k). A record's
   popcount is then a sum of its shares.
2. A matrix triple a CLK: M_A ((n_a + R) x L), M_B ((n_b + R) x L) uniform, shared, and
   Z = M_A M_B^T shared (S2's share explicit: 4 bytes a pair a CLK); R = `REPS` spare rows on
   each side serve only the check. S1 and S2 open D_A = [A] - [M_A] and D_B = [B] - [M_B] mod
   2^k (uniform: M's low k bits mask them), and each computes its share of the inner
   products A B^T = D_A D_B^T + D_A [M_B]^T + [M_A] D_B^T + [Z] by float64 matrix products of
   values under 2^k (exact: sums of 2 L products under 2^(2k), far below 2^53), mod 2^k.
   [H] = [|a|] + [|b|] - 2 [a . b] for every pair of the block.

What C can cheat on is S2's explicit values (everything else comes from seeds). S1 and S2
check them once both hold the deal, with randomness C cannot know (both servers' nonces,
XORed, `Party.agree`), before anything reaches C:

- the daBits by sacrifice against a spare one-sided triple (x', y' uniform mod 2^32, [x' y']):
  S1 sends rho = t x - x', S2 sigma = y - y' (padded by x', y', which serve nothing else), and
  t z - z' - rho [y] - sigma [x'] = t e - e' must be 0 on every element (e, e' the errors in
  p's and the spare's shares; compared by digest). An error that changes a result changes
  [a] = ... - 2 (1 - 2u) [p] mod 2^k, so e has 2-adic valuation v <= k - 2; it passes only
  if t e = e' mod 2^32, for one t drawn after the deal: probability at most 2^-(32 - v) <=
  2^-(34 - k) (2^-23 at 1,024 bits, k = 11);
- each matrix triple by `REPS` random bilinear checks: for alpha, beta uniform mod 2^32 (1 on
  the repetition's spare row and column, 0 on the other spares) S1 and S2 open m_a =
  alpha^T M_A, m_b = beta^T M_B and z = alpha^T Z beta (the spare rows, uniform and used
  nowhere else, pad m_a and m_b) and require z = m_a . m_b. An error E in Z changes an H
  (= |a| + |b| - 2 a . b mod 2^k) only where an entry of the block has valuation v <= k - 2;
  it then passes a check with probability at most (m + 1) 2^-m, m = 32 - v >= 34 - k (a
  uniform alpha row makes that column of alpha^T E uniform over a coset of 2^v, a uniform
  beta then hits 0 mod 2^32 once in 2^(m - w), w that sum's valuation): 2.9e-6 at 1,024 bits,
  8.2e-12 for both checks.

What each party sees: S1 its own shares and seed, and from S2 a2 ^ y (y from S2's seed),
sigma (padded by y'), D's shares (padded by [M]'s, from S2's seed), the check's shares (padded
by the spares) and a digest; S2 likewise, and C's explicit values, each padded by S1's share
from S1's seed. C receives nothing here: only the circuit's output shares, as before.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar, overload

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core.linkbit import SEED_BYTES, prg
from blindmatch.matcher.core.triplecheck import DealRefused

T = TypeVar("T")

U32 = npt.NDArray[np.uint32]
REPS = 2  # the matrix triple's checks (and spare rows on each side)
CHUNK_BYTES = 1 << 25  # a float64 product computed this many bytes of rows at a time


@dataclass(frozen=True)
class Shape:
    """A block: `rows_a` x `rows_b` pairs, CLKs of `widths` bits (the first CLK's, then the
    fallback's where the rule reads both)."""

    rows_a: int
    rows_b: int
    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.rows_a < 1 or self.rows_b < 1 or not self.widths:
            raise ValueError(f"a block of {self.rows_a} x {self.rows_b} rows, {self.widths}")
        if any(w < 8 or w % 8 or w > 1 << 16 for w in self.widths):
            # (the servers' float64 products sum 2 L products under 4 L^2: exact to 2^16 bits)
            raise ValueError(f"CLK widths in whole bytes, at most 65,536 bits: {self.widths}")

    @property
    def records(self) -> int:
        return self.rows_a + self.rows_b

    @property
    def pairs(self) -> int:
        return self.rows_a * self.rows_b

    def levels(self, clk: int) -> int:
        """k: the ring bits the results need (H, |a| <= L < 2^k)."""
        return self.widths[clk].bit_length()


def _stream(seed: bytes, sizes: Sequence[int]) -> list[U32]:
    """`sizes` uint32 arrays from `seed`'s AES-CTR stream, in order."""
    total = sum(sizes)
    raw = prg(seed, (total + 1) // 2).view(np.uint32)[:total]
    out, at = [], 0
    for n in sizes:
        out.append(raw[at : at + n])
        at += n
    return out


def _s1_sizes(s: Shape) -> list[int]:
    """S1's seed: per CLK x, [p]1, x', [x'y']1 (a record's bits each), [M_A]1, [M_B]1, [Z]1."""
    out = []
    for w in s.widths:
        out += [s.records * w] * 4
        out += [(s.rows_a + REPS) * w, (s.rows_b + REPS) * w]
        out += [(s.rows_a + REPS) * (s.rows_b + REPS)]
    return out


def _s2_sizes(s: Shape) -> list[int]:
    """S2's seed: per CLK y, y', [M_A]2, [M_B]2."""
    out = []
    for w in s.widths:
        out += [s.records * w] * 2 + [(s.rows_a + REPS) * w, (s.rows_b + REPS) * w]
    return out


def _explicit_sizes(s: Shape) -> list[int]:
    """S2's explicit values: per CLK [p]2, [x'y']2, [Z]2."""
    out = []
    for w in s.widths:
        out += [s.records * w] * 2 + [(s.rows_a + REPS) * (s.rows_b + REPS)]
    return out


def setup_bytes(s: Shape, role: int) -> int:
    """The bytes of C's setup for server `role` on block `s`: S1's seed; S2's seed and its
    explicit values (4 bytes each)."""
    return SEED_BYTES + (4 * sum(_explicit_sizes(s)) if role else 0)


def matmul32(x: U32, y: U32) -> U32:
    """x y^T mod 2^32 of uint32 matrices, by float64 products of 16-bit halves (exact: sums of
    at most 2^20 products under 2^32 stay under 2^53), `CHUNK_BYTES` of x's rows at a time."""
    if x.shape[1] > 1 << 19:  # the middle product sums two products a column
        raise ValueError("matmul32: rows too long to be exact")
    lo_y, hi_y = (y & 0xFFFF).astype(np.float64), (y >> 16).astype(np.float64)
    both_y = np.hstack([lo_y, hi_y]).T
    out: U32 = np.empty((len(x), len(y)), np.uint32)
    step = max(1, CHUNK_BYTES // (8 * max(len(y), 1)))
    for i in range(0, len(x), step):
        part = x[i : i + step]
        lo_x, hi_x = (part & 0xFFFF).astype(np.float64), (part >> 16).astype(np.float64)
        low = (lo_x @ lo_y.T).astype(np.uint64)
        mid = (np.hstack([hi_x, lo_x]) @ both_y).astype(np.uint64)
        out[i : i + step] = (low + (mid << np.uint64(16))).astype(np.uint32)
    return out


@dataclass(frozen=True)
class BlockDeal:
    """C's messages for a block: S1's seed; S2's seed and its explicit values."""

    to_s1: bytes
    to_s2: bytes
    shape: Shape


def deal(s: Shape, seeds: tuple[bytes, bytes] | None = None) -> BlockDeal:
    """C: the block's daBits and matrix triples; `seeds` fixed only by tests."""
    s1, s2 = seeds or (secrets.token_bytes(SEED_BYTES), secrets.token_bytes(SEED_BYTES))
    one, two = _stream(s1, _s1_sizes(s)), _stream(s2, _s2_sizes(s))
    explicit = []
    for c in range(len(s.widths)):
        x, p1, x_, q1, ma1, mb1, z1 = one[7 * c : 7 * c + 7]
        y, y_, ma2, mb2 = two[4 * c : 4 * c + 4]
        w = s.widths[c]
        explicit.append((x & 1) * (y & 1) - p1)
        explicit.append(x_ * y_ - q1)
        m_a, m_b = (ma1 + ma2).reshape(-1, w), (mb1 + mb2).reshape(-1, w)
        explicit.append(matmul32(m_a, m_b).ravel() - z1)
    body = b"".join(np.ascontiguousarray(e, dtype="<u4").tobytes() for e in explicit)
    return BlockDeal(s1, s2 + body, s)


class Lazy(Sequence[T]):
    """C's deals of a part's blocks, each made when read and not kept: `make(k, seeds)` from
    seeds drawn at once (read again, the same deal), so that C holds one block's deal at a
    time while it streams them to S2 (rpc/twoserver_blocks.py `prepare_blocks`)."""

    def __init__(self, count: int, make: Callable[[int, tuple[bytes, bytes]], T]) -> None:
        self._make = make
        self._seeds = [(secrets.token_bytes(SEED_BYTES), secrets.token_bytes(SEED_BYTES))
                       for _ in range(count)]  # fmt: skip

    def __len__(self) -> int:
        return len(self._seeds)

    @overload
    def __getitem__(self, k: int) -> T: ...

    @overload
    def __getitem__(self, k: slice) -> Sequence[T]: ...

    def __getitem__(self, k: int | slice) -> T | Sequence[T]:
        if isinstance(k, slice):
            return [self[i] for i in range(len(self))[k]]
        return self._make(k, self._seeds[k])  # (IndexError past the last: iteration ends)


def _digest(values: Sequence[U32]) -> bytes:
    h = hashlib.sha256()
    for v in values:
        h.update(np.ascontiguousarray(v, dtype="<u4").tobytes())
    return h.digest()


class Party:
    """S1 (role 0) or S2 (role 1) on a block: `clks[c]` ((rows_a + rows_b, L/8) bytes) its XOR
    shares of CLK c of A's records, then B's. Drive it by `nonce`/`agree` (the joint randomness
    of the checks), `convert` and `reconcile` (a message each to the other server, each from
    the other's previous one), `finish` (the other's `reconcile`; `DealRefused` where the
    deal fails the checks); then `hamming(c)` is this server's additive shares (mod 2^k) of
    every pair's H on CLK c, (rows_a, rows_b)."""

    def __init__(self, role: int, s: Shape, setup: bytes, clks: Sequence[npt.NDArray[np.uint8]],
                 nonce: bytes | None = None) -> None:  # fmt: skip
        if role not in (0, 1):
            raise ValueError("a block: role 0 (S1) or 1 (S2)")
        if len(clks) != len(s.widths) or any(
            np.shape(b) != (s.records, w // 8) for b, w in zip(clks, s.widths, strict=True)
        ):
            raise ValueError("a block: a share of each record's CLKs, A's rows then B's")
        self.role, self.shape = role, s
        self._bits = [np.unpackbits(np.asarray(b, np.uint8), axis=1, bitorder="little")
                      for b in clks]  # fmt: skip
        if role == 0:
            if len(setup) != SEED_BYTES:
                raise ValueError("a block: S1's setup is its seed")
            self._dealt = _stream(setup, _s1_sizes(s))
        else:
            sizes = _explicit_sizes(s)
            body = memoryview(setup)[SEED_BYTES:]  # (read in place: ~100 MB a CLK at scale)
            if len(body) != 4 * sum(sizes):
                raise ValueError("a block: S2's setup does not fit the block")
            rest = np.frombuffer(body, dtype="<u4").astype(np.uint32, copy=False)
            own = _stream(setup[:SEED_BYTES], _s2_sizes(s))
            at, explicit = 0, []
            for n in sizes:
                explicit.append(rest[at : at + n])
                at += n
            self._dealt = own + explicit
        self._nonce = nonce or secrets.token_bytes(SEED_BYTES)
        self._joint: bytes | None = None
        self._shares: list[U32] = []  # [a] per CLK, (records, L), mod 2^32
        self._sent: list[U32] = []
        self._d: list[U32] = []  # this server's share of D a CLK, mod 2^k
        self._checks: list[list[tuple[U32, U32, U32]]] = []  # its m_a, m_b, z a check
        self._h: list[npt.NDArray[np.uint16]] | None = None

    def _clk(self, c: int) -> dict[str, U32]:
        """This server's dealt values of CLK c, by name (S1: x p x_ q ma mb z from its seed;
        S2: y y_ ma mb from its seed, p q z explicit)."""
        s, w, n = self.shape, self.shape.widths[c], len(self.shape.widths)
        if self.role == 0:
            got = dict(zip(["x", "p", "x_", "q", "ma", "mb", "z"], self._dealt[7 * c : 7 * c + 7],
                           strict=True))  # fmt: skip
        else:
            got = dict(zip(["y", "y_", "ma", "mb"], self._dealt[4 * c : 4 * c + 4], strict=True))
            explicit = self._dealt[4 * n + 3 * c : 4 * n + 3 * c + 3]
            got.update(zip(["p", "q", "z"], explicit, strict=True))
        shapes = {"ma": (s.rows_a + REPS, w), "mb": (s.rows_b + REPS, w),
                  "z": (s.rows_a + REPS, s.rows_b + REPS)}  # fmt: skip
        return {k: v.reshape(shapes.get(k, (s.records, w))) for k, v in got.items()}

    def nonce(self) -> bytes:
        """Fresh random bytes for the other server, sent once both hold the deal."""
        return self._nonce

    def agree(self, theirs: bytes) -> None:
        """The checks' randomness (t, alpha, beta) from both servers' nonces (XOR)."""
        if self._joint is not None:
            raise RuntimeError("a block: the checks' randomness is agreed already")
        if len(theirs) != SEED_BYTES:
            raise ValueError(f"a block: the other server's nonce is {SEED_BYTES} bytes")
        self._joint = bytes(x ^ y for x, y in zip(self._nonce, theirs, strict=True))
        s = self.shape
        sizes = [1] + [s.rows_a, s.rows_b] * REPS * len(s.widths)
        drawn = _stream(self._joint, sizes)
        self._t = drawn[0][0]
        self._coeffs = drawn[1:]

    def convert(self) -> bytes:
        """The first message: each CLK bit masked (a1 ^ x or a2 ^ y, packed) and the
        sacrifice's rho = t x - x' (S1) or sigma = y - y' (S2)."""
        if self._joint is None:
            raise RuntimeError("a block: convert before the servers agree")
        parts = []
        for c in range(len(self.shape.widths)):
            d = self._clk(c)
            if self.role == 0:
                mask, pad = d["x"] & 1, self._t * (d["x"] & 1) - d["x_"]
            else:
                mask, pad = d["y"] & 1, (d["y"] & 1) - d["y_"]
            self._sent.append(pad)
            bits = self._bits[c] ^ mask.astype(np.uint8)
            parts += [np.packbits(bits, axis=1, bitorder="little").tobytes(), pad.tobytes()]
        return b"".join(parts)

    def reconcile(self, theirs: bytes) -> bytes:
        """From the other's `convert`: this server's [a] of every record's CLKs; the second
        message: the digest of its share of the sacrifice's t e - e', then a CLK at a time
        its shares of D (mod 2^k, 2 bytes a value) and of each check's m_a, m_b, z."""
        if not self._sent or self._shares or self._h is not None:
            raise RuntimeError("a block: reconcile once, after convert")
        s = self.shape
        sizes = [n for w in s.widths for n in (s.records * w // 8, 4 * s.records * w)]
        got = _split(theirs, sizes)
        taus, parts = [], []
        for c, w in enumerate(s.widths):
            d = self._clk(c)
            masked = np.frombuffer(got[2 * c], np.uint8).reshape(s.records, w // 8)
            other = np.frombuffer(got[2 * c + 1], "<u4").astype(np.uint32).reshape(s.records, w)
            own = d["x" if self.role == 0 else "y"] & 1
            u = (self._bits[c] ^ own.astype(np.uint8)
                 ^ np.unpackbits(masked, axis=1, bitorder="little")).astype(np.uint32)  # fmt: skip
            sign = np.uint32(1) - np.uint32(2) * u  # 1 - 2u mod 2^32
            wshare = own - np.uint32(2) * d["p"]  # [w] = x + y - 2 [p]
            if self.role == 0:  # rho is S1's, sigma (`other`) S2's
                self._shares.append(u + sign * wshare)
                taus.append(self._t * d["p"] - d["q"] - other * d["x_"])
            else:
                self._shares.append(sign * wshare)
                taus.append(np.uint32(0) - (self._t * d["p"] - d["q"] - other * own))
            parts.append(self._opening(c, d))
        self._tau = _digest(taus)
        return self._tau + b"".join(parts)

    def _opening(self, c: int, d: dict[str, U32]) -> bytes:
        """CLK c's shares of D_A, D_B (mod 2^k) and of each check's m_a, m_b, z."""
        s, mask = self.shape, np.uint32((1 << self.shape.levels(c)) - 1)
        a = self._shares[c]
        dd = np.vstack([a[: s.rows_a] - d["ma"][: s.rows_a], a[s.rows_a :] - d["mb"][: s.rows_b]])
        self._d.append(dd & mask)
        out = [(dd & mask).astype("<u2").tobytes()]
        checks = []
        for r in range(REPS):
            alpha, beta = self._extended(c, r)
            m_a = (alpha @ d["ma"].astype(np.uint64)).astype(np.uint32)
            m_b = (beta @ d["mb"].astype(np.uint64)).astype(np.uint32)
            z = ((alpha @ d["z"].astype(np.uint64)) @ beta).astype(np.uint32).reshape(1)
            checks.append((m_a, m_b, z))
            out += [v.astype("<u4").tobytes() for v in (m_a, m_b, z)]
        self._checks.append(checks)
        return b"".join(out)

    def _extended(self, c: int, r: int) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        """Check r of CLK c's alpha and beta: uniform on the block's rows, 1 on the check's
        spare row, 0 on the other spares."""
        k = 2 * (c * REPS + r)
        spare = np.zeros(REPS, np.uint64)
        spare[r] = 1
        alpha = np.concatenate([self._coeffs[k].astype(np.uint64), spare])
        beta = np.concatenate([self._coeffs[k + 1].astype(np.uint64), spare])
        return alpha, beta

    def finish(self, theirs: bytes) -> None:
        """From the other's `reconcile`: the checks (`DealRefused` where one fails), then D
        opened and this server's shares of every pair's H."""
        if self._h is not None or not self._shares:
            raise RuntimeError("a block: finish once, after reconcile")
        s = self.shape
        sizes = [32]
        for w in s.widths:
            sizes += [2 * s.records * w] + [4 * w, 4 * w, 4] * REPS
        got = _split(theirs, sizes)
        if got[0] != self._tau:
            raise DealRefused(
                "the sacrifice of the dealt daBits failed: a record bit's conversion or its "
                "spare is not a product"
            )
        opened = []
        for c, w in enumerate(s.widths):
            at = 1 + c * (1 + 3 * REPS)
            other = np.frombuffer(got[at], "<u2").astype(np.uint32).reshape(s.records, w)
            for r, mine in enumerate(self._checks[c]):
                m_a, m_b, z = (
                    np.frombuffer(got[at + 1 + 3 * r + i], "<u4").astype(np.uint32) + mine[i]
                    for i in range(3)
                )
                dot = (m_a.astype(np.uint64) * m_b.astype(np.uint64)).sum(dtype=np.uint64)
                if np.uint32(dot & np.uint64(0xFFFFFFFF)) != z[0]:
                    raise DealRefused(
                        f"the dealt matrix triple of CLK {c} fails check {r} of {REPS}: its "
                        "products are not its masks' product"
                    )
            opened.append(self._d[c] + other)
        self._h = [self._hamming(c, dd).astype(np.uint16) for c, dd in enumerate(opened)]
        # What served the conversion, the openings and the checks is not needed again.
        self._dealt, self._bits, self._shares, self._d, self._checks = [], [], [], [], []
        self._sent, self._coeffs = [], []  # (kept with the H shares, they would add 4 bytes a bit)

    def _hamming(self, c: int, dd: U32) -> U32:
        """This server's shares of every pair's H on CLK c from D opened (mod 2^k): [|a|] +
        [|b|] - 2 [a . b], [a . b] by float64 products in row chunks."""
        s, d = self.shape, self._clk(c)
        k = s.levels(c)
        mask = np.uint32((1 << k) - 1)
        dd = dd & mask
        d_a, d_b = dd[: s.rows_a].astype(np.float64), dd[s.rows_a :].astype(np.float64)
        m_a = (d["ma"][: s.rows_a] & mask).astype(np.float64)
        m_b = (d["mb"][: s.rows_b] & mask).astype(np.float64)
        left = np.hstack([d_a, m_a])
        if self.role == 0:
            right = np.hstack([(dd[s.rows_a :] + d["mb"][: s.rows_b]) & mask, dd[s.rows_a :]])
        else:
            right = np.hstack([m_b, d_b])
        right = right.astype(np.float64)
        pops = self._shares[c].sum(axis=1, dtype=np.uint32)
        pa, pb = pops[: s.rows_a], pops[s.rows_a :]
        z = d["z"][: s.rows_a, : s.rows_b]
        out = np.empty((s.rows_a, s.rows_b), np.uint32)
        step = max(1, CHUNK_BYTES // (8 * s.rows_b))
        for i in range(0, s.rows_a, step):
            prod = (left[i : i + step] @ right.T).astype(np.uint64).astype(np.uint32)
            inner = prod + z[i : i + step]
            out[i : i + step] = pa[i : i + step, None] + pb[None, :] - 2 * inner
        h: U32 = out & mask
        return h

    def hamming(self, c: int) -> npt.NDArray[np.uint16]:
        """(rows_a, rows_b): this server's additive shares (mod 2^k) of each pair's H on
        CLK c."""
        if self._h is None:
            raise RuntimeError("a block: hamming before finish")
        return self._h[c]


def _split(message: bytes, sizes: Sequence[int]) -> list[bytes]:
    if len(message) != sum(sizes):
        raise ValueError("a block: the other server's message does not fit the block")
    out, at = [], 0
    for n in sizes:
        out.append(message[at : at + n])
        at += n
    return out


__all__ = ["REPS", "BlockDeal", "Lazy", "Party", "Shape", "deal", "matmul32", "setup_bytes"]
