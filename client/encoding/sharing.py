"""Client-side primitives of the two-server design (docs/privacy-design.md, options a and b).

Not wired into `blindmatch encode` yet: plain functions, tested, for the build to use.

- `band_positions`: which bit positions each blocking band samples, drawn from the project
  secret (so the matcher cannot choose them, and they differ between projects);
- `band_keys`: each record's keyed band keys, equal exactly when two records agree on every
  position of the band (what the blocking server compares; it learns nothing else);
- `split_shares`: a CLK as two XOR shares, each uniformly random on its own (one for each
  of the two non-colluding servers).

Bits follow the matcher's convention (core/blocking.py): bit p of a CLK is bit p % 64 of its
64-bit little-endian word p // 64.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

Clks = npt.NDArray[np.uint8]

POSITIONS_LABEL = b"blindmatch band positions v1"
KEYS_LABEL = b"blindmatch band keys v1"


class _Stream:
    """HMAC-SHA256(key, label || counter) as a stream of uniform integers."""

    def __init__(self, key: bytes, label: bytes) -> None:
        self.key, self.label, self.counter = key, label, 0
        self.buf = b""

    def u32(self) -> int:
        if len(self.buf) < 4:
            block = hmac.new(
                self.key, self.label + self.counter.to_bytes(8, "big"), hashlib.sha256
            ).digest()
            self.counter += 1
            self.buf += block
        out, self.buf = int.from_bytes(self.buf[:4], "big"), self.buf[4:]
        return out

    def below(self, n: int) -> int:
        """Uniform in [0, n), by rejection (no modulo bias)."""
        limit = (1 << 32) - (1 << 32) % n
        while True:
            x = self.u32()
            if x < limit:
                return x % n


def band_positions(
    secret: bytes, pool: Sequence[int] | npt.NDArray[np.integer], bits: int, bands: int
) -> npt.NDArray[np.int32]:
    """(bands, bits): each band `bits` distinct positions of `pool`, drawn by a partial
    Fisher-Yates shuffle driven by HMAC-SHA256 of the secret. Every member holding the secret
    draws the same bands."""
    pool_list = [int(p) for p in pool]
    if len(set(pool_list)) != len(pool_list):
        raise ValueError("band positions: the pool has repeated positions")
    if not 1 <= bits <= len(pool_list):
        raise ValueError(f"band positions: {bits} bits a band from a pool of {len(pool_list)}")
    if bands < 1:
        raise ValueError("band positions: at least one band")
    key = hmac.new(secret, POSITIONS_LABEL, hashlib.sha256).digest()
    stream = _Stream(key, f"{bits}x{bands}".encode())
    out = np.empty((bands, bits), dtype=np.int32)
    for band in range(bands):
        deck = list(pool_list)
        for k in range(bits):
            j = k + stream.below(len(deck) - k)
            deck[k], deck[j] = deck[j], deck[k]
        out[band] = deck[:bits]
    return out


def _bits(clks: Clks) -> npt.NDArray[np.uint8]:
    return np.unpackbits(np.ascontiguousarray(clks), axis=1, bitorder="little")


def band_keys(
    clks: Clks, positions: npt.NDArray[np.int32], secret: bytes
) -> npt.NDArray[np.uint64]:
    """(n, bands) keys: the first 8 bytes of HMAC-SHA256 under a key derived from the secret of
    the band's number and the record's bits at the band's positions. Two records' keys in a
    band are equal exactly when those bits are (up to a 2^-64 chance)."""
    if positions.ndim != 2 or not positions.size:
        raise ValueError("band keys: positions must be (bands, bits)")
    bits = _bits(clks)
    if int(positions.max()) >= bits.shape[1] or int(positions.min()) < 0:
        raise ValueError(f"band keys: a position outside the CLKs' {bits.shape[1]} bits")
    key = hmac.new(secret, KEYS_LABEL, hashlib.sha256).digest()
    out = np.empty((len(clks), len(positions)), dtype=np.uint64)
    for band, pos in enumerate(positions):
        packed = np.packbits(bits[:, pos], axis=1)
        prefix = band.to_bytes(4, "big")
        for i, row in enumerate(packed):
            digest = hmac.new(key, prefix + row.tobytes(), hashlib.sha256).digest()
            out[i, band] = int.from_bytes(digest[:8], "big")
    return out


def split_shares(clks: Clks) -> tuple[Clks, Clks]:
    """(x1, x2) with x1 ^ x2 == clks: x1 uniformly random (from the OS's generator), so each
    share alone says nothing about the CLKs."""
    x = np.ascontiguousarray(clks, dtype=np.uint8)
    x1 = np.frombuffer(secrets.token_bytes(x.size), dtype=np.uint8).reshape(x.shape)
    return x1.copy(), x ^ x1


def popcounts(clks: Clks) -> npt.NDArray[np.int64]:
    """Each CLK's number of set bits (what a member sends the combiner)."""
    return np.bitwise_count(np.ascontiguousarray(clks)).sum(axis=1).astype(np.int64)
