"""Keyed blocking bands of a CLK, as members compute them for the two-server design
(docs/privacy-design.md; the rest of a member's upload: client/encoding/sharing.py):

- `band_positions`: which bit positions each blocking band samples, drawn from the project
  secret (so the matcher cannot choose them, and they differ between projects);
- `band_keys`: each record's keyed band keys, equal exactly when two records agree on every
  position of the band (what the blocking server compares; it learns nothing else): SipHash-2-4
  (a keyed PRF for short inputs, vectorised in numpy) of the band's bits under a key for each
  band derived from the secret by HMAC-SHA256.

Bits follow the matcher's convention (core/blocking.py): bit p of a CLK is bit p % 64 of its
64-bit little-endian word p // 64.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterator, Sequence

import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding.schema import MAX_BAND_BITS

Clks = npt.NDArray[np.uint8]

POSITIONS_LABEL = b"blindmatch band positions v1"
KEYS_LABEL = b"blindmatch band keys v2"


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


_U64 = np.uint64
SIPHASH_ROWS = 16_384  # records a SipHash call: arrays of a few 10^4 are the fastest


def siphash24(
    k0: npt.NDArray[np.uint64] | np.uint64,
    k1: npt.NDArray[np.uint64] | np.uint64,
    m: npt.NDArray[np.uint64],
) -> npt.NDArray[np.uint64]:
    """SipHash-2-4 (Aumasson and Bernstein) of 8-byte messages, element-wise: key (k0, k1)
    and message m as little-endian 64-bit words, broadcast together. In place on four state
    arrays (about 100 ns an element on arrays of a few 10^4)."""
    m = np.asarray(m, dtype=np.uint64)
    shape = np.broadcast_shapes(np.shape(k0), np.shape(k1), m.shape)
    state = np.empty((4, *shape), dtype=np.uint64)
    state[0] = k0 ^ _U64(0x736F6D6570736575)
    state[1] = k1 ^ _U64(0x646F72616E646F6D)
    state[2] = k0 ^ _U64(0x6C7967656E657261)
    state[3] = k1 ^ _U64(0x7465646279746573)
    v0, v1, v2, v3 = state
    np.bitwise_xor(v3, m, out=v3)
    spare = np.empty(shape, dtype=np.uint64)
    add, xor = np.add, np.bitwise_xor

    def rotl(x: npt.NDArray[np.uint64], n: int) -> None:
        np.right_shift(x, _U64(64 - n), out=spare)
        np.left_shift(x, _U64(n), out=x)
        np.bitwise_or(x, spare, out=x)

    def rounds(n: int) -> None:
        for _ in range(n):
            add(v0, v1, out=v0)
            rotl(v1, 13)
            xor(v1, v0, out=v1)
            rotl(v0, 32)
            add(v2, v3, out=v2)
            rotl(v3, 16)
            xor(v3, v2, out=v3)
            add(v0, v3, out=v0)
            rotl(v3, 21)
            xor(v3, v0, out=v3)
            add(v2, v1, out=v2)
            rotl(v1, 17)
            xor(v1, v2, out=v1)
            rotl(v2, 32)

    last = _U64(8 << 56)  # the final block: the message's length, 8, and no tail
    rounds(2)
    xor(v0, m, out=v0)
    xor(v3, last, out=v3)
    rounds(2)
    xor(v0, last, out=v0)
    xor(v2, _U64(0xFF), out=v2)
    rounds(4)
    out: npt.NDArray[np.uint64] = v0 ^ v1 ^ v2 ^ v3
    return out


@functools.lru_cache(maxsize=4)
def _band_secrets(secret: bytes, bands: int) -> tuple[npt.NDArray[np.uint64], ...]:
    """Each band's SipHash key (k0, k1), kept for the process's next record under the same
    secret (as sharing.py keeps the band positions): a band an HMAC, about 6 ms a CLK of 1,600
    bands, was a quarter of a one-record query's encoding; read-only."""
    key = hmac.new(secret, KEYS_LABEL, hashlib.sha256).digest()
    words = [
        np.frombuffer(
            hmac.new(key, band.to_bytes(4, "big"), hashlib.sha256).digest()[:16], dtype="<u8"
        )
        for band in range(bands)
    ]
    both = np.array(words, dtype=np.uint64).reshape(bands, 2)
    out = both[:, 0].copy(), both[:, 1].copy()
    for half in out:
        half.setflags(write=False)
    return out


def band_keys(
    clks: Clks, positions: npt.NDArray[np.int32], secret: bytes
) -> npt.NDArray[np.uint64]:
    """(n, bands) keys: SipHash-2-4, under a key for the band derived from the secret, of the
    record's bits at the band's positions (bit j of the message is the bit at positions[band,
    j]). Two records' keys in a band are equal exactly when those bits are (up to a 2^-64
    chance); without the secret they say nothing else."""
    by_position = _by_position(clks, positions)
    k0, k1 = _band_secrets(secret, len(positions))
    return np.ascontiguousarray(_keys(by_position, positions, k0, k1).T)


def band_key_ranges(
    clks: Clks, positions: npt.NDArray[np.int32], secret: bytes, step: int
) -> Iterator[npt.NDArray[np.uint64]]:
    """`band_keys`, `step` bands at a time ((n, step) each, the last maybe fewer): an upload's
    keys are rows x bands x 8 bytes (640 MB a CLK at 50,000 records), sealed a range at a
    time (client/encoding/sharedwrite.py)."""
    by_position = _by_position(clks, positions)
    k0, k1 = _band_secrets(secret, len(positions))
    for lo in range(0, len(positions), step):
        hi = lo + step
        yield np.ascontiguousarray(_keys(by_position, positions[lo:hi], k0[lo:hi], k1[lo:hi]).T)


def _by_position(clks: Clks, positions: npt.NDArray[np.int32]) -> npt.NDArray[np.uint8]:
    """The CLKs' bits, (positions, n): a band's rows are whole rows (checked against the
    bands' positions)."""
    if positions.ndim != 2 or not positions.size:
        raise ValueError("band keys: positions must be (bands, bits)")
    if positions.shape[1] > MAX_BAND_BITS:
        raise ValueError(f"band keys: at most {MAX_BAND_BITS} bits a band")
    # Unpacked from the bytes' transpose: no (n, bits) array besides (51 MB at 50,000).
    out = np.unpackbits(np.ascontiguousarray(np.asarray(clks).T), axis=0, bitorder="little")
    if int(positions.max()) >= out.shape[0] or int(positions.min()) < 0:
        raise ValueError(f"band keys: a position outside the CLKs' {out.shape[0]} bits")
    return out


def _keys(
    by_position: npt.NDArray[np.uint8],
    positions: npt.NDArray[np.int32],
    k0: npt.NDArray[np.uint64],
    k1: npt.NDArray[np.uint64],
) -> npt.NDArray[np.uint64]:
    """(bands, n) keys of the bands `positions`, under the bands' keys (k0, k1)."""
    n = by_position.shape[1]
    out = np.empty((len(positions), n), dtype=np.uint64)
    # Few records (a query's): the bands' messages gathered, all `step` bands' at once (one
    # packbits, not one a band), then SipHash over them in one call, rather than one call a
    # band of a handful of elements.
    step = max(1, SIPHASH_ROWS // max(n, 1))
    width = (positions.shape[1] + 7) // 8
    for lo_band in range(0, len(positions), step):
        hi_band = min(lo_band + step, len(positions))
        chosen = by_position[positions[lo_band:hi_band]]  # (bands, bits, n)
        packed = np.packbits(chosen, axis=1, bitorder="little")  # (bands, bytes, n)
        padded = np.zeros((hi_band - lo_band, n, 8), dtype=np.uint8)
        padded[:, :, :width] = packed.transpose(0, 2, 1)
        got = padded.view("<u8")[:, :, 0]  # (bands, n)
        for lo in range(0, n, SIPHASH_ROWS):
            hi = lo + SIPHASH_ROWS
            out[lo_band:hi_band, lo:hi] = siphash24(
                k0[lo_band:hi_band, None], k1[lo_band:hi_band, None], got[:, lo:hi]
            )
    return out
