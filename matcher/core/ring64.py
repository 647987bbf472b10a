"""Arithmetic sharing mod 2^64 between S1 and S2 with correlated randomness C deals: daBits
(a bit shared both ways, to turn XOR-shared bits into additive shares) and scalar Beaver
triples (products of additive shares), each checked by a sacrifice with randomness C cannot
know before any result is used (docs/privacy-design.md "A whole block by arithmetic sharing",
core/densemargin.py runs it; core/densearith.py is the same construction mod 2^32 for a
block's records).

`deal(Size(dabits, triples))`: C's messages, generic (nothing in them depends on the values
or the pairs). S1's come from a 32-byte seed; S2's from a seed and its explicit values ([p]2,
[q]2 of the daBits, c2 of the triples and of their spares), 8 bytes each (`Size.width`).

- A daBit: bits x (S1's) and y (S2's) and [p] of p = x y, so r = x ^ y has [r] = x + y - 2
  [p]. To convert an XOR-shared bit b = b1 ^ b2, S1 sends b1 ^ x, S2 b2 ^ y, both hold
  u = b ^ r and [b] = u + (1 - 2u) [r].
- A triple (a, b, c = a b), all shared: for [x] [y] S1 and S2 open d = x - a and e = y - b,
  and [x y] = [c] + d [b] + e [a] + d e (the last S1's alone); where x y is wanted mod 2^m
  only (`Size.opened`: m = 32 for the default rule's margin of 29 bits) d and e are sent
  mod 2^m, m / 8 bytes each rather than 8.

The checks, t uniform mod 2^64 an element, drawn from both servers' nonces (`agree`):

- a daBit against a spare one-sided triple (x', y' uniform, [q] = [x' y']): S1 sends
  rho = t x - x', S2 sigma = y - y'; t [p] - [q] - sigma x' - rho y (S1's terms on S1, S2's
  on S2) is 0 where both are products;
- a triple against a spare (a', b', c'): both open rho = t a - a', sigma = b - b'; t [c] -
  [c'] - sigma t [a] - rho [b] + rho sigma is 0 where both are products.

Each server sends the other the SHA-256 of its share of those values (S2 of its negation):
equal iff every one is 0. An error e in a product passes only if t e = e' mod 2^64 (e' its
spare's): for e of 2-adic valuation v, probability 2^-(64 - v). A result read mod 2^w (the
width the margin needs, core/densemargin.py) changes only where some error has v < w, so
each wrong value passes with probability at most 2^-(65 - w) (2^-36 at the default rule's
w = 29; 2^-29 at w = 36, a rule of four decimals such as gap 0.1234, offset 0.0567).
What each server sees: x' pads rho, y' pads sigma, a' and b' pad the triple's rho and
sigma, a and b pad d and e (uniform), x and y the converted bits; C receives nothing.

daBits alone may be mod 2^32 (`Size.width` 4, bytes32: 4 bytes a value, S2's explicit values,
the pads and t alike, from core/densearith.py's stream of 4-byte words): a partner's and a
query's CLK bits (core/standing.py `bits_size`), whose shares are read mod 2^32 and less (D_B
and H mod 2^k, k = L.bit_length()). The same check mod 2^32: an error e in [p] changes a
share by 2 e, so only v <= k - 2 matters, and passes with probability at most 2^-(34 - k)
(2^-23 at 1,024 bits), the bound of core/densearith.py's block daBits and of
core/standingquery.py's own check. Triples, and the popcounts' daBits the margin reads mod
2^w, stay mod 2^64.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import dabitslices, densearith, kernel
from blindmatch.matcher.core.linkbit import SEED_BYTES, Transcript, prg
from blindmatch.matcher.core.triplecheck import DealRefused

U64 = npt.NDArray[np.uint64]
Ring = npt.NDArray[Any]  # uint64, or uint32 where `Size.width` is 4
T = TypeVar("T")
EMPTY = np.zeros(0, np.uint64)
# A deal without triples (a conversion: core/standing.py's pieces, a query's bits) is run a
# slice at a time in native code where it is built (core/dabitslices.py: the same bytes as
# the numpy below, without its streams and temporaries whole); numpy otherwise, and always
# for triples.
_NATIVE = kernel._kernel if kernel.NATIVE and hasattr(kernel._kernel, "dabit_first") else None


@dataclass(frozen=True)
class Size:
    """What a deal holds: `dabits` daBits and `triples` triples, whose products are wanted
    mod 2^(8 `opened`) (their openings d and e that many bytes each); `width`: the bytes of
    a daBit's values, 8 (mod 2^64) or, for daBits alone, 4 (mod 2^32: CLK bits,
    core/standing.py `bits_size`)."""

    dabits: int
    triples: int
    opened: int = 8
    width: int = 8

    def __post_init__(self) -> None:
        if self.dabits < 0 or self.triples < 0 or not 1 <= self.opened <= 8 or (
            self.width not in (4, 8) or (self.width == 4 and self.triples)
        ):  # fmt: skip
            raise ValueError(f"a deal of {self.dabits} daBits and {self.triples} triples "
                             f"({self.width}-byte values)")  # fmt: skip

    @property
    def explicit(self) -> int:
        """S2's explicit values ([p]2, [q]2, c2, c2'), `width` bytes each."""
        return 2 * self.dabits + 2 * self.triples

    @property
    def setup_bytes(self) -> tuple[int, int]:
        """The lengths of S1's and S2's setups."""
        return SEED_BYTES, SEED_BYTES + self.width * self.explicit

    @property
    def dtype(self) -> type[np.unsignedinteger[Any]]:
        return np.uint64 if self.width == 8 else np.uint32


def _stream(seed: bytes, sizes: Sequence[int], width: int = 8) -> list[Ring]:
    if width == 4:  # core/densearith.py's stream of 4-byte words
        return _cut(densearith._stream(seed, [sum(sizes)])[0], sizes)
    return _cut(prg(seed, sum(sizes)), sizes)


def _cut(raw: Ring, sizes: Sequence[int]) -> list[Ring]:
    out, at = [], 0
    for n in sizes:
        out.append(raw[at : at + n])
        at += n
    return out


def _s1_sizes(s: Size) -> list[int]:
    """S1's seed: x, [p]1, x', [q]1; a1, b1, c1, a1', b1', c1'."""
    return [s.dabits] * 4 + [s.triples] * 6


def _s2_sizes(s: Size) -> list[int]:
    """S2's seed: y, y'; a2, b2, a2', b2'."""
    return [s.dabits] * 2 + [s.triples] * 4


def _explicit_sizes(s: Size) -> list[int]:
    return [s.dabits] * 2 + [s.triples] * 2


@dataclass(frozen=True)
class Deal:
    to_s1: bytes
    to_s2: bytes
    size: Size


def deal(s: Size, seeds: tuple[bytes, bytes] | None = None) -> Deal:
    """C: `s`'s daBits and triples; `seeds` fixed only by tests."""
    s1, s2 = seeds or (secrets.token_bytes(SEED_BYTES), secrets.token_bytes(SEED_BYTES))
    if _NATIVE is not None and not s.triples:
        out = bytearray(s.setup_bytes[1])
        out[:SEED_BYTES] = s2
        dabitslices.deal(_NATIVE, s1, s2, s.dabits, memoryview(out)[SEED_BYTES:], s.width)
        return Deal(s1, bytes(out), s)
    x, p1, x_, q1, a1, b1, c1, a1_, b1_, c1_ = _stream(s1, _s1_sizes(s), s.width)
    y, y_, a2, b2, a2_, b2_ = _stream(s2, _s2_sizes(s), s.width)
    one = s.dtype(1)
    explicit = [(x & one) * (y & one) - p1, x_ * y_ - q1,
                (a1 + a2) * (b1 + b2) - c1, (a1_ + a2_) * (b1_ + b2_) - c1_]  # fmt: skip
    body = b"".join(np.ascontiguousarray(e, dtype=f"<u{s.width}").tobytes() for e in explicit)
    return Deal(s1, s2 + body, s)


def _digest(v: Ring) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(v, dtype=f"<u{v.itemsize}").tobytes()).digest()


def _words(message: bytes, sizes: Sequence[int], width: int) -> list[Ring]:
    if len(message) != width * sum(sizes):
        raise ValueError("ring64: the other server's message does not fit the deal")
    return _cut(np.frombuffer(message, f"<u{width}").astype(f"u{width}"), sizes)


class Party:
    """S1 (role 0) or S2 (role 1) on a deal: `agree` with the other's `nonce`, then
    `first(bits)` (the bits to convert, this server's XOR shares: to the other), `converted`
    (the other's `first`: this server's [bits]), `second(x, y)` (its shares of the factors,
    the triples' order: to the other), `products` (the other's `second`: the checks,
    `DealRefused` where one fails, then its [x y])."""

    def __init__(self, role: int, s: Size, setup: bytes, nonce: bytes | None = None) -> None:
        if role not in (0, 1):
            raise ValueError("ring64: role 0 (S1) or 1 (S2)")
        if len(setup) != s.setup_bytes[role]:
            raise ValueError(f"ring64: {'S1' if role == 0 else 'S2'}'s setup does not fit the deal")
        self.role, self.size = role, s
        self._nonce = nonce or secrets.token_bytes(SEED_BYTES)
        self._t: tuple[U64, U64] | None = None
        self._bits: U64 | None = None
        self._tau: bytes | None = None
        self._de: tuple[U64, U64] | None = None
        self._joint = b""
        self._b8 = np.zeros(0, np.uint8)
        self._sliced = None
        if _NATIVE is not None and not s.triples:  # core/dabitslices.py: no streams held
            self._sliced = dabitslices.Side(_NATIVE, role, s.dabits, setup, s.width)
            self._d = {k: EMPTY for k in ("a", "b", "c", "a_", "b_", "c_")}
            self._bit = EMPTY  # (each daBit's bit: in its bits' bit 1, dabitslices)
            return
        if role == 0:
            names = ["x", "p", "x_", "q", "a", "b", "c", "a_", "b_", "c_"]
            got = _stream(setup, _s1_sizes(s), s.width)
        else:
            names = ["y", "y_", "a", "b", "a_", "b_", "p", "q", "c", "c_"]
            got = _stream(setup[:SEED_BYTES], _s2_sizes(s), s.width)
            got += _cut(np.frombuffer(setup[SEED_BYTES:], f"<u{s.width}").astype(s.dtype),
                        _explicit_sizes(s))  # fmt: skip
        self._d = dict(zip(names, got, strict=True))
        self._one, self._two = s.dtype(1), s.dtype(2)
        self._bit = self._d["x" if role == 0 else "y"] & self._one

    def nonce(self) -> bytes:
        return self._nonce

    def agree(self, theirs: bytes) -> None:
        """The checks' t (an element of each daBit and triple) from both nonces (XOR)."""
        if self._t is not None:
            raise RuntimeError("ring64: the checks' randomness is agreed already")
        if len(theirs) != SEED_BYTES:
            raise ValueError(f"ring64: the other server's nonce is {SEED_BYTES} bytes")
        joint = bytes(x ^ y for x, y in zip(self._nonce, theirs, strict=True))
        if self._sliced is not None:  # t drawn a slice at a time
            self._joint, self._t = joint, (EMPTY, EMPTY)
            return
        t_d, t_m = _stream(joint, [self.size.dabits, self.size.triples], self.size.width)
        self._t = (t_d, t_m)

    def first(self, bits: npt.ArrayLike) -> bytes:
        """This server's XOR shares of the `dabits` bits masked by its daBit bits (packed),
        then the daBits' pad (S1 rho, S2 sigma) and its shares of the triples' rho, sigma."""
        if self._t is None or self._bits is not None:
            raise RuntimeError("ring64: first once, after agree")
        if np.size(bits) != self.size.dabits:
            raise ValueError("ring64: a bit a daBit")
        if self._sliced is not None:
            self._pads = (EMPTY, EMPTY, EMPTY)
            self._b8, message = self._sliced.first(bits, self._joint)
            self._bits = EMPTY
            return message
        b = np.asarray(bits).astype(self.size.dtype).ravel() & self._one
        d, (t_d, t_m) = self._d, self._t
        self._bits = b
        pad = t_d * self._bit - d["x_"] if self.role == 0 else self._bit - d["y_"]
        self._pads = (pad, t_m * d["a"] - d["a_"], d["b"] - d["b_"])
        masked = np.packbits((b ^ self._bit).astype(np.uint8), bitorder="little")
        w = self.size.width
        return masked.tobytes() + b"".join(p.astype(f"<u{w}").tobytes() for p in self._pads)

    def converted(self, theirs: bytes) -> Ring:
        """From the other's `first`: this server's additive shares of the bits (mod 2^64, or
        2^32 where `Size.width` is 4);
        its share of the checks' values kept for `second`'s digest."""
        if self._bits is None or self._tau is not None:
            raise RuntimeError("ring64: converted once, after first")
        s, d = self.size, self._d
        packed = (s.dabits + 7) // 8
        if len(theirs) < packed:
            raise ValueError("ring64: the other server's message does not fit the deal")
        if self._sliced is not None:
            if len(theirs) != packed + s.width * s.dabits:
                raise ValueError("ring64: the other server's message does not fit the deal")
            out, self._tau = self._sliced.converted(self._b8, self._joint, theirs)
            return out
        pad, rho, sigma = _words(theirs[packed:], [s.dabits, s.triples, s.triples], s.width)
        masked = np.unpackbits(np.frombuffer(theirs[:packed], np.uint8), bitorder="little")
        u = self._bits ^ self._bit ^ masked[: s.dabits].astype(s.dtype)
        assert self._t is not None
        t_d, t_m = self._t
        one, two = self._one, self._two
        r = self._bit - two * d["p"]  # this server's [r] = [x ^ y]
        out = (one - two * u) * r + (u if self.role == 0 else s.dtype(0))
        rho, sigma = rho + self._pads[1], sigma + self._pads[2]
        tau = t_m * d["c"] - d["c_"] - sigma * t_m * d["a"] - rho * d["b"]
        if self.role == 0:  # rho is S1's own pad, sigma (`pad`) S2's
            dabit = t_d * d["p"] - d["q"] - pad * d["x_"]
            tau = tau + rho * sigma
        else:
            dabit = t_d * d["p"] - d["q"] - pad * self._bit
        both = np.concatenate([dabit, tau])
        self._tau = _digest(both if self.role == 0 else s.dtype(0) - both)
        result: Ring = out
        return result

    def second(self, x: U64, y: U64) -> bytes:
        """The digest of this server's share of the checks' values, then its shares of
        d = x - a and e = y - b of every triple (their low `Size.opened` bytes)."""
        if self._tau is None or self._de is not None:
            raise RuntimeError("ring64: second once, after converted")
        if np.shape(x) != (self.size.triples,) or np.shape(y) != (self.size.triples,):
            raise ValueError("ring64: a factor of each triple")
        self._de = (
            np.asarray(x, np.uint64) - self._d["a"],
            np.asarray(y, np.uint64) - self._d["b"],
        )
        k = self.size.opened
        low = [v.astype("<u8").view(np.uint8).reshape(-1, 8)[:, :k] for v in self._de]
        return self._tau + b"".join(np.ascontiguousarray(v).tobytes() for v in low)

    def products(self, theirs: bytes) -> U64:
        """From the other's `second`: `DealRefused` unless its digest is this server's (every
        daBit and triple a product), then this server's shares of x y (right mod
        2^(8 `Size.opened`))."""
        if self._de is None or self._tau is None:
            raise RuntimeError("ring64: products after second")
        if theirs[:32] != self._tau:
            raise DealRefused(
                f"the sacrifice of the dealt daBits and triples mod 2^{8 * self.size.width} "
                "failed: a value dealt is not a product"
            )
        n, k = self.size.triples, self.size.opened
        if len(theirs) != 32 + 2 * n * k:
            raise ValueError("ring64: the other server's message does not fit the deal")
        full = np.zeros((2 * n, 8), np.uint8)
        full[:, :k] = np.frombuffer(theirs[32:], np.uint8).reshape(2 * n, k)
        d_, e_ = _cut(full.view("<u8").ravel().astype(np.uint64), [n, n])
        d, e = d_ + self._de[0], e_ + self._de[1]  # right mod 2^(8 k)
        out = self._d["c"] + d * self._d["b"] + e * self._d["a"]
        if self.role == 0:
            out = out + d * e
        self._d = {}  # the deal serves one batch
        result: U64 = out
        return result


def exchange(s1: Party, s2: Party, bits: tuple[npt.ArrayLike, npt.ArrayLike], t: Transcript,
             clock: dict[str, float] | None = None) -> tuple[Ring, Ring]:  # fmt: skip
    """Conversion alone (no triples) between two parties in this process: each server's
    [bits], the checks passed (`DealRefused` otherwise); the messages through `t`, each
    server's CPU seconds into `clock`."""
    parties, who, spent = (s1, s2), ("S1", "S2"), [0.0, 0.0]

    def step(k: int, run: Callable[..., T], *args: object) -> T:
        t0 = time.process_time()
        out = run(*args)
        spent[k] += time.process_time() - t0
        return out

    nonces = [s1.nonce(), s2.nonce()]
    for k in (0, 1):
        parties[k].agree(t.send(who[1 - k], who[k], "nonce", nonces[1 - k]))
    sent = [t.send(who[k], who[1 - k], "convert", step(k, parties[k].first, bits[k]))
            for k in (0, 1)]  # fmt: skip
    got = [step(k, parties[k].converted, sent[1 - k]) for k in (0, 1)]
    empty = np.zeros(0, np.uint64)
    digests = [t.send(who[k], who[1 - k], "digest", step(k, parties[k].second, empty, empty))
               for k in (0, 1)]  # fmt: skip
    for k in (0, 1):
        step(k, parties[k].products, digests[1 - k])
    if clock is not None:
        for k in (0, 1):
            clock[who[k]] = clock.get(who[k], 0.0) + spent[k]
    return got[0], got[1]


__all__ = ["Deal", "Party", "Size", "deal", "exchange"]
