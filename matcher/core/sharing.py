"""Server-side primitives of secret-shared Dice (docs/privacy-design.md, option b).

Each of two non-colluding servers holds one XOR share of every CLK (client/encoding/sharing.py
`split_shares`). For a candidate pair (a, b) each computes `permuted_difference`: its shares of
a and b XORed, the bits permuted by a permutation drawn from a key the two servers share and
the pair's record numbers, so both apply the same one. The combiner XORs the two servers'
messages: the result is the permuted difference of the CLKs themselves, whose popcount is their
Hamming distance; with the popcounts the members sent, `combiner_dice` is their Dice, exactly,
and the combiner learns nothing of where the CLKs differ.

The permutation is Fisher-Yates driven by AES-128 in counter mode (16-bit draws, unbiased by
Lemire's multiply-and-reject), the choice of docs/privacy-design.md ("Per-pair cost"): the
native module does it at about 3.4 us a pair (matcher/core/_pairperm.c, `pair_messages`); the
functions here are the same permutation in Python, its reference, and the fallback where the
native module is missing or the CPU has no AES instructions. matcher/core/twoserver.py runs
the whole pipeline on them.
"""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from blindmatch.matcher.core.kernel import NATIVE, _kernel

Share = npt.NDArray[np.uint8]

PERMUTATION_LABEL = b"blindmatch pair permutation v2"
MAX_BITS = 1 << 16  # 16-bit draws
MAX_MEMBERS = 1 << 16  # a record number is (member << 32) | row, 48 bits


def record_number(member: int, row: int) -> int:
    """The number a pair's permutation is drawn from: (member << 32) | row."""
    if not 0 <= member < MAX_MEMBERS or not 0 <= row < 1 << 32:
        raise ValueError(f"record number: member {member} row {row} out of range")
    return (member << 32) | row


def permutation_key(key: bytes) -> bytes:
    """The AES-128 key both servers derive from their shared key."""
    return hmac.new(key, PERMUTATION_LABEL, hashlib.sha256).digest()[:16]


def pair_permutation(key: bytes, a: int, b: int, bits: int) -> npt.NDArray[np.intp]:
    """A uniform permutation of `bits` positions from the servers' key and the pair's record
    numbers `a`, `b` (`record_number`): Fisher-Yates, position k swapped with a uniform
    j <= k from the last down, the draws 16-bit little-endian words of AES-128-CTR whose
    counter block is a and b (6 bytes big-endian each) and a 4-byte big-endian counter."""
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"pair permutation: {bits} bits (1 to {MAX_BITS})")
    if not 0 <= a < 1 << 48 or not 0 <= b < 1 << 48:
        raise ValueError("pair permutation: record numbers are 48-bit")
    nonce = a.to_bytes(6, "big") + b.to_bytes(6, "big") + bytes(4)
    stream = Cipher(algorithms.AES(permutation_key(key)), modes.CTR(nonce)).encryptor()
    perm = np.arange(bits, dtype=np.intp)
    draws: list[int] = []
    at = 0
    for k in range(bits - 1, 0, -1):
        span = k + 1
        reject = (65536 - span) % span
        while True:
            if at == len(draws):
                draws = np.frombuffer(stream.update(bytes(256)), dtype="<u2").tolist()
                at = 0
            m = draws[at] * span
            at += 1
            if m & 0xFFFF >= reject:
                break
        j = m >> 16
        perm[k], perm[j] = perm[j], perm[k]
    return perm


def permuted_difference(share_a: Share, share_b: Share, key: bytes, a: int, b: int) -> Share:
    """One server's message for pair (a, b): (share_a ^ share_b) with its bits permuted
    (bit p of a share is bit p % 8 of byte p // 8)."""
    if share_a.shape != share_b.shape or share_a.ndim != 1:
        raise ValueError("permuted difference: two shares of one CLK width")
    bits = np.unpackbits(share_a ^ share_b, bitorder="little")
    return np.packbits(bits[pair_permutation(key, a, b, len(bits))], bitorder="little")


def pair_messages(
    shares_a: Share,
    shares_b: Share,
    member_a: int,
    member_b: int,
    rows_a: npt.NDArray[np.uint32],
    rows_b: npt.NDArray[np.uint32],
    key: bytes,
) -> Share:
    """One server's messages for a batch of pairs (member_a's row rows_a[k], member_b's row
    rows_b[k]): (pairs, width) uint8, row k `permuted_difference` of the pair's shares."""
    shares_a = np.ascontiguousarray(shares_a, dtype=np.uint8)
    shares_b = np.ascontiguousarray(shares_b, dtype=np.uint8)
    if shares_a.ndim != 2 or shares_b.ndim != 2 or shares_a.shape[1] != shares_b.shape[1]:
        raise ValueError("pair messages: shares must be (n, width) of one width")
    width = shares_a.shape[1]
    ia = np.ascontiguousarray(rows_a, dtype=np.uint32)
    ib = np.ascontiguousarray(rows_b, dtype=np.uint32)
    if len(ia) != len(ib):
        raise ValueError("pair messages: as many rows of a as of b")
    if not 0 <= member_a < MAX_MEMBERS or not 0 <= member_b < MAX_MEMBERS:
        raise ValueError("pair messages: member numbers are 16-bit")
    if len(ia) and (int(ia.max()) >= len(shares_a) or int(ib.max()) >= len(shares_b)):
        raise ValueError("pair messages: a row outside the shares")
    if NATIVE and len(ia):
        raw = _kernel.pair_messages(
            shares_a, shares_b, width, ia, ib, member_a, member_b, permutation_key(key)
        )
        if raw is not None:
            return np.frombuffer(raw, dtype=np.uint8).reshape(len(ia), width)
    out = np.empty((len(ia), width), dtype=np.uint8)
    for k, (i, j) in enumerate(zip(ia.tolist(), ib.tolist(), strict=True)):
        out[k] = permuted_difference(
            shares_a[i], shares_b[j], key, record_number(member_a, i), record_number(member_b, j)
        )
    return out


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
