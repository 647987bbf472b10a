"""A prototype of secret-shared Dice on two non-colluding servers and a combiner, and its leak.

    .venv/bin/python benchmarks/twoserver.py [--records 1000] [--seed 1] [--r 16 --b 264]
        [--protocol-pairs 20000]

The protocol (docs/privacy-design.md, option b), simulated in one process:

1. Each member splits each CLK x into XOR shares x1 (uniformly random) and x2 = x ^ x1, sends x1
   to server S1 and x2 to server S2, and its CLKs' popcounts to the combiner C.
2. Blocking gives cross-member candidate pairs (here: keyed-LSH band collisions, as in
   benchmarks/graph_attack.py, computed by whoever runs blocking).
3. For each candidate pair (a, b), S1 and S2 derive the same per-pair permutation pi from a key
   they share (C does not have it) and send C pi(x1_a ^ x1_b) and pi(x2_a ^ x2_b).
4. C XORs the two: pi(x_a ^ x_b), whose popcount is the Hamming distance H; Dice =
   1 - H / (|x_a| + |x_b|). The permutation leaves C only the distance, not where the bits
   differ; each share alone is uniformly random.

Printed: that C's Dice equals the plaintext Dice on every candidate pair; bytes and time per
pair; candidates per record; and the graph-matching attack on what C learns (each record of
member A described by its Dice to its candidates in member B, correlated between records),
against an attacker who builds the same view from its own plaintext.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from benchmarks.graph_attack import band_keys, with_fallback
from blindmatch.client.encoding.encode import EncodeReport, read_rows
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.graph import (
    _double_centred,
    known_pairs,
    match_graphs,
    score_matching,
)
from blindmatch.client.tools.privacy.graphcheck import upload_views

ROOT = Path(__file__).resolve().parent.parent


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--b", type=int, default=264)
    parser.add_argument(
        "--protocol-pairs", type=int, default=20_000,
        help="candidate pairs run through the simulated protocol (checked and timed); the "
        "attack reads every candidate's Dice, which the check shows C computes exactly",
    )  # fmt: skip
    args = parser.parse_args()
    schema = with_fallback(load_schema(ROOT / "schemas" / "person-uk.json"), False)
    with tempfile.TemporaryDirectory(prefix="blindmatch-2s-") as tmp:
        # Member A (the victim), member B (another force: half the same people), and the
        # attacker's plaintext of A's people (its own errors).
        first = population.write_pair(Path(tmp) / "ab", args.seed, args.records, 0.5)
        second = population.write_pair(Path(tmp) / "ap", args.seed, args.records, 1.0)
        loaded = []
        for export in (first.victim, first.attacker, second.attacker):
            mapping = load_mapping(export.mapping, schema)
            ids, rows = read_rows(export.csv, schema, mapping, EncodeReport(""))
            loaded.append((rows, [export.truth[i] for i in ids]))
    (a_rows, a_people), (b_rows, _b_people), (p_rows, p_people) = loaded
    key = secrets.token_bytes(32)
    a, b = (upload_views(schema, rows, key, NONE)[0] for rows in (a_rows, b_rows))
    keys_a, keys_b = band_keys(a, args.r, args.b, key), band_keys(b, args.r, args.b, key)
    pairs = candidates(keys_a, keys_b)
    inter = np.bitwise_count(a[pairs[:, 0]] & b[pairs[:, 1]]).sum(1)
    total = np.bitwise_count(a[pairs[:, 0]]).sum(1) + np.bitwise_count(b[pairs[:, 1]]).sum(1)
    dice = 2 * inter / total
    run = np.random.default_rng(args.seed).permutation(len(pairs))[: args.protocol_pairs]
    at_c, sent, seconds = protocol(a, b, pairs[run])
    assert np.allclose(at_c, dice[run]), "C's Dice differs from the plaintext Dice"
    print(
        f"{len(pairs)} candidate pairs ({len(pairs) / len(a):.1f} per record of A, "
        f"{len(pairs) / (len(a) * len(b)):.2%} of cross pairs); C's Dice = plaintext Dice on "
        f"all {len(run):,} run through the protocol; {sent / len(run):.0f} bytes to C per pair; "
        f"{1e6 * seconds / len(run):.0f} us per pair (numpy, one process, all three parties)"
    )
    # The attacker's same view of its own plaintext: its encodings against themselves, blocked
    # by its own keyed LSH.
    own_key = secrets.token_bytes(32)
    p = upload_views(schema, p_rows, own_key, NONE)[0]
    keys_p = band_keys(p, args.r, args.b, own_key)
    own_pairs = candidates(keys_p, keys_p)
    own_pairs = own_pairs[own_pairs[:, 0] != own_pairs[:, 1]]
    inter = np.bitwise_count(p[own_pairs[:, 0]] & p[own_pairs[:, 1]]).sum(1)
    total = np.bitwise_count(p[own_pairs[:, 0]]).sum(1) + np.bitwise_count(p[own_pairs[:, 1]]).sum(
        1
    )
    victim = [two_hop(len(a), len(b), pairs, dice)]
    attacker = [two_hop(len(p), len(p), own_pairs, 2 * inter / total)]
    for count in (0, 50):
        known = known_pairs(a_people, p_people, count, seed=count)
        scored = score_matching(match_graphs(victim, attacker, known), a_people, p_people, known)
        print(
            f"graph matching on C's view, {count} known pairs: {scored.rate:.1%} of A's records "
            f"(claim precision {scored.precision:.1%})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
