"""The simulated protocol and the blocking views of benchmarks/twoserver.py (a part of it,
not a script): candidates by keyed-LSH band collisions, the three-party secret-shared Dice
run on them, C's two-hop view of a member, and S1's and S2's view of blocking with sealed
band keys (the shipped client's, S1's join, S2's expansion)."""

from __future__ import annotations

import hashlib
import secrets
import time

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from blindmatch.client.encoding import sharing
from blindmatch.client.tools.privacy.graph import (
    _double_centred,
)
from blindmatch.matcher.core import twoblocking


def candidates(keys_a: np.ndarray, keys_b: np.ndarray) -> npt.NDArray[np.intp]:
    """Cross-member pairs (row in a, row in b) sharing at least one band key, in row order:
    the product of the two members' (record x band key) incidence matrices."""
    ids: dict[tuple[int, int], int] = {}
    incidence = []
    for keys in (keys_a, keys_b):
        rows, cols = [], []
        for band in range(keys.shape[1]):
            for i, k in enumerate(keys[:, band].tolist()):
                rows.append(i)
                cols.append(ids.setdefault((band, k), len(ids)))
        incidence.append((np.array(rows), np.array(cols)))
    mats = [
        sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(keys), len(ids)))
        for (r, c), keys in zip(incidence, (keys_a, keys_b), strict=True)
    ]
    both = (mats[0] @ mats[1].T).tocoo()
    pairs = np.stack([both.row, both.col], axis=1).astype(np.intp)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def protocol(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], pairs: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.float64], int, float]:
    """Run the three-party protocol on candidate pairs: (Dice at C, bytes to C, seconds)."""
    rng = np.random.default_rng(secrets.randbits(64))
    a1 = rng.integers(0, 256, size=a.shape, dtype=np.uint8)
    b1 = rng.integers(0, 256, size=b.shape, dtype=np.uint8)
    a2, b2 = a ^ a1, b ^ b1  # S1 holds a1, b1; S2 holds a2, b2
    pop_a, pop_b = np.bitwise_count(a).sum(1), np.bitwise_count(b).sum(1)  # to C
    shared_key = secrets.token_bytes(32)  # S1 and S2 only
    bits = 8 * a.shape[1]
    started = time.perf_counter()
    dice = np.empty(len(pairs))
    for k, (i, j) in enumerate(pairs.tolist()):
        seed = hashlib.blake2b(f"{i},{j}".encode(), key=shared_key, digest_size=8).digest()
        perm = np.random.default_rng(int.from_bytes(seed, "big")).permutation(bits)
        m1 = np.packbits(np.unpackbits(a1[i] ^ b1[j])[perm])  # S1 -> C
        m2 = np.packbits(np.unpackbits(a2[i] ^ b2[j])[perm])  # S2 -> C
        hamming = int(np.bitwise_count(m1 ^ m2).sum())  # C
        dice[k] = 1 - hamming / (pop_a[i] + pop_b[j])
    return dice, 2 * a.shape[1] * len(pairs), time.perf_counter() - started


def two_hop(n_a: int, n_b: int, pairs: np.ndarray, dice: np.ndarray) -> np.ndarray:
    """C's view of member A: each record's Dice to its candidates in B (0 elsewhere),
    correlated between A's records (double-centred)."""
    m = np.zeros((n_a, n_b), dtype=np.float32)
    m[pairs[:, 0], pairs[:, 1]] = dice
    m -= m.mean(axis=1, keepdims=True)
    m /= np.linalg.norm(m, axis=1, keepdims=True) + 1e-9
    return _double_centred(m @ m.T)


def sealed_view(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], bits: int, bands: int,
    fallback: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]] | None = None,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:  # fmt: skip
    """The candidates (row of A, row of B) and each one's count of shared bands, through the
    shipped client's sealed band keys, S1's join and S2's expansion: the record-level CLK's,
    or with `fallback` (A's and B's fallback CLKs) both CLKs' counts added (S2 opens both)."""
    t0 = time.process_time()
    secret = secrets.token_bytes(32)
    plan = sharing.BandPlan(bits, bands)
    seal = (secrets.token_bytes(32), secrets.token_bytes(32))
    clks = [(a, b)] + ([fallback] if fallback is not None else [])
    up = [[sharing.seal_bands(sharing.record_keys(x, sharing.part_secret(secret, name) if k
                                                  else secret, plan)[0], k, sk)
           for x, sk in zip(pair, seal, strict=True)]
          for k, (name, pair) in enumerate(zip(sharing.PARTS, clks, strict=False))]  # fmt: skip
    t1 = time.process_time()
    matched = [twoblocking.join(0, 1, k, *(twoblocking.Sealed(u.counts, u.keys, u.classes, u.sealed)
                                         for u in sides))
               for k, sides in enumerate(up)]  # fmt: skip
    t2 = time.process_time()
    codes = np.concatenate([twoblocking.expanded_pairs(m, seal, (len(a), len(b))) for m in matched])
    uniq, count = np.unique(codes, return_counts=True)
    t3 = time.process_time()
    print(f"sealed band keys ({bits} bits x {bands} bands): members {t1 - t0:.0f} CPU s, S1's "
          f"join {t2 - t1:.1f} s ({sum(len(m) for m in matched):,} pairs of tokens), S2's "
          "expansion "
          f"{t3 - t2:.1f} s", flush=True)  # fmt: skip
    pairs = np.stack([(uniq >> np.uint64(32)).astype(np.intp),
                      (uniq & np.uint64(0xFFFFFFFF)).astype(np.intp)], axis=1)  # fmt: skip
    return pairs, count.astype(np.int64)
