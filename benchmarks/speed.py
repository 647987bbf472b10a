"""Speed and scale on realistic and synthetic encodings, beside anonlink, in one run.

    .venv/bin/python benchmarks/speed.py            # full: up to 1M x 1M (~30-60 min)
    .venv/bin/python benchmarks/speed.py --quick    # 10k-20k sizes (~1-2 min)
    make bench-speed                                 # the full run

Two kinds of encodings, side by side: *realistic*, real clkhash output of realistic
people under the default schema (`benchmarks/realclks.py`, cached after the first
run), and *synthetic* (`benchmarks/synthclks.py`), simulated CLKs.

1. kernel: pairs/s of anonlink's dice_coefficient_accelerated and of blindmatch's
   kernel (1 thread, all threads), interleaved, medians, with a check that both
   return identical pairs and scores.
2. blocking and growth: for n x n members (10% overlap), exhaustive and LSH (the
   planner's plan, run by the matcher's thread executor): wall and CPU seconds,
   comparisons, how many fewer than all pairs, recall of LSH against the
   exhaustive pairs at or above the threshold, and CPU ns per LSH-proposed
   comparison beside the previous pure-numpy band path (`compare_band`, timed on a
   few bands of the same plan). Past 200k rows a side, the exhaustive pairs come from
   a random sample of A's rows against all of B (or, for realistic 1M x 1M, the
   chunks cached by benchmarks/exhaustive_cache.py), and exhaustive time is
   extrapolated from it; anonlink's time is estimated from its measured rate (~).
3. end to end: n x n realistic encodings through a real matcher on loopback gRPC
   (upload, run, results): wall and CPU seconds, the run's method, load average, peak
   memory; and the multi-party solver on 5 x 200k (full only). The uploads are what
   `blindmatch encode` writes under `--schema` (default the default schema: the whole
   CLKs with the fallback CLK, `fallback_bits` and `blindmatch.rule`, so the run is LSH at
   the rule's candidate floor, fallback pairs and rescoring, `lsh+fallback+rule`;
   schemas/person-uk-no-rule.json: the fallback CLK without the rule), or with
   `--record-level` the first CLKs alone (no fallback CLK, no rule: the figure before the
   rule). `--n` sets n (default 1,000,000; the realistic pair at 1M is of seed 0, as
   `benchmarks/realclks.py 1000000 1000000` caches them, smaller ones seed 2).
4. a summary: realistic and synthetic columns, as ratios.
5. `blocking.dedupe` (native) on 10^7 pairs (half repeats) beside its numpy version and
   `np.unique` (`--only dedupe`).

No timing is asserted anywhere; the numbers are printed and written to
docs/performance.md by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import exhaustive_cache, realclks
from benchmarks.realclks import SCHEMA, load_realistic
from benchmarks.synthclks import member_pair, members
from blindmatch.client import MatcherClient
from blindmatch.client.encoding.encoded import write_encoded
from blindmatch.client.remote.model import RunProgress
from blindmatch.matcher.core import blocking, kernel
from blindmatch.matcher.core.compare import merge
from blindmatch.matcher.core.executor import CompareJob, ThreadExecutor
from blindmatch.matcher.server import create_server
from blindmatch.matcher.usecases.runs import match

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from bitarray import bitarray

    from blindmatch.matcher.core._anonlink import dice_coefficient_accelerated

THRESHOLD = 0.8
CORES = os.cpu_count() or 1
KINDS = ("realistic", "synthetic")
EXACT_MAX = 200_000  # past this many rows a side, exhaustive pairs from a sample of A
SAMPLE_ROWS = 20_000  # rows of A in that sample
OLD_COMPARISONS = 30_000_000  # about this many proposed pairs timed on the previous path

Clks = npt.NDArray[np.uint8]


def seed_of(n: int) -> int:
    """The realistic pair's seed at n x n: 0 at 1M (`realclks.py 1000000 1000000`'s), else 2."""
    return 2 if n < 1_000_000 else 0


def data(kind: str, n: int) -> tuple[Clks, Clks]:
    if kind == "realistic":
        return load_realistic(n, n, seed_of(n))
    pair = member_pair(n, seed=2)
    return pair.a, pair.b


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def bitarrays(clks: np.ndarray) -> list[bitarray]:
    out = []
    for row in clks:
        ba = bitarray(endian="big")
        ba.frombytes(row.tobytes())
        out.append(ba)
    return out


T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, float, T]:
    """(wall s, CPU s of this process, result)."""
    t0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - t0, time.process_time() - c0, result


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


@dataclass
class Summary:
    """What the closing table compares, per kind of encodings."""

    kernel: dict[str, float] = field(default_factory=dict)  # x anonlink, 1 thread
    growth: dict[str, dict[str, float]] = field(default_factory=dict)  # at the largest n


def kernel_bench(kind: str, na: int, nb: int, repeats: int, summary: Summary) -> float:
    a, b = data(kind, max(na, nb))
    a, b = a[:na], b[:nb]
    ba, bb = bitarrays(a), bitarrays(b)
    runs: dict[str, list[float]] = {"anonlink": [], "blindmatch 1 thread": []}
    runs[f"blindmatch {CORES} threads"] = []
    same = True
    for _ in range(repeats):  # interleaved, so load from other users hits all alike
        dt, _, theirs = timed(lambda: dice_coefficient_accelerated([ba, bb], THRESHOLD))
        runs["anonlink"].append(dt)
        dt, _, ours = timed(lambda: kernel.dice_candidates(a, b, THRESHOLD, workers=1))
        runs["blindmatch 1 thread"].append(dt)
        dt, _, _ = timed(lambda: kernel.dice_candidates(a, b, THRESHOLD, workers=CORES))
        runs[f"blindmatch {CORES} threads"].append(dt)
        s, (i, j) = theirs
        o = ours
        same &= dict(zip(zip(i, j, strict=True), s, strict=True)) == dict(
            zip(zip(o[1].tolist(), o[2].tolist(), strict=True), o[0].tolist(), strict=True)
        )
    pairs = na * nb
    base = statistics.median(runs["anonlink"])
    print(f"\n## Kernel, {kind}: {na:,} x {nb:,} CLKs of {a.shape[1] * 8} bits, t = {THRESHOLD}")
    print(f"path: {kernel.paths()[0]}; identical pairs and scores to anonlink: {same}")
    print(f"{'':28} {'median s':>9} {'M pairs/s':>10} {'x anonlink':>11}")
    for name, times in runs.items():
        med = statistics.median(times)
        print(f"{name:28} {med:9.3f} {pairs / med / 1e6:10.0f} {base / med:11.2f}")
    summary.kernel[kind] = base / statistics.median(runs["blindmatch 1 thread"])
    return pairs / base


def exhaustive_reference(
    kind: str, a: Clks, b: Clks
) -> tuple[npt.NDArray[np.int64], set[tuple[int, int]], float, str]:
    """(rows of A covered, exhaustive pairs of those rows, CPU s for all of A, how)."""
    n = len(a)
    if n <= EXACT_MAX:
        _, cpu, (_, i, j) = timed(lambda: kernel.dice_candidates(a, b, THRESHOLD, workers=CORES))
        return np.arange(n), set(zip(i.tolist(), j.tolist(), strict=True)), cpu, "all rows"
    if kind == "realistic" and n == 1_000_000:
        rows, pairs, cpu = exhaustive_cache.load(n)
        if len(rows):
            how = f"{len(rows):,} of {n:,} rows of A (benchmarks/exhaustive_cache.py)"
            return rows, pairs, cpu * n / len(rows), how
    rows = np.sort(np.random.default_rng(7).choice(n, SAMPLE_ROWS, replace=False))
    _, cpu, (_, i, j) = timed(lambda: kernel.dice_candidates(a[rows], b, THRESHOLD, workers=CORES))
    pairs = set(zip(rows[i].tolist(), j.tolist(), strict=True))
    return rows, pairs, cpu * n / len(rows), f"a random {len(rows):,} of {n:,} rows of A"


def old_ns_per_comparison(a: Clks, b: Clks, plan: blocking.LshPlan) -> float:
    """CPU ns per proposed comparison of the previous band path (numpy keys and sort, a
    gather of both rows of every pair), on a few bands of the same plan."""
    per_band = plan.expected_comparisons / plan.bands
    bands = int(min(3, max(1, OLD_COMPARISONS // max(per_band, 1))))
    part = dataclasses.replace(plan, positions=plan.positions[:bands])
    c0 = time.process_time()
    keys_a, keys_b = blocking.band_keys(a, part), blocking.band_keys(b, part)
    compared = sum(
        blocking.compare_band(a, b, keys_a[k], keys_b[k], THRESHOLD).comparisons
        for k in range(part.bands)
    )
    return (time.process_time() - c0) / max(compared, 1) * 1e9


def lsh_run(a: Clks, b: Clks, plan: blocking.LshPlan) -> tuple[set[tuple[int, int]], int]:
    """The run's comparing as the matcher does it: band tasks on the thread executor."""
    job = CompareJob([a, b], THRESHOLD, "lsh", lsh=plan)
    parts, comparisons = ThreadExecutor(CORES).compare(job, lambda *_: None, lambda *_: None)
    c = merge(parts)
    return set(zip(c.rec0.tolist(), c.rec1.tolist(), strict=True)), comparisons


def growth_bench(
    kind: str, sizes: list[int], anonlink_rate: float, anonlink_max: int, summary: Summary
) -> None:
    print(f"\n## Blocking and growth, {kind}: n x n members, 10% overlap, t = {THRESHOLD}")
    print(
        f"{'n':>9} {'anonlink s':>10} {'exh. s':>8} {'exh. CPU':>9} {'lsh s':>7} {'lsh CPU':>8}"
        f" {'x exh.':>7} {'comparisons':>15} {'fewer':>7} {'recall':>8} {'ns/cmp':>7}"
        f" {'old ns/cmp':>10} {'x old':>6}  plan"
    )
    for n in sizes:
        a, b = data(kind, n)
        if n <= anonlink_max:
            ba, bb = bitarrays(a), bitarrays(b)
            t_anon, _, _ = timed(lambda: dice_coefficient_accelerated([ba, bb], THRESHOLD))  # noqa: B023
            anon = f"{t_anon:10.1f}"
            del ba, bb
        else:
            anon = f"~{n * n / anonlink_rate:9.0f}"
        t_full, c_full, ref = timed(lambda: exhaustive_reference(kind, a, b))  # noqa: B023
        rows, exhaustive, c_full, how = ref
        if how != "all rows":
            t_full = float("nan")  # not measured whole: CPU extrapolated
        plan = blocking.plan([a, b], THRESHOLD)
        label = ""
        if isinstance(plan, blocking.NoPlan):  # a run compares every pair; show LSH anyway
            print(f"{n:9,} {anon} {t_full:8.1f} {c_full:9.1f}  a run: {plan.message}")
            plan = blocking.plan([a, b], THRESHOLD, sizes=[1_000_000] * 2)
            assert isinstance(plan, blocking.LshPlan), plan
            label = " (the plan for 1M x 1M)"
        load_before = load()
        t_lsh, c_lsh, res = timed(lambda: lsh_run(a, b, plan))  # noqa: B023
        found, comparisons = res
        covered = set(rows.tolist())
        mine = {p for p in found if p[0] in covered} if how != "all rows" else found
        recall = len(mine & exhaustive) / max(len(exhaustive), 1)
        ns = c_lsh / max(comparisons, 1) * 1e9
        old = old_ns_per_comparison(a, b, plan)
        print(
            f"{n:9,} {anon} {t_full:8.1f} {c_full:9.1f} {t_lsh:7.1f} {c_lsh:8.1f}"
            f" {c_full / c_lsh:7.1f} {comparisons:15,} {n * n / comparisons:6.0f}x {recall:8.5f}"
            f" {ns:7.1f} {old:10.0f} {old / ns:6.0f}  {plan.bands} x {plan.bits_per_band} bits,"
            f" design recall {plan.design_recall:.4f}{label}"
        )
        print(
            f"{'':9} exhaustive pairs >= t: {len(exhaustive):,} ({how}); LSH found "
            f"{len(mine & exhaustive):,} of them; load average before LSH {load_before}"
        )
        summary.growth[kind] = {
            "n": n, "recall": recall, "fewer": n * n / comparisons, "x exhaustive CPU":
            c_full / c_lsh, "ns/cmp": ns, "x old ns/cmp": old / ns, "lsh CPU": c_lsh,
            "lsh wall": t_lsh,
        }  # fmt: skip


@dataclass(frozen=True)
class Uploads:
    """What each member uploads in the end-to-end run: its CLKs and the header fields
    `blindmatch encode` writes beside them (UploadHeader.fallback_bits, .rule, ...)."""

    a: Clks
    b: Clks
    fallback_bits: int = 0  # > 0: each CLK ends with a fallback CLK of that many bits
    rule: tuple[float, float, float] | None = None  # the schema's blindmatch.rule
    schema_digest: str = ""
    fingerprint: bytes = b"f" * 32
    what: str = "record-level CLKs only (no fallback CLK, no rule)"


def uploads(kind: str, n: int, schema: Path | None) -> Uploads:
    """The two members' uploads: with `schema` (realistic only), the whole CLKs as `blindmatch
    encode` writes them under it (the default's: a fallback CLK and `blindmatch.rule`);
    without, the record-level CLKs alone (the figure before the rule)."""
    if schema is None or kind != "realistic":
        return Uploads(*data(kind, n))
    from blindmatch.client.encoding.fingerprint import fingerprint, schema_digest
    from blindmatch.client.encoding.schema import load_schema

    loaded = load_schema(schema)
    bare = {**loaded.raw, "blindmatch": dict(loaded.raw.get("blindmatch", {}))}
    bare["blindmatch"].pop("rule", None)
    default = json.loads(realclks.SCHEMA.read_text(encoding="utf-8"))
    default["blindmatch"].pop("rule", None)
    if bare != default:  # the cached encodings are the default's CLKs
        raise SystemExit(f"{schema}: not the default schema's CLKs (only its rule may differ)")
    pair = realclks.realistic_pair(n, n, seed_of(n), whole=True)
    _, fallback_bits = realclks.layout()
    rule = loaded.rule if fallback_bits else None
    said = f"rule {rule}" if rule else "no rule"
    return Uploads(
        pair.a, pair.b, fallback_bits, rule, schema_digest(loaded.raw),
        fingerprint(loaded.raw, realclks.SECRET),
        f"{schema.name}: whole CLKs ({fallback_bits} fallback bits), {said}",
    )  # fmt: skip


class RunLog(logging.Handler):
    """The matcher's log lines of a run (its LSH plan, its method when done)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def method(self) -> str:
        done = [x for x in self.lines if x.startswith("run ") and " done: " in x]
        return done[-1].split("(", 1)[1].split(")", 1)[0] if done else "?"


PHASES = {
    "compare": "plan and compare",
    "compared": "merge (with a fallback CLK: its pairs, rescoring)",
    "solve": "solve",
    "store": "store",
}


def phase(status: RunProgress) -> str:
    """Where a run is, as its progress shows it: the compare stage's bands all done is the
    start of what follows them in that stage (merging; with a fallback CLK, rescoring)."""
    done = status.stage == "compare" and status.work_total > 0
    return "compared" if done and status.work_done >= status.work_total else status.stage


def operator_watch(target: str, project: str) -> Iterator[RunProgress]:
    """The latest run as the operator sees it (`ListProjects`), every 0.2 s until it ends: a
    member's watch shows no stage since srvleft (docs/privacy-design.md)."""
    with MatcherClient(target, "admin") as op:
        while True:
            status = op.list_projects(project)[0].latest_run
            if status is not None:
                yield status
                if status.state in ("done", "failed"):
                    return
            time.sleep(0.2)


def phases(seen: dict[str, float], total: float) -> str:
    """Wall seconds of each phase first seen in the watched progress (to the next one)."""
    marks = sorted((t, p) for p, t in seen.items() if p in PHASES)
    if not marks:  # a run done before its progress was first watched (a tiny one)
        return "none watched"
    ends = [t for t, _ in marks[1:]] + [total]
    return ", ".join(f"{PHASES[p]} {end - t:.1f}" for (t, p), end in zip(marks, ends, strict=True))


@dataclass(frozen=True)
class EndToEnd:
    method: str
    groups: int
    hits: int
    run_wall: float
    run_cpu: float


def end_to_end(
    n: int, blocking_mode: str, kind: str = "realistic", schema: Path | None = SCHEMA
) -> EndToEnd:
    print(f"\n## End to end through the matcher, {kind}: {n:,} x {n:,}, blocking {blocking_mode}")
    up = uploads(kind, n, schema)
    print(f"uploads: {up.what}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        encoded = []
        for name, clks in (("a", up.a), ("b", up.b)):
            encoded.append(
                write_encoded(
                    Path(tmp) / name,
                    clks=clks.tobytes(),
                    clk_bits=clks.shape[1] * 8,
                    fingerprint=up.fingerprint,
                    ids=[str(x) for x in range(len(clks))],
                    report={},
                    fallback_bits=up.fallback_bits,
                    schema_digest=up.schema_digest,
                    rule=up.rule,
                )
            )
        del up
        server = create_server("127.0.0.1:0", Path(tmp) / "data", "admin", workers=CORES)
        target = f"127.0.0.1:{server.port}"
        matcher_log, logger = RunLog(), logging.getLogger("blindmatch.matcher")
        level = logger.level
        logger.addHandler(matcher_log)
        logger.setLevel(logging.INFO)
        try:
            with MatcherClient(target, "admin") as op:
                proj = op.create_project("scale", ["a", "b"], blocking=blocking_mode)
            for name, enc in zip("ab", encoded, strict=True):
                with MatcherClient(target, proj.tokens[name]) as c:
                    dt, _, _ = timed(functools.partial(c.upload, "scale", enc))
                print(f"upload {n:,} CLKs ({name}): {dt:.1f} s")
            with MatcherClient(target, proj.tokens["a"]) as c:
                print(f"load average before the run: {load()}", flush=True)
                t0, c0 = time.perf_counter(), time.process_time()
                c.start_run("scale")
                last, seen = None, dict[str, float]()
                for status in operator_watch(target, "scale"):  # a member sees no stages
                    last = status
                    seen.setdefault(phase(status), time.perf_counter() - t0)
                t_run, c_run = time.perf_counter() - t0, time.process_time() - c0
                assert last is not None and last.state == "done", last
                t_res, _, results = timed(lambda: c.results("scale"))
            for line in matcher_log.lines:
                if line.startswith("LSH blocking"):
                    print(f"matcher: {line}")
            method = matcher_log.method()
            print(
                f"run ({method}): {t_run:.1f} s wall, {c_run:.1f} CPU s (all threads of this "
                f"process), {last.groups:,} shared subjects; load average after: {load()}"
            )
            print(f"  phases, wall s as watched: {phases(seen, t_run)}")
            print(f"results ({len(results.hits):,} hits, streamed in batches): {t_res:.1f} s")
            print(
                f"peak resident memory of this process (server + clients): {peak_rss_gib():.2f} GiB"
            )
            return EndToEnd(method, last.groups, len(results.hits), t_run, c_run)
        finally:
            logger.removeHandler(matcher_log)
            logger.setLevel(level)
            server.stop(grace=None)


def multiparty(count: int, n: int) -> None:
    print(f"\n## Multi-party, synthetic: {count} members x {n:,} records, 10% held by all")
    datasets = members(count, n, overlap=0.1, seed=4)
    dt, _, result = timed(lambda: match(datasets, THRESHOLD, workers=CORES))
    r = result
    print(
        f"match ({r.method}): {dt:.1f} s, {r.comparisons:,} comparisons, {r.groups:,} groups, "
        f"{len(r.links):,} links; peak RSS {peak_rss_gib():.2f} GiB"
    )


def dedupe_bench(n: int) -> None:
    """`blocking.dedupe` (native: a radix sort of the keys with their scores) beside its
    numpy version (`dedupe_numpy`, argsort + mask: the oracle, and what runs without the
    extension) and the `np.unique(..., return_index=True)` that came before both, on `n`
    pairs of which half are repeats (as bands finding a pair again)."""
    rng = np.random.default_rng(5)
    rows_a = rng.integers(0, 1_000_000, n // 2, dtype=np.uint32)
    rows_b = rng.integers(0, 1_000_000, n // 2, dtype=np.uint32)
    again = rng.permutation(n - n // 2) % (n // 2)
    rows_a, rows_b = (
        np.concatenate([rows_a, rows_a[again]]),
        np.concatenate([rows_b, rows_b[again]]),
    )
    # One score a pair, as the bands give (so every copy of a pair, even two random draws
    # of the same one, carries the same score, and any copy kept gives the same output).
    sims = (rows_a.astype(np.float64) * 1_000_003 + rows_b) % 999_983 / 999_983

    def unique() -> int:  # the code dedupe_numpy replaced, whole
        key = (rows_a.astype(np.uint64) << np.uint64(32)) | rows_b.astype(np.uint64)
        _, first = np.unique(key, return_index=True)
        return len((sims[first], rows_a[first], rows_b[first])[0])

    def numpy() -> int:
        return len(blocking.dedupe_numpy(sims, rows_a, rows_b)[0])

    def native() -> int:
        return len(blocking.dedupe(sims, rows_a, rows_b)[0])

    times: dict[str, list[float]] = {"unique": [], "numpy": [], "native": []}
    for _ in range(4):  # interleaved, the best of each: the host's load moves
        times["unique"].append(timed(unique)[0])
        times["numpy"].append(timed(numpy)[0])
        times["native"].append(timed(native)[0])
    old, mid, new = (min(times[k]) for k in ("unique", "numpy", "native"))
    got = blocking.dedupe(sims, rows_a, rows_b)
    want = blocking.dedupe_numpy(sims, rows_a, rows_b)
    assert all(np.array_equal(got[k], want[k]) for k in range(3))
    kept = len(got[0])
    assert kept == unique()
    path = "native" if kernel.NATIVE else "numpy (no extension)"
    print(
        f"dedupe of {n:,} pairs ({kept:,} distinct), numpy {np.__version__}, load {load()}: "
        f"{path} {new:.2f} s, numpy argsort + mask {mid:.2f} s ({mid / new:.1f}x), "
        f"np.unique (anchor) {old:.2f} s ({old / new:.1f}x)"
    )


def summarise(summary: Summary) -> None:
    print("\n## Summary: realistic | synthetic")
    k = summary.kernel
    if k:
        cells = " | ".join(f"{k[x]:.1f}x" if x in k else "-" for x in KINDS)
        print(f"kernel, 1 thread, x anonlink: {cells}")
    g = summary.growth
    if not g:
        return
    rows = [
        ("n x n", "n", "{:,.0f}"),
        ("LSH recall vs exhaustive pairs >= t", "recall", "{:.5f}"),
        ("pairs compared: x fewer than all", "fewer", "{:,.0f}x"),
        ("LSH CPU: x less than exhaustive", "x exhaustive CPU", "{:.1f}x"),
        ("CPU ns per LSH-proposed comparison", "ns/cmp", "{:.1f}"),
        ("  x fewer than the previous numpy path", "x old ns/cmp", "{:.0f}x"),
        ("LSH CPU s", "lsh CPU", "{:.1f}"),
        ("LSH wall s", "lsh wall", "{:.1f}"),
    ]
    for label, key, fmt in rows:
        cells = " | ".join(fmt.format(g[x][key]) if x in g else "-" for x in KINDS)
        print(f"{label}: {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes only (~1-2 minutes)")
    parser.add_argument(
        "--only",
        choices=["kernel", "growth", "end-to-end", "multiparty", "dedupe"],
        help="run one part of the full benchmark (at its full size)",
    )
    parser.add_argument("--sizes", help="growth sizes, comma-separated (default by mode)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="realistic,synthetic")
    parser.add_argument("--schema", type=Path, default=SCHEMA,
                        help="end to end: upload the realistic CLKs as `blindmatch encode` "
                             "writes them under this schema (default the default schema: its "
                             "fallback CLK and blindmatch.rule; person-uk-no-rule.json: the "
                             "fallback CLK without the rule)")  # fmt: skip
    parser.add_argument("--record-level", action="store_true",
                        help="end to end: upload the record-level CLKs alone (no fallback "
                             "CLK, no rule), the figure before the rule")  # fmt: skip
    parser.add_argument("--n", type=int, help="end to end: n x n (default 1M, 20k quick)")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    print(
        f"# blindmatch speed: {cpu_model()}, {CORES} cores, kernel paths {kernel.paths()}, "
        f"load average {load()}"
    )
    summary = Summary()
    quick = args.quick
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else None
    rates = {}
    if args.only in (None, "kernel", "growth"):
        for kind in kinds:
            rates[kind] = (
                kernel_bench(kind, 1000, 20_000, 3, summary)
                if quick
                else kernel_bench(kind, 2000, 100_000, 5 if args.only == "kernel" else 3, summary)
            )
    if args.only in (None, "growth"):
        for kind in kinds:
            growth_bench(
                kind,
                sizes or ([10_000, 20_000] if quick else [100_000, 1_000_000]),
                rates[kind],
                20_000,  # anonlink at 100k x 100k alone takes minutes: estimated past 20k
                summary,
            )
    if args.only in (None, "end-to-end"):
        e2e_n = args.n or (20_000 if quick else 1_000_000)
        end_to_end(e2e_n, "auto", schema=None if args.record_level else args.schema)
    if args.only is None and not quick:
        multiparty(5, 200_000)
    if args.only in (None, "dedupe"):
        dedupe_bench(1_000_000 if quick else 10_000_000)
    summarise(summary)


if __name__ == "__main__":
    main()
