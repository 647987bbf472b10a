"""Server-side primitives of secret-shared Dice (docs/privacy-design.md, option b).

Not wired into a run yet: plain functions, tested, for the build to use.

Each of two non-colluding servers holds one XOR share of every CLK (client/encoding/sharing.py
`split_shares`). For a candidate pair (a, b) each computes `permuted_difference`: its shares of
a and b XORed, the bits permuted by a permutation drawn from a key the two servers share and
the pair's ids, so both apply the same one. The combiner XORs the two servers' messages: the
result is the permuted difference of the CLKs themselves, whose popcount is their Hamming
distance; with the popcounts the members sent, `combiner_dice` is their Dice, exactly, and the
combiner learns nothing of where the CLKs differ. A C implementation of the permutation
(Fisher-Yates on AES-CTR, about 3.4 us a pair) is benchmarks/twoserver_perm.c; this one is the
reference.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import numpy.typing as npt

Share = npt.NDArray[np.uint8]

PERMUTATION_LABEL = b"blindmatch pair permutation v1"


def pair_permutation(key: bytes, a: int, b: int, bits: int) -> npt.NDArray[np.intp]:
    """A uniform permutation of `bits` positions from the servers' key and the pair's ids:
    Fisher-Yates with HMAC-SHA256 in counter mode as the random source (32-bit draws,
    rejection: no bias)."""
    if bits < 1:
        raise ValueError("pair permutation: at least one bit")
    seed = hmac.new(
        key, PERMUTATION_LABEL + a.to_bytes(8, "big") + b.to_bytes(8, "big"), hashlib.sha256
    ).digest()
    perm = np.arange(bits, dtype=np.intp)
    buf = b""
    counter = 0
    for k in range(bits - 1, 0, -1):
        n = k + 1
        limit = (1 << 32) - (1 << 32) % n
        while True:
            if len(buf) < 4:
                buf += hashlib.sha256(seed + counter.to_bytes(8, "big")).digest()
                counter += 1
            x, buf = int.from_bytes(buf[:4], "big"), buf[4:]
            if x < limit:
                break
        j = x % n
        perm[k], perm[j] = perm[j], perm[k]
    return perm


def permuted_difference(share_a: Share, share_b: Share, key: bytes, a: int, b: int) -> Share:
    """One server's message for pair (a, b): (share_a ^ share_b) with its bits permuted."""
    if share_a.shape != share_b.shape or share_a.ndim != 1:
        raise ValueError("permuted difference: two shares of one CLK width")
    bits = np.unpackbits(share_a ^ share_b)
    return np.packbits(bits[pair_permutation(key, a, b, len(bits))])


def combiner_dice(message_1: Share, message_2: Share, popcount_a: int, popcount_b: int) -> float:
    """The combiner's Dice from the two servers' messages for a pair and its popcounts:
    1 - Hamming / (|a| + |b|), which is 2|a & b| / (|a| + |b|); 0 for two empty CLKs."""
    if message_1.shape != message_2.shape:
        raise ValueError("combiner: the two messages differ in length")
    total = popcount_a + popcount_b
    if total <= 0:
        return 0.0
    hamming = int(np.bitwise_count(message_1 ^ message_2).sum())
    return 1.0 - hamming / total
