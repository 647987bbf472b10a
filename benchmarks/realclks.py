"""Realistic benchmark encodings at any scale: real clkhash output of realistic people.

    .venv/bin/python benchmarks/realclks.py 1000000 1000000 [--seed 0] [--overlap 0.1]
    .venv/bin/python benchmarks/realclks.py 20000 20000 --stats
    .venv/bin/python benchmarks/realclks.py 200000 200000 --generator households

    from benchmarks.realclks import load_realistic, realistic_pair
    a, b = load_realistic(1_000_000, 1_000_000, seed=0)   # (n, clk_bits/8) uint8 each
    clk_bits, fallback_bits = layout()     # the default schema's CLKs (a fallback CLK last)

People are drawn by `benchmarks/messy.py` (name frequencies from the census lists,
middle names, dates of birth, sex, postcodes, movers), and each member exports its
people in its own style with that generator's corruptions: member A as `north-police`,
member B as `south-police` (nicknames, typos, swapped names, date slips, missing
values, stale postcodes; docs/evaluation.md lists the rates). Each export is encoded
by `client.encoding.encode.encode_csv`, the code behind `blindmatch encode`, with the
shipped default schema (schemas/person-uk.json) and a fixed benchmark secret: these
are the CLKs the matcher would receive, not a simulation of them (compare
`benchmarks/synthclks.py`). The default uploads a record-level CLK followed by a
fallback CLK (matcher/core/fallback.py); `realistic_pair` gives the record-level CLK, the
first 1,024 bits: it is what the kernel and batch LSH compare (a run compares the fallback
CLK only for records that lack a date of birth). `whole=True` gives the whole CLKs as
uploaded, for what searches both halves: a standing index (matcher/core/fallbackindex.py)
looks up its fallback half for every query, to find the records that lack one.

`--generator households` (`generator="households"`): the people are drawn by the held-out
generator `benchmarks/households.py` instead (households sharing a surname and postcode,
twins, movers, marriages; its own name lists and corruption model), member A exporting as
its `met-custody` (a `SURNAME, Forenames` column), member B as its `county-police` (upper
case, separate middle names, compact postcodes): the planners were developed on messy.py's
encodings, this is data they were not (issue 19's outside check). Same schema, secret,
`encode_csv` path, chunks and truth; cached under its own name (`real-households-...`).

Scale comes from generating, never from repeating rows: the people are cut into
chunks, each chunk drawn from its own seed (so the result does not depend on how
many processes made it) and exported and encoded on a pool of processes. A share
`overlap` of A's people are also held by B (the truth); B's rows are shuffled.

Encodings are cached under benchmarks/data/cache/ (git-ignored), keyed by sizes,
overlap, seed, a hash of the schema and `VERSION`, so a rerun reads them back in
seconds instead of encoding again (about 3-4k records/s/core).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import households
from benchmarks.exports import write_export
from benchmarks.messy import ORGS, OrgStyle, export_row, population

if TYPE_CHECKING:
    from blindmatch.client.encoding.mapping import Mapping
    from blindmatch.client.encoding.schema import LinkageSchema

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "schemas" / "person-uk.json"
NO_RULE_SCHEMA = ROOT / "schemas" / "person-uk-no-rule.json"
CACHE = Path(__file__).resolve().parent / "data" / "cache"
SECRET = hashlib.sha256(b"blindmatch realistic benchmark, public on purpose").hexdigest().encode()
CHUNK = 10_000  # people per chunk (one seed and one task each)
# Bump when the generator or the encoding path changes what it makes (2: the whole CLKs
# are cached, fallback CLK included).
VERSION = 2
STYLE_A, STYLE_B = ORGS[0], ORGS[1]  # north-police, south-police
GENERATORS = ("messy", "households")
# households.py's two police forces: a `SURNAME, Forenames` column; upper case, separate
# middle names, compact postcodes.
HOUSEHOLD_A, HOUSEHOLD_B = households.ORGS[0], households.ORGS[1]
Style = OrgStyle | households.Org

Clks = npt.NDArray[np.uint8]


@dataclass
class RealPair:
    """Two members' CLKs; rows truth_a[k] of a and truth_b[k] of b are the same person."""

    a: Clks
    b: Clks
    truth_a: npt.NDArray[np.int64]
    truth_b: npt.NDArray[np.int64]


@cache
def _encoder() -> tuple[LinkageSchema, dict[str, Mapping]]:
    from blindmatch.client.encoding.mapping import load_mapping
    from blindmatch.client.encoding.schema import load_schema

    schema = load_schema(SCHEMA)
    mappings = {}
    with tempfile.TemporaryDirectory() as tmp:
        for style in (STYLE_A, STYLE_B, HOUSEHOLD_A, HOUSEHOLD_B):
            path = Path(tmp) / f"{style.name}.toml"
            path.write_text(style.mapping_toml(), encoding="utf-8")
            mappings[style.name] = load_mapping(path, schema)
    return schema, mappings


@cache
def layout() -> tuple[int, int]:
    """(clk_bits, fallback_bits) of the shipped default schema's CLKs, as `blindmatch
    encode` makes them (a few rows encoded): with a fallback CLK (`fallback_bits` > 0), each
    row is its first record-level CLK followed by its fallback CLK of that many bits."""
    from blindmatch.client.encoding.encode import encode_csv

    schema, mappings = _encoder()
    rows, _ = exports(0, 0, 3, 3, 0)
    header = [STYLE_A.id_column, *STYLE_A.columns.values()]
    with tempfile.TemporaryDirectory() as tmp:
        export = write_export(Path(tmp), "layout", header, rows, STYLE_A.mapping_toml(), [0] * 3)
        result = encode_csv(export.csv, schema, mappings[STYLE_A.name], SECRET, max_workers=1)
    return result.clk_bits, result.fallback_bits


def styles(generator: str = "messy") -> tuple[Style, Style]:
    """Member A's and member B's export styles under `generator`."""
    if generator not in GENERATORS:
        raise ValueError(f"generator {generator!r}: one of {', '.join(GENERATORS)}")
    return (STYLE_A, STYLE_B) if generator == "messy" else (HOUSEHOLD_A, HOUSEHOLD_B)


def _encode(style: Style, rows: list[dict[str, str]], folder: Path) -> Clks:
    """`blindmatch encode`'s path: the export's CSV, its mapping, the default schema."""
    from blindmatch.client.encoding.encode import encode_csv

    schema, mappings = _encoder()
    header = [style.id_column, *style.columns.values()]
    export = write_export(folder, style.name, header, rows, style.mapping_toml(), [0] * len(rows))
    result = encode_csv(export.csv, schema, mappings[style.name], SECRET, max_workers=1)
    return np.frombuffer(result.clks, dtype=np.uint8).reshape(len(rows), result.clk_bits // 8)


def exports(
    seed: int, lo: int, hi: int, n_a: int, shared: int, generator: str = "messy"
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """People [lo, hi) of the population (a chunk), as A and B export those each holds
    (households.py's people in whole households of the chunk, with `generator`)."""
    styled: tuple[Any, Any] = styles(generator)  # each generator's own Org type
    style_a, style_b = styled
    row: Callable[[Any, Any, int, random.Random], dict[str, str]]
    if generator == "messy":
        rng = random.Random(f"realclks {seed} {lo}")
        people: list[Any] = population(hi - lo, rng)
        row = export_row
    else:
        rng = random.Random(f"realclks {generator} {seed} {lo}")
        people, row = households.population(hi - lo, rng), households.export_row
    rows_a, rows_b = [], []
    for k, person in enumerate(people):
        p = lo + k
        if p < n_a:
            rows_a.append(row(style_a, person, p, rng))
        if p < shared or p >= n_a:
            rows_b.append(row(style_b, person, p, rng))
    return rows_a, rows_b


def _chunk(job: tuple[int, int, int, int, int, str]) -> tuple[Clks, Clks]:
    """A's and B's CLKs of a chunk of people."""
    rows_a, rows_b = exports(*job)
    style_a, style_b = styles(job[-1])
    width = layout()[0] // 8
    with tempfile.TemporaryDirectory() as tmp:
        a = _encode(style_a, rows_a, Path(tmp)) if rows_a else np.empty((0, width), np.uint8)
        b = _encode(style_b, rows_b, Path(tmp)) if rows_b else np.empty((0, width), np.uint8)
    return a, b


def _cache_key_schema() -> bytes:
    """What the cache is keyed by: the default schema's bytes, less its `blindmatch.rule`
    (the matcher's rule over both CLKs changes no bit of them): those of
    schemas/person-uk-no-rule.json, the default before the rule, when that is all they differ
    by, so encodings cached before the rule are still found."""
    import json

    raw = json.loads(SCHEMA.read_text(encoding="utf-8"))
    raw.get("blindmatch", {}).pop("rule", None)
    if raw == json.loads(NO_RULE_SCHEMA.read_text(encoding="utf-8")):
        return NO_RULE_SCHEMA.read_bytes()
    return SCHEMA.read_bytes()


def cache_dir(n_a: int, n_b: int, seed: int, overlap: float, generator: str = "messy") -> Path:
    """messy.py's encodings under `real-v...`, another generator's under `real-NAME-v...`."""
    styles(generator)  # an unknown generator fails here
    schema = hashlib.sha256(_cache_key_schema()).hexdigest()[:10]
    name = "real" if generator == "messy" else f"real-{generator}"
    return CACHE / f"{name}-v{VERSION}-{schema}-{n_a}x{n_b}-o{overlap:g}-s{seed}"


def realistic_pair(
    n_a: int,
    n_b: int,
    seed: int = 0,
    *,
    overlap: float = 0.1,
    workers: int | None = None,
    cache: bool = True,
    quiet: bool = False,
    whole: bool = False,
    generator: str = "messy",
) -> RealPair:
    """A's n_a and B's n_b CLKs (default schema), `overlap` of A's people also in B: the
    record-level CLKs, or with `whole` the CLKs as uploaded (`layout` says where a
    fallback CLK starts); the people drawn by `generator` (messy, or households)."""
    styles(generator)  # an unknown generator fails here
    clk_bits, fallback_bits = layout()
    if cache and not whole and fallback_bits and generator == "messy":
        legacy = _record_level_cache(n_a, n_b, seed, overlap, (clk_bits - fallback_bits) // 8)
        if legacy is not None:
            return legacy
    pair = _whole_pair(n_a, n_b, seed, overlap, workers, cache, quiet, generator)
    if whole or not fallback_bits:
        return pair
    cut = (clk_bits - fallback_bits) // 8
    a, b = (np.ascontiguousarray(x[:, :cut]) for x in (pair.a, pair.b))
    return RealPair(a, b, pair.truth_a, pair.truth_b)


def _record_level_cache(
    n_a: int, n_b: int, seed: int, overlap: float, width: int
) -> RealPair | None:
    """A VERSION 1 cache of the same schema: it held the record-level CLKs only, which is
    what `realistic_pair` returns without `whole` (read back rather than encoded again)."""
    folder = CACHE / cache_dir(n_a, n_b, seed, overlap).name.replace(f"v{VERSION}-", "v1-", 1)
    names = ("a", "b", "truth_a", "truth_b")
    if not all((folder / f"{n}.npy").exists() for n in names):
        return None
    a, b, ta, tb = (np.load(folder / f"{n}.npy") for n in names)
    return RealPair(a, b, ta, tb) if a.shape[1] == b.shape[1] == width else None


def _whole_pair(
    n_a: int, n_b: int, seed: int, overlap: float, workers: int | None, cache: bool, quiet: bool,
    generator: str,
) -> RealPair:  # fmt: skip
    folder = cache_dir(n_a, n_b, seed, overlap, generator)
    names = ("a", "b", "truth_a", "truth_b")
    if cache and all((folder / f"{n}.npy").exists() for n in names):
        a, b, ta, tb = (np.load(folder / f"{n}.npy") for n in names)
        return RealPair(a, b, ta, tb)
    shared = min(round(n_a * overlap), n_a, n_b)
    total = n_a + n_b - shared  # A holds people [0, n_a); B [0, shared) and [n_a, total)
    jobs = [
        (seed, lo, min(lo + CHUNK, total), n_a, shared, generator) for lo in range(0, total, CHUNK)
    ]
    t0 = time.perf_counter()
    workers = workers or min(os.cpu_count() or 1, 2)
    parts: list[tuple[Clks, Clks]] = []
    with ProcessPoolExecutor(workers) as pool:
        for k, part in enumerate(pool.map(_chunk, jobs)):
            parts.append(part)
            if not quiet and (k + 1) % 20 == 0:
                done = sum(len(x) + len(y) for x, y in parts)
                rate = done / (time.perf_counter() - t0)
                print(f"  encoded {done:,} of {n_a + n_b:,} records ({rate:,.0f}/s)",
                      file=sys.stderr)  # fmt: skip
    a = np.ascontiguousarray(np.concatenate([p[0] for p in parts]))
    b_people = np.concatenate(
        [np.arange(0, shared, dtype=np.int64), np.arange(n_a, total, dtype=np.int64)]
    )
    b = np.concatenate([p[1] for p in parts])
    order = np.random.default_rng(seed).permutation(len(b))
    b, b_people = np.ascontiguousarray(b[order]), b_people[order]
    truth_b = np.flatnonzero(b_people < shared)
    pair = RealPair(a, b, b_people[truth_b], truth_b)
    if cache:
        folder.mkdir(parents=True, exist_ok=True)
        for n in names:
            tmp = folder / f"{n}.tmp.npy"
            np.save(tmp, getattr(pair, n))
            tmp.replace(folder / f"{n}.npy")
    return pair


def load_realistic(n_a: int, n_b: int, seed: int = 0, **kw: object) -> tuple[Clks, Clks]:
    """(clks_a, clks_b): (n, clk_bits/8) uint8 arrays, the matcher's format (see
    `realistic_pair`; `layout` says where a fallback CLK starts)."""
    pair = realistic_pair(n_a, n_b, seed, **kw)  # type: ignore[arg-type]
    return pair.a, pair.b


def stats(clks: Clks, sample: int = 2_000, seed: int = 0) -> dict[str, float]:
    """Density, share of near-constant bits, and how much unrelated rows agree."""
    rng = np.random.default_rng(seed)
    rows = clks[rng.integers(0, len(clks), min(sample, len(clks)))]
    bits = np.unpackbits(rows, axis=1).astype(np.float64)
    f = bits.mean(axis=0)
    i, j = rng.integers(0, len(rows), (2, 4 * len(rows)))
    keep = i != j
    agree = (bits[i[keep]] == bits[j[keep]]).mean()
    both = (bits[i[keep]] * bits[j[keep]]).sum(axis=1)
    dice = 2 * both / (bits[i[keep]].sum(axis=1) + bits[j[keep]].sum(axis=1))
    return {
        "density": float(f.mean()),
        "bits set in >80% of rows": float((f > 0.8).mean()),
        "bits set in <2% of rows": float((f < 0.02).mean()),
        "unrelated bit agreement": float(agree),
        "unrelated Dice p99": float(np.quantile(dice, 0.99)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n_a", type=int)
    parser.add_argument("n_b", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overlap", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=None, help="processes (default 2)")
    parser.add_argument("--stats", action="store_true", help="print the encodings' statistics")
    parser.add_argument("--generator", choices=GENERATORS, default="messy",
                        help="whose people: messy.py or the held-out households.py")  # fmt: skip
    args = parser.parse_args()
    t0 = time.perf_counter()
    pair = realistic_pair(args.n_a, args.n_b, args.seed, overlap=args.overlap, workers=args.workers,
                          generator=args.generator)  # fmt: skip
    dt = time.perf_counter() - t0
    folder = cache_dir(args.n_a, args.n_b, args.seed, args.overlap, args.generator)
    print(f"{len(pair.a):,} + {len(pair.b):,} CLKs, {len(pair.truth_a):,} true pairs, "
          f"{dt:.1f} s; cached in {folder}")  # fmt: skip
    if args.stats:
        for name, clks in (("a", pair.a), ("b", pair.b)):
            print(name, {k: round(v, 4) for k, v in stats(clks).items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
