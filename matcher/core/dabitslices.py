"""core/ring64.py's daBit conversions without triples (a standing partner's pieces, a query's
bits and popcounts: core/standing.py, core/standingsteps.py) a slice at a time, in native
code (matcher/core/_standing.c `dabit_first`, `dabit_converted`, `dabit_deal`), mod 2^64 or
(`width` 4: CLK bits, bytes32) mod 2^32.

ring64's numpy path draws each seed's whole AES-CTR stream (`linkbit.prg`: 8 bytes a daBit a
word, 48 bytes a daBit at C, 32 at S1) into fresh memory and makes an 8-byte temporary a bit
at each step; at a piece's 2,097,152 daBits that is hundreds of MB a piece, mapped and
page-faulted in afresh, and most of a conversion's CPU was that (system time included:
docs/performance.md "The standing conversion's CPU a record"). Here every stream is read
`SLICE` words at a time from where `prg` would have it (its counter started there) into
buffers that stay in cache, and each step is one native pass: the same messages, shares and
digests byte for byte (tests/test_standing_speed.py compares them with the numpy path's).
What is held whole: a server's bits (a byte a daBit), its message and the converted shares.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from blindmatch.matcher.core.linkbit import SEED_BYTES

SLICE = 1 << 15  # daBits a slice: 256 KiB a stream's 8-byte words
U8 = npt.NDArray[np.uint8]
Ring = npt.NDArray[Any]  # uint64 words, or uint32 (`width` 4)
_ZEROS = memoryview(bytes(8 * (SLICE + 1)))


def _scratch(k: int, width: int) -> list[Ring]:
    """`k` buffers a slice's words fit (and the skip and the block `update_into` wants spare)."""
    return [np.empty(SLICE + 8, f"u{width}") for _ in range(k)]


def _aligned(v: Ring) -> Ring:
    return v if v.ctypes.data % v.itemsize == 0 else v.copy()


class Words:
    """`seed`'s `prg` stream cut into sections of `sizes` words of `width` bytes (ring64's
    `_stream`), read a slice at a time."""

    def __init__(self, seed: bytes, sizes: Sequence[int], width: int = 8) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"link bits: a seed is {SEED_BYTES} bytes")
        self.seed, self.width = bytes(seed), width
        self.starts = [sum(sizes[:k]) for k in range(len(sizes))]

    def read(self, section: int, lo: int, n: int, buf: Ring) -> Ring:
        """Words [lo, lo + n) of `section` (n <= SLICE), into `buf` (a `_scratch` buffer)."""
        at, block = self.starts[section] + lo, 16 // self.width  # words a counter block
        skip = at % block
        counter = (at // block).to_bytes(16, "big")
        stream = Cipher(algorithms.AES(self.seed), modes.CTR(counter)).encryptor()
        size = self.width * (n + skip)
        stream.update_into(_ZEROS[:size], buf.data.cast("B")[: size + 15])
        return buf[skip : skip + n]


def _slices(n: int) -> range:
    return range(0, n, SLICE)


def deal(native: Any, s1: bytes, s2: bytes, n: int, out: memoryview, width: int = 8) -> None:
    """C: S2's explicit values of `n` daBits, [p]2 then [q]2 (2 `width` n bytes, into `out`),
    from S1's seed (x, [p]1, x', [q]1) and S2's (y, y')."""
    w, bufs = width, _scratch(6, width)
    one, two = Words(s1, [n] * 4, w), Words(s2, [n] * 2, w)
    for lo in _slices(n):
        m = min(SLICE, n - lo)
        x, p1, x_, q1 = (one.read(k, lo, m, bufs[k]) for k in range(4))
        y, y_ = (two.read(k, lo, m, bufs[4 + k]) for k in range(2))
        native.dabit_deal(x, y, p1, x_, y_, q1, out[w * lo : w * (lo + m)],
                          out[w * (n + lo) : w * (n + lo + m)], w)  # fmt: skip


class Side:
    """A server's (`role` 0 S1, 1 S2) `n` daBits of `width`-byte values from its setup (S1's
    seed: x, [p]1, x', [q]1; S2's: y, y', then its explicit [p]2 and [q]2), without
    triples."""

    def __init__(self, native: Any, role: int, n: int, setup: bytes, width: int = 8) -> None:
        self.native, self.role, self.n, self.width = native, role, n, width
        self.own = Words(setup[:SEED_BYTES], [n] * (4 if role == 0 else 2), width)
        self.explicit = (None if role == 0
                         else np.frombuffer(setup, f"<u{width}", 2 * n, SEED_BYTES))  # fmt: skip

    def first(self, bits: npt.ArrayLike, joint: bytes) -> tuple[U8, bytes]:
        """ring64's `Party.first` message (the bits masked, packed; then the pad) and this
        server's bits, each daBit's bit in its bit 1 (what `converted` reads); `joint`: the
        checks' seed (their t: its stream's first `n` words)."""
        n, role, w = self.n, self.role, self.width
        b8 = np.array(np.asarray(bits).ravel(), dtype=np.uint8)  # a copy the kernel marks
        packed = (n + 7) // 8
        out = bytearray(packed + w * n)
        view, t, bufs = memoryview(out), Words(joint, [n], w), _scratch(3, w)
        for lo in _slices(n):
            m = min(SLICE, n - lo)
            word = self.own.read(0, lo, m, bufs[0])  # x or y
            spare = self.own.read(2 if role == 0 else 1, lo, m, bufs[1])  # x' or y'
            tt = t.read(0, lo, m, bufs[2]) if role == 0 else word
            self.native.dabit_first(b8[lo : lo + m], word, tt, spare, role,
                                    view[lo // 8 : (lo + m + 7) // 8],
                                    view[packed + w * lo : packed + w * (lo + m)], w)  # fmt: skip
        return b8, bytes(out)

    def converted(self, b8: U8, joint: bytes, theirs: bytes) -> tuple[Ring, bytes]:
        """ring64's `Party.converted` from the other's `first` (`theirs`, its length
        checked by the caller): this server's additive shares of the bits mod 2^(8 `width`)
        and the digest of its share of the checks (S2's negated)."""
        n, role, w = self.n, self.role, self.width
        packed, view = (n + 7) // 8, memoryview(theirs)
        out, check = np.empty(n, f"u{w}"), np.empty(SLICE, f"u{w}")
        t, bufs, digest = Words(joint, [n], w), _scratch(4, w), hashlib.sha256()
        for lo in _slices(n):
            m = min(SLICE, n - lo)
            tt = t.read(0, lo, m, bufs[0])
            if self.explicit is None:
                p, q = self.own.read(1, lo, m, bufs[1]), self.own.read(3, lo, m, bufs[2])
                spare = self.own.read(2, lo, m, bufs[3])  # x'
            else:
                p = _aligned(self.explicit[lo : lo + m])
                q = _aligned(self.explicit[n + lo : n + lo + m])
                spare = p  # (not read at S2)
            self.native.dabit_converted(b8[lo : lo + m], p, q, tt, spare,
                                        view[packed + w * lo : packed + w * (lo + m)],
                                        view[lo // 8 : (lo + m + 7) // 8], role,
                                        out[lo : lo + m], check[:m], w)  # fmt: skip
            digest.update(check[:m].data)
        return out, digest.digest()


__all__ = ["SLICE", "Side", "Words", "deal"]
