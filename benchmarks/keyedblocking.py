"""Keyed-LSH blocking at scale: candidate density at recall 0.999 on realistic encodings.

    .venv/bin/python benchmarks/keyedblocking.py [--sizes 10000 100000 1000000]
        [--bits 10 12 14 15 16 18 20] [--max-bands 3000] [--near-sample 40000]
        [--random-pairs 200000] [--fallback] [--check-exact] [--sketch 128]

The design study's option (a) (docs/privacy-design.md): members upload b HMAC'd band keys per
record, each band r bit positions chosen from the secret. Equal keys are equal bits, so a
keyed view collides exactly where an unkeyed band on the same positions does: the density of
candidates is a property of the positions and the encodings, not of the key. This measures it
on realistic encodings (benchmarks/realclks.py `realistic_pair`: the default schema's
record-level CLK; `--fallback`: the fallback CLK, the second half of the upload).

For each size n (A and B of n records each; 10^6 compares a random sample of A's rows with all
of B's exhaustively):

1. the **near pairs**: every cross pair at Dice >= 0.8, found exhaustively by the matcher's
   kernel (the pairs a run must find; namesakes and relatives included);
2. for each band width r and position pool (all 1,024 bits, or the planner's informative bits:
   set in 2-95% of records), a keyed pool of up to `--max-bands` bands; the recall curve
   (share of near pairs colliding in at least one of the first L bands) on the near pairs, and
   the candidate fraction curve (share of all cross pairs colliding) on `--random-pairs`
   random cross pairs, both bit-sliced so each band costs a few word operations per 64 pairs;
3. the smallest L reaching recall 0.999 and, at it, the share of cross pairs that are
   candidates, candidates per record (share x n), the bytes of shares to the combiner (256 a
   pair) and of band keys uploaded (8 a band a record);
4. the same for the matcher's own plan (`core.blocking.plan` on these encodings), as a check
   that the measured curve agrees with the planner's design.

A candidate fraction is a per-pair property, so it does not depend on n (each pair either
collides or not), but the near pairs do (more namesakes at larger n): the table prints both per
size. `--sketch BITS` measures a two-stage reveal (the servers first send the combiner the
permuted share differences on a keyed sample of BITS positions; only candidates whose sample
distance is within what 99.9% of the near pairs show go on to the full 1,024 bits): the share
of candidates passed and the bytes to the combiner a candidate. `--check-exact` counts every
distinct candidate pair of the smallest size with the native batch LSH (`compare_bands` at a
threshold that keeps every collision) to confirm the sampled fraction.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt

from benchmarks.realclks import layout, realistic_pair
from blindmatch.matcher.core import blocking, kernel

THRESHOLD = 0.8
TARGET = 0.999
HARD = 0.85  # near pairs below this Dice are the hard ones: recall printed for them apart
SECRET = b"keyed blocking benchmark secret"
BYTES_PER_PAIR = 256  # two 128-byte permuted share differences to the combiner


def bits_little(clks: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
    """(n, bits) 0/1 in the planner's convention: bit p is bit p % 64 of 64-bit word p // 64."""
    return np.unpackbits(np.ascontiguousarray(clks), axis=1, bitorder="little")


def informative(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8]) -> npt.NDArray[np.intp]:
    """The planner's informative bits: set in SPARSE_BIT..DENSE_BIT of (a sample of) records."""
    rng = np.random.default_rng(0)
    rows = np.concatenate(
        [x[rng.choice(len(x), min(len(x), blocking.SAMPLE_ROWS), replace=False)] for x in (a, b)]
    )
    freq = bits_little(rows).mean(axis=0)
    return np.flatnonzero((freq >= blocking.SPARSE_BIT) & (freq <= blocking.DENSE_BIT))


def keyed_positions(pool: npt.NDArray[np.intp], r: int, bands: int) -> npt.NDArray[np.int32]:
    """Bands of r positions drawn from `pool` by a generator keyed from the secret (as a member
    would: HMAC(secret, 'bands') seeds the draw; the band keys are then HMAC'd, which changes
    nothing about which records collide)."""
    seed = hmac.new(SECRET, f"bands {r}".encode(), hashlib.sha256).digest()
    rng = np.random.default_rng(int.from_bytes(seed[:8], "big"))
    return np.stack([rng.choice(pool, r, replace=False) for _ in range(bands)]).astype(np.int32)


def sliced_agreement(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], ia: npt.NDArray[np.intp],
    ib: npt.NDArray[np.intp],
) -> npt.NDArray[np.uint64]:  # fmt: skip
    """(bits, ceil(P/64)) uint64: bit k of row p says whether pair k agrees on bit p."""
    agree = ~(a[ia] ^ b[ib])
    bits = bits_little(agree)  # (P, 1024)
    pad = (-len(bits)) % 64
    if pad:
        bits = np.concatenate([bits, np.zeros((pad, bits.shape[1]), np.uint8)])
    return np.ascontiguousarray(np.packbits(bits.T, axis=1, bitorder="little")).view(np.uint64)


def curve(
    sliced: npt.NDArray[np.uint64], n_pairs: int, positions: npt.NDArray[np.int32]
) -> tuple[npt.NDArray[np.float64], float]:
    """(share of pairs colliding in at least one of the first L bands for L = 1..bands,
    mean collisions a pair over all bands)."""
    found = np.zeros(sliced.shape[1], np.uint64)
    out = np.empty(len(positions))
    hits = 0
    step = 64
    for lo in range(0, len(positions), step):
        pos = positions[lo : lo + step]
        coll = np.bitwise_and.reduce(sliced[pos], axis=1)  # (chunk, words)
        hits += int(np.bitwise_count(coll).sum())
        for k in range(len(pos)):
            found |= coll[k]
            out[lo + k] = np.bitwise_count(found).sum()
    return out / n_pairs, hits / n_pairs / len(positions)


def collided(
    sliced: npt.NDArray[np.uint64], positions: npt.NDArray[np.int32]
) -> npt.NDArray[np.bool_]:
    """Whether each pair (bit-sliced) collides in at least one band of `positions`."""
    found = np.zeros(sliced.shape[1], np.uint64)
    for pos in positions:
        found |= np.bitwise_and.reduce(sliced[pos], axis=0)
    return np.unpackbits(found.view(np.uint8), bitorder="little").astype(bool)


def near_pairs(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], rows: int | None
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float64], float, int]:
    """Exhaustive pairs at Dice >= 0.8 of (a sample of `rows` of) A against all of B:
    (rows of a, rows of b, their Dice, CPU seconds, rows of A compared)."""
    sel = np.arange(len(a))
    if rows is not None and rows < len(a):
        sel = np.sort(np.random.default_rng(7).choice(len(a), rows, replace=False))
    c0 = time.process_time()
    sims, ia, ib = kernel.dice_candidates(a[sel], b, THRESHOLD, workers=1)
    return (
        sel[ia].astype(np.intp), ib.astype(np.intp), np.asarray(sims),
        time.process_time() - c0, len(sel),
    )  # fmt: skip


def settings(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], args: argparse.Namespace
) -> list[tuple[str, npt.NDArray[np.int32]]]:
    pools = {"all": np.arange(a.shape[1] * 8), "informative": informative(a, b)}
    out = []
    for name, pool in pools.items():
        for r in args.bits:
            out.append((f"{name} ({len(pool)}) r={r}", keyed_positions(pool, r, args.max_bands)))
    planned = blocking.plan([a, b], THRESHOLD, sizes=[10**6, 10**6])
    if isinstance(planned, blocking.LshPlan):
        out.append((f"planner 1Mx1M: {planned.describe()}", planned.positions))
    return out


def measure(n: int, args: argparse.Namespace) -> None:
    sample = None if n <= 100_000 else args.a_sample
    seed = {10_000: 0, 20_000: 0, 100_000: 2}.get(n, 0)
    source = n if n != 10_000 else 20_000  # 10^4: the first 10^4 rows of each of 2 x 20,000
    whole = args.fallback or args.block_on_fallback
    pair = realistic_pair(source, source, seed, whole=whole)
    a, b = pair.a, pair.b
    if whole:
        clk_bits, fallback_bits = layout()
        cut = (clk_bits - fallback_bits) // 8
        halves = [
            (np.ascontiguousarray(x[:n, :cut]), np.ascontiguousarray(x[:n, cut:])) for x in (a, b)
        ]
        (a_rec, a_fb), (b_rec, b_fb) = halves
        a, b = (a_fb, b_fb) if args.fallback else (a_rec, b_rec)
    a, b = np.ascontiguousarray(a[:n]), np.ascontiguousarray(b[:n])
    ia, ib, sims, cpu, compared = near_pairs(a, b, sample)
    if args.block_on_fallback:
        a, b = a_fb, b_fb  # near pairs by the record-level CLK, bands on the fallback CLK
    rng = np.random.default_rng(11)
    ra, rb = rng.integers(0, n, args.random_pairs), rng.integers(0, n, args.random_pairs)
    if len(ia) > args.near_sample:
        keep = np.sort(rng.choice(len(ia), args.near_sample, replace=False))
        near_a, near_b, near_s = ia[keep], ib[keep], sims[keep]
    else:
        near_a, near_b, near_s = ia, ib, sims
    hard = near_s < HARD
    near = sliced_agreement(a, b, near_a, near_b)
    rand = sliced_agreement(a, b, ra, rb)
    per_row = len(ia) / compared
    print(
        f"\n## {n:,} x {n:,} ({'fallback' if args.fallback else 'record-level'} CLK"
        f"{', bands on the fallback CLK' if args.block_on_fallback else ''}, "
        f"{a.shape[1] * 8} bits): {per_row * n:,.0f} exhaustive pairs at Dice >= {THRESHOLD} "
        f"({per_row:.2f} per record of A; {compared:,} rows of A compared, {cpu:.0f} CPU s), "
        f"recall on {len(near_a):,} of them; fraction on {args.random_pairs:,} random pairs",
        flush=True,
    )
    print(
        "| positions | bands for recall 0.999 | recall | cross pairs that are candidates | "
        "candidates per record | pairs to C | bytes to C | band keys per record | "
        f"mean shared bands, unrelated | recall at Dice {THRESHOLD}-{HARD} |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    recalls: dict[str, int] = {}
    for label, positions in settings(a, b, args):
        recall, _ = curve(near, len(near_a), positions)
        frac, mean_hits = curve(rand, args.random_pairs, positions)
        reach = np.flatnonzero(recall >= TARGET)
        if not len(reach):
            print(f"| {label} | > {len(positions)} (recall {recall[-1]:.4f}) | | | | | | | | |")
            continue
        bands = int(reach[0]) + 1
        if label.startswith("planner"):
            bands = len(positions)
        recalls[label] = bands
        f = float(frac[bands - 1])
        found = collided(near, positions[:bands])[: len(near_a)]
        pairs = f * n * n
        print(
            f"| {label} | {bands} | {recall[bands - 1]:.4f} | {f:.2%} (1/{1 / max(f, 1e-12):.0f}) "
            f"| {f * n:,.0f} | {pairs:.3g} | {_bytes(pairs * BYTES_PER_PAIR)} | "
            f"{bands * 8:,} B | {mean_hits * bands:.3f} | "
            f"{found[hard].mean() if hard.any() else float('nan'):.4f} "
            f"({int(hard.sum())}) |",
            flush=True,
        )
    if args.sketch:
        sketch(near, len(near_a), rand, args.random_pairs, settings(a, b, args), recalls, args)
    if args.check_exact and n == min(args.sizes):
        check_exact(a, b, settings(a, b, args), rand, args.random_pairs)


def sketch(
    near: npt.NDArray[np.uint64], n_near: int, rand: npt.NDArray[np.uint64], n_rand: int,
    labelled: list[tuple[str, npt.NDArray[np.int32]]], bands: dict[str, int],
    args: argparse.Namespace,
) -> None:  # fmt: skip
    """A two-stage reveal: the servers first send C the permuted share differences on a keyed
    sample of `--sketch` positions only; C passes on to the full 1,024 bits the candidates whose
    sample distance is within what 99.9% of the near pairs (those blocking found) show."""
    print(
        f"\ntwo-stage reveal, a {args.sketch}-bit sample first (keyed positions): "
        "| blocking | candidates in the random sample | sample distance kept | candidates "
        "passed | bytes to C a candidate (256 in one stage) | near pairs kept |"
    )
    rng = np.random.default_rng(int.from_bytes(SECRET[:8], "big"))
    for label, positions in labelled:
        if label not in bands or label.startswith("planner") or "informative" not in label:
            continue
        found_near = collided(near, positions[: bands[label]])[:n_near]
        found_rand = collided(rand, positions[: bands[label]])[:n_rand]
        pool = np.unique(positions)
        chosen = rng.choice(pool, min(args.sketch, len(pool)), replace=False)
        d_near = _sample_distance(near, n_near, chosen)[found_near]
        d_rand = _sample_distance(rand, n_rand, chosen)[found_rand]
        cut = np.quantile(d_near, TARGET, method="higher")
        passed = float((d_rand <= cut).mean()) if len(d_rand) else float("nan")
        kept = float((d_near <= cut).mean())
        print(
            f"| {label} x {bands[label]} | {len(d_rand):,} | <= {cut} of {len(chosen)} | "
            f"{passed:.1%} | {2 * len(chosen) / 8 + passed * BYTES_PER_PAIR:.0f} | {kept:.4f} |",
            flush=True,
        )


def _sample_distance(
    sliced: npt.NDArray[np.uint64], count: int, chosen: npt.NDArray[np.int32]
) -> npt.NDArray[np.int64]:
    """Each pair's number of disagreements on the `chosen` positions."""
    agree = np.unpackbits(
        np.ascontiguousarray(sliced[chosen]).view(np.uint8), axis=1, bitorder="little"
    )[:, :count]
    return len(chosen) - agree.sum(axis=0).astype(np.int64)


def check_exact(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8],
    labelled: list[tuple[str, npt.NDArray[np.int32]]], rand: npt.NDArray[np.uint64], count: int,
) -> None:  # fmt: skip
    """Every distinct candidate pair of one setting, counted by the native batch LSH."""
    label, positions = next((lab, p) for lab, p in labelled if "informative" in lab)
    bands = 200
    t0 = time.process_time()
    found = blocking.compare_bands(a, b, positions[:bands], 1e-9)
    frac, _ = curve(rand, count, positions[:bands])
    print(
        f"check ({label}, first {bands} bands): native batch LSH finds {len(found.sims):,} "
        f"distinct candidate pairs = {len(found.sims) / (len(a) * len(b)):.3%} of cross pairs; "
        f"the sampled fraction says {frac[-1]:.3%} ({time.process_time() - t0:.0f} CPU s)"
    )


def _bytes(x: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if x < 1000:
            return f"{x:.3g} {unit}"
        x /= 1000
    return f"{x:.3g} EB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--bits", type=int, nargs="+", default=[10, 12, 14, 15, 16, 18, 20])
    parser.add_argument("--max-bands", type=int, default=3000)
    parser.add_argument("--near-sample", type=int, default=40_000)
    parser.add_argument("--random-pairs", type=int, default=200_000)
    parser.add_argument("--a-sample", type=int, default=20_000, help="rows of A at 10^6")
    parser.add_argument("--fallback", action="store_true", help="the fallback CLK instead")
    parser.add_argument(
        "--block-on-fallback", action="store_true",
        help="near pairs by the record-level CLK, bands drawn on the fallback (DOB-free) CLK",
    )  # fmt: skip
    parser.add_argument("--check-exact", action="store_true")
    parser.add_argument(
        "--sketch", type=int, default=0, metavar="BITS",
        help="also measure a two-stage reveal with a sample of this many positions first",
    )  # fmt: skip
    args = parser.parse_args()
    for n in args.sizes:
        measure(n, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
