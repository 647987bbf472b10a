"""Batch runs on a Dask cluster: the same run in-process and on 1 and 2 Dask workers, the
cost of a task, and a projection to national scale from those measured costs.

    .venv/bin/python benchmarks/cluster.py same-run --members 10 --records 100000
    .venv/bin/python benchmarks/cluster.py same-run --members 2 --records 1000000 \
        --configs threads,files2,files1
    .venv/bin/python benchmarks/cluster.py costs       # per-task overhead, unit costs, projection
    .venv/bin/python benchmarks/cluster.py index       # look-up cost per million rows, actor RPC

`same-run` runs one run (synthetic CLKs, threshold 0.8, LSH unless --blocking says otherwise)
with the matcher's threads (2, as `serve` on this machine) and on local Dask clusters of 1 and
2 worker processes (1 thread each), workers reading upload files (`files`) or getting scattered
slices (`scatter`); it prints wall times as ratios to the in-process run, checks that every
configuration found the same candidates (sha256 of the merged candidate arrays), the peak RSS
of each worker, and what the model of `costs` predicts for that run.

`costs` measures, in one process: anonlink's `dice_coefficient_accelerated` on one core (the
anchor), Dask's overhead per task (thousands of tiny tasks on one worker, beside the same on
the matcher's threads), the cost of one LSH band task for each shape of pair the projection
needs, and the matcher-side solve rate; then projects the wall time and worker count of the
national scenarios (docs/scale.md), first under one plan for the whole run (as runs were
planned before), then under a plan per shape of pair (`blocking.plan_pairs`, what runs do:
a shape the planner compares exhaustively is costed at the measured exhaustive CPU rate).

`index` measures the standing index's look-up (one query against one member's main segment
with its LSH tables, in-process, as `matcher.index` does it) at several sizes, as µs per
look-up and per million rows, and the round trip of a Dask actor call that does nothing
(what a partitioned index on Dask actors would add to every look-up). No timing is asserted.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import resource
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.synthclks import members
from blindmatch.matcher.core import blocking
from blindmatch.matcher.core.cluster import TASK_COMPARISONS, DaskExecutor, DaskSettings
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.core.executor import ClkFile, CompareJob, Executor, ThreadExecutor
from blindmatch.matcher.core.solve import solve
from blindmatch.matcher.core.tasks import BandTask, plan_tasks, run_task

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from bitarray import bitarray

    from blindmatch.matcher.core._anonlink import dice_coefficient_accelerated

THRESHOLD = 0.8
CLK_BYTES = 128
KINDS = ("realistic", "synthetic")
KIND_HELP = "CLKs: realistic (benchmarks/realclks.py, cached) or synthetic (synthclks.py)"
BAND_PASS = 16  # bands whose keys the native band path computes in one pass (_lshbatch.c)


def quiet(*_: object) -> None:
    pass


def load() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def write_uploads(datasets: Sequence[np.ndarray], folder: Path) -> list[ClkFile]:
    """The datasets as the matcher stores uploads: `<id>.bin`, CLKs back to back."""
    files = []
    for i, d in enumerate(datasets):
        data = np.ascontiguousarray(d).tobytes()
        (folder / f"u{i}.bin").write_bytes(data)
        files.append(ClkFile(f"u{i}", len(d), d.shape[1], hashlib.sha256(data).hexdigest()))
    return files


def _reset_peak() -> None:
    """Start this process's peak RSS (VmHWM) afresh (Linux: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _usage() -> tuple[float, float]:
    """(peak RSS in MiB since the last reset, CPU seconds so far) of this process."""
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return hwm / 1024, cpu.ru_utime + cpu.ru_stime


@dataclass
class Workers:
    """A local cluster's scheduler address, and its workers' usage since `reset`."""

    address: str
    client: object

    def reset(self) -> None:
        self.client.run(_reset_peak)  # type: ignore[attr-defined]
        self.cpu0 = {k: v[1] for k, v in self.client.run(_usage).items()}  # type: ignore[attr-defined]

    def usage(self) -> tuple[list[float], float]:
        """Each worker's peak RSS (MiB) and their CPU seconds together, since `reset`."""
        now = self.client.run(_usage)  # type: ignore[attr-defined]
        return [v[0] for v in now.values()], sum(v[1] - self.cpu0[k] for k, v in now.items())


@contextmanager
def local_cluster(workers: int) -> Iterator[Workers]:
    """A scheduler here and `workers` worker processes of one thread each."""
    from distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=0,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield Workers(cluster.scheduler_address, client)


def digest(c: Candidates) -> str:
    h = hashlib.sha256()
    for arr in (c.sims, c.dset0, c.dset1, c.rec0, c.rec1):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:16]


@dataclass
class Outcome:
    seconds: float
    digest: str
    candidates: int
    comparisons: int
    tasks: int


def timed(executor: Executor, job: CompareJob) -> Outcome:
    count = [0]

    def tasks(done: int, total: int) -> None:
        count[0] = total

    start = time.perf_counter()
    parts, comparisons = executor.compare(job, quiet, tasks)
    seconds = time.perf_counter() - start
    merged = merge(parts)
    return Outcome(seconds, digest(merged), len(merged), comparisons, count[0])


# -- measured unit costs -------------------------------------------------------------------


def anonlink_rate(n: int = 6_000) -> float:
    """Comparisons a second of anonlink's dice_coefficient_accelerated on one core (anchor)."""
    a, b = members(2, n, seed=3)
    ba = [bitarray(bytes(r)) for r in a]  # type: ignore[call-arg]
    bb = [bitarray(bytes(r)) for r in b]  # type: ignore[call-arg]
    start = time.process_time()  # CPU time: one thread, whatever else the machine runs
    dice_coefficient_accelerated((ba, bb), THRESHOLD)
    return n * n / (time.process_time() - start)


def overhead_per_task(executor: Executor, tasks: int = 2_000) -> tuple[float, int]:
    """Seconds a task costs beyond its work: tiny dense tasks (~1 µs of kernel each)."""
    a, b = members(2, 1_000, seed=4)
    per_task = max(1, (1_000 * 1_000) // tasks)
    with tempfile.TemporaryDirectory() as tmp:
        job = CompareJob([a, b], THRESHOLD, "exhaustive", files=write_uploads([a, b], Path(tmp)))
        if isinstance(executor, DaskExecutor):
            executor = DaskExecutor(
                DaskSettings(executor.settings.scheduler, tmp, task_comparisons=per_task)
            )
        else:
            executor = ThreadExecutor(1, chunk_comparisons=per_task)
        out = timed(executor, job)
    return out.seconds / out.tasks, out.tasks


def lsh_plan(a: np.ndarray, b: np.ndarray, sizes: Sequence[int] | None = None) -> blocking.LshPlan:
    """The planner's bands for a run over datasets of `sizes` (default: a and b) with a's
    and b's statistics; where it finds comparing every pair cheaper (a NoPlan), the bands
    it plans for such data at 1M x 1M, so a band task can be timed."""
    found = blocking.plan([a, b], THRESHOLD, sizes=sizes)
    if isinstance(found, blocking.NoPlan):
        found = blocking.plan([a, b], THRESHOLD, sizes=[1_000_000, 1_000_000])
    assert isinstance(found, blocking.LshPlan), found
    return found


def band_seconds(
    a: np.ndarray, b: np.ndarray, lsh: blocking.LshPlan | None = None, bands: int = BAND_PASS
) -> tuple[float, int]:
    """CPU seconds one band of an LSH task takes for datasets a and b under `lsh` (default:
    the planner's for a and b), timed over `bands` bands (16: one pass of the native key
    computation, as a task runs them; keys computed in the task; CPU time, so that other
    work on the machine does not count), and the plan's bands."""
    lsh = lsh or lsh_plan(a, b)
    task = BandTask(0, len(a), 1, len(b), 0, min(bands, lsh.bands))
    start = time.process_time()
    run_task(task, a, b, THRESHOLD, lsh)
    return (time.process_time() - start) / task.units, lsh.bands


def realistic_members(count: int, records: int) -> list[np.ndarray]:
    """`count` members of `records` realistic CLKs (benchmarks/realclks.py: the default
    schema's record-level CLKs, what batch LSH compares): consecutive slices of the cached
    1,000,000 x 1,000,000 pair, taken from A and B in turn (B shares 10% of A's people).
    Members past that pair's 2,000,000 records are slices of one more export in A's style
    of other people (seed 1, encoded and cached on first use): they share no one with the
    others, only namesakes and relatives."""
    from benchmarks.realclks import load_realistic

    if records > 1_000_000:
        raise SystemExit("realistic members: at most 1,000,000 records each")
    first = min(count, 2 * (1_000_000 // records))
    pair = load_realistic(1_000_000, 1_000_000)
    found = [
        np.ascontiguousarray(pair[k % 2][(k // 2) * records : (k // 2 + 1) * records])
        for k in range(first)
    ]
    rest = count - first
    if rest:
        extra, _ = load_realistic(rest * records, 0, seed=1)
        found += [np.ascontiguousarray(extra[k * records : (k + 1) * records]) for k in range(rest)]
    return found


def data(kind: str, count: int, records: int, seed: int) -> list[np.ndarray]:
    return (
        realistic_members(count, records)
        if kind == "realistic"
        else members(count, records, seed=seed)
    )


@dataclass
class Shape:
    """A kind of pair in a scenario: how many such pairs, their sizes, bands and band cost;
    or, for pairs compared exhaustively (no bands), the CPU seconds of one such pair."""

    name: str
    pairs: int
    n_a: int
    n_b: int
    bands: int = 0
    band_s: float = 0.0
    dense_s: float = 0.0

    @property
    def core_seconds(self) -> float:
        return self.pairs * (self.bands * self.band_s if self.bands else self.dense_s)

    def tasks(self, task_comparisons: int = TASK_COMPARISONS) -> int:
        """Tasks as the Dask executor plans them (core.cluster, core.tasks.plan_tasks)."""
        from blindmatch.matcher.core.cluster import BAND_ROWS_PER_COMPARISON
        from blindmatch.matcher.core.executor import BANDS_PER_TASK

        if not self.bands:
            return self.pairs * math.ceil(self.n_a * self.n_b / task_comparisons)
        band_rows = int(task_comparisons * BAND_ROWS_PER_COMPARISON)
        per_task = max(1, band_rows // (self.n_a + self.n_b), BANDS_PER_TASK)
        per_task = min(self.bands, per_task)
        return self.pairs * math.ceil(self.bands / per_task)


def project(
    name: str, shapes: list[Shape], overhead: float, solve_rate: float, candidates: float
) -> None:
    core_s = sum(s.core_seconds for s in shapes)
    tasks = sum(s.tasks() for s in shapes)
    solve_s = candidates / solve_rate
    print(f"\n{name}")
    for s in shapes:
        how = (
            f"{s.bands} bands, {s.band_s * 1000:.1f} ms a band"
            if s.bands
            else f"every pair of rows, {s.dense_s:,.2f} s a pair"
        )
        print(
            f"  {s.name}: {s.pairs:,} pairs of {s.n_a:,} x {s.n_b:,}, {how} -> "
            f"{s.core_seconds / 3600:,.1f} core-hours"
        )
    print(
        f"  comparing: {core_s / 3600:,.1f} core-hours in {tasks:,} tasks "
        f"(+{tasks * overhead / 3600:,.2f} core-hours of task overhead); solving in the "
        f"matcher: {candidates:,.0f} candidates at {solve_rate:,.0f}/s = {solve_s / 60:,.1f} min"
    )
    for workers in (16, 64, 256, 1024):
        wall = (core_s + tasks * overhead) / workers + solve_s
        print(f"    {workers:>5} worker cores: {wall / 3600:6.2f} h")
    for hours in (8, 1):
        budget = hours * 3600 - solve_s
        need = math.ceil((core_s + tasks * overhead) / budget) if budget > 0 else 0
        said = f"{need:,} worker cores" if need else "not possible: solving alone takes longer"
        print(f"    to finish in {hours} h: {said}")


def costs(args: argparse.Namespace) -> None:
    print(f"costs: {args.kind} CLKs; {load()}")
    anchor = anonlink_rate()
    print(f"anchor: anonlink dice_coefficient_accelerated, one core: {anchor / 1e6:,.1f} M/s")
    if args.kind == "realistic":
        print("loading 2 x 1,000,000 realistic CLKs (benchmarks/realclks.py) ...", flush=True)
        big_a, big_b = realistic_members(2, 1_000_000)
    else:
        print("generating 2 x 1,000,000 synthetic CLKs for the band costs ...", flush=True)
        big_a, big_b = members(2, 1_000_000, seed=8)
    # A retailer against a force's rows: 10,000 x 250,000, exhaustive tasks on one thread.
    dense_a, dense_b = big_a[:10_000], big_b[:250_000]
    start, cpu_start = time.perf_counter(), time.process_time()
    out = timed(ThreadExecutor(1), CompareJob([dense_a, dense_b], THRESHOLD, "exhaustive"))
    rate = out.comparisons / (time.perf_counter() - start)
    dense_cpu = out.comparisons / (time.process_time() - cpu_start)
    print(
        f"exhaustive tasks, one thread (10,000 x 250,000): {rate / 1e6:,.0f} M comparisons/s "
        f"of wall time, {dense_cpu / 1e6:,.0f} M a CPU second ({dense_cpu / anchor:.1f}x the "
        "anchor's CPU rate)"
    )

    cpu0 = _usage()[1]
    threads_s, n = overhead_per_task(ThreadExecutor(1), args.overhead_tasks)
    threads_cpu = (_usage()[1] - cpu0) / n
    with local_cluster(1) as cluster:
        cluster.reset()
        cpu0 = _usage()[1]
        dask_s, _n = overhead_per_task(
            DaskExecutor(DaskSettings(cluster.address, "x")), args.overhead_tasks
        )
        dask_cpu = (cluster.usage()[1] + _usage()[1] - cpu0) / n
    print(
        f"overhead per task ({n:,} tiny tasks, one worker): Dask {dask_s * 1000:.2f} ms of wall "
        f"time, {dask_cpu * 1000:.2f} ms of CPU (worker, scheduler and matcher together); the "
        f"matcher's threads {threads_s * 1000:.3f} ms, {threads_cpu * 1000:.3f} ms of CPU "
        f"({dask_s / threads_s:,.0f}x)"
    )

    # One plan a run (core.blocking.plan over every member's sizes): every pair of the run
    # compares the same bands. Band costs are timed under the plan of the scenario.
    forces_sizes = [1_000_000] * 43
    plans = {
        "forces": lsh_plan(big_a, big_b, forces_sizes),
        "with retailers": lsh_plan(big_a, big_b, forces_sizes + [10_000] * 300),
    }
    for name, p in plans.items():
        print(
            f"plan for {name}: {p.bands} bands of {p.positions.shape[1]} bits, design recall "
            f"{p.design_recall:.4f}"
        )
    measured: dict[tuple[str, int, int], float] = {}

    def shape(plan: str, label: str, pairs: int, n_a: int, n_b: int) -> Shape:
        lsh = plans[plan]
        key = (f"{lsh.bands}x{lsh.positions.shape[1]}", n_a, n_b)
        if key not in measured:
            measured[key] = band_seconds(big_a[:n_a], big_b[:n_b], lsh, args.bands)[0]
            print(
                f"  LSH band {label} ({key[0]} plan): {measured[key] * 1000:.1f} ms of CPU a band"
                f" ({min(args.bands, lsh.bands)} bands timed)",
                flush=True,
            )
        return Shape(label, pairs, n_a, n_b, lsh.bands, measured[key])

    # The matcher's serial part: merging and solving candidates (greedy, one thread).
    lsh = plans["forces"]
    n = 200_000
    task = BandTask(0, n, 1, n, 0, lsh.bands)
    found = run_task(task, big_a[:n], big_b[:n], THRESHOLD, lsh).candidates
    start = time.process_time()  # one thread: its CPU time is its time on an idle core
    solve(merge([found]))
    solve_rate = len(found) / (time.process_time() - start)
    print(
        f"solve (merge + greedy, matcher): {solve_rate:,.0f} candidates a CPU second "
        f"({len(found):,})"
    )
    # Candidates of different people at the threshold (namesakes, relatives): with real
    # encodings a share of every pair of records, on top of the people members share.
    false_rate = 0.0
    if args.kind == "realistic":
        from benchmarks.realclks import realistic_pair

        pair = realistic_pair(1_000_000, 1_000_000)
        inside = (pair.truth_a < n) & (pair.truth_b < n)
        true_keys = (pair.truth_a[inside].astype(np.uint64) << np.uint64(32)) | pair.truth_b[
            inside
        ].astype(np.uint64)
        keys = (found.rec0.astype(np.uint64) << np.uint64(32)) | found.rec1.astype(np.uint64)
        false = int((~np.isin(keys, true_keys)).sum())
        false_rate = false / (n * n)
        print(
            f"candidates of different people at {THRESHOLD}: {false:,} of {len(found):,} in "
            f"{n:,} x {n:,}: {false_rate:.3g} a pair of records"
        )

    def candidates(shapes: list[Shape], share: float) -> float:
        """Each pair: `share` of the smaller member's people shared, and false candidates."""
        return sum(
            s.pairs * (share * min(s.n_a, s.n_b) + false_rate * s.n_a * s.n_b) for s in shapes
        )

    forces = [shape("forces", "1M x 1M", 43 * 42 // 2, 1_000_000, 1_000_000)]
    with_retail = [
        shape("with retailers", "1M x 1M", 43 * 42 // 2, 1_000_000, 1_000_000),
        shape("with retailers", "10k x 1M", 43 * 300, 10_000, 1_000_000),
        shape("with retailers", "10k x 10k", 300 * 299 // 2, 10_000, 10_000),
    ]
    # A person held by several forces appears in each pair's candidates: `overlap` of each
    # dataset shared with each other dataset.
    ov = args.overlap
    project(
        f"43 forces x 1,000,000, all pairs, LSH (overlap {ov:.0%} a pair)",
        forces, dask_cpu, solve_rate, candidates(forces, ov),
    )  # fmt: skip
    project(
        "the same plus 300 retailers x 10,000",
        with_retail, dask_cpu, solve_rate, candidates(with_retail, ov),
    )  # fmt: skip
    nightly = [
        shape("with retailers", "50k x 1M", 2 * 903, 50_000, 1_000_000),
        shape("with retailers", "500 x 10k", 2 * 44_850, 500, 10_000),
        shape("with retailers", "500 x 1M", 2 * 12_900, 500, 1_000_000),
    ]
    project(
        "nightly: the 5% that changed against everyone (a delta run: not built; see docs/scale.md)",
        nightly, dask_cpu, solve_rate, candidates(nightly, ov),
    )  # fmt: skip

    # A plan per shape of pair (core.blocking.plan_pairs, what runs use): each shape gets
    # the plan that costs it least, or is compared exhaustively where that is cheaper.
    def own(label: str, pairs: int, n_a: int, n_b: int) -> Shape:
        found = blocking.plan_pairs([big_a, big_b], THRESHOLD, sizes=[n_a, n_b])
        if isinstance(found, blocking.NoPlan):
            print(f"  plan for {label} alone: none, every pair of rows ({found.message})")
            return Shape(label, pairs, n_a, n_b, dense_s=n_a * n_b / dense_cpu)
        lsh = found.plans[0]
        plans[f"{label} alone"] = lsh
        print(f"  plan for {label} alone: {lsh.bands} bands of {lsh.bits_per_band} bits, "
              f"design recall {lsh.design_recall:.4f}")  # fmt: skip
        return shape(f"{label} alone", label, pairs, n_a, n_b)

    print("\na plan per shape of pair (core.blocking.plan_pairs):")
    per_forces = [own("1M x 1M", 43 * 42 // 2, 1_000_000, 1_000_000)]
    per_retail = [
        *per_forces,
        own("10k x 1M", 43 * 300, 10_000, 1_000_000),
        own("10k x 10k", 300 * 299 // 2, 10_000, 10_000),
    ]
    per_nightly = [
        own("50k x 1M", 2 * 903, 50_000, 1_000_000),
        own("500 x 10k", 2 * 44_850, 500, 10_000),
        own("500 x 1M", 2 * 12_900, 500, 1_000_000),
    ]
    project(
        "43 forces x 1,000,000, a plan per shape of pair",
        per_forces, dask_cpu, solve_rate, candidates(per_forces, ov),
    )  # fmt: skip
    project(
        "the same plus 300 retailers x 10,000, a plan per shape of pair",
        per_retail, dask_cpu, solve_rate, candidates(per_retail, ov),
    )  # fmt: skip
    project(
        "nightly delta, a plan per shape of pair (not built; see docs/scale.md)",
        per_nightly, dask_cpu, solve_rate, candidates(per_nightly, ov),
    )  # fmt: skip


# -- the same run, in-process and on Dask --------------------------------------------------


def same_run(args: argparse.Namespace) -> None:
    print(
        f"same-run: {args.members} x {args.records:,} {args.kind} CLKs, {args.blocking}; {load()}"
    )
    datasets = data(args.kind, args.members, args.records, seed=9)
    configs = args.configs.split(",")
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        files = write_uploads(datasets, Path(tmp))
        mapped = [
            np.memmap(Path(tmp) / f"{f.upload_id}.bin", np.uint8, "r", shape=(f.rows, f.width))
            for f in files
        ]
        fixed = None
        if args.blocking == "lsh":
            found = blocking.plan(datasets, THRESHOLD)
            if isinstance(found, blocking.NoPlan):
                # At these sizes comparing every pair is cheaper (a run would); time LSH
                # anyway, with the bands the planner gives such data at 1M a member.
                print(f"planner: no LSH plan ({found.message}); using its plan at 1M a member")
                found = blocking.plan(datasets, THRESHOLD, sizes=[1_000_000] * len(datasets))
            assert isinstance(found, blocking.LshPlan), found
            fixed = found
        job = CompareJob(mapped, THRESHOLD, args.blocking, files=files, lsh=fixed)
        lsh = fixed  # one plan: these runs' members are all of one size
        planned = plan_tasks(job.sizes, args.blocking, lsh, band_rows=job.band_rows(lsh, 2))
        print(
            f"plan: {len(planned)} tasks on 2 threads"
            + (f", {lsh.bands} bands of {lsh.positions.shape[1]} bits" if lsh else "")
        )
        if lsh is not None:
            # The model, from one pair's band cost timed now (docs/scale.md).
            band_s, _bands = band_seconds(datasets[0], datasets[1], lsh, args.model_bands)
            pairs = args.members * (args.members - 1) // 2
            core_s = band_s * lsh.bands * pairs
            print(
                f"model: {band_s * 1000:.1f} ms of CPU a band x {lsh.bands} bands x {pairs} "
                f"pairs = {core_s:,.0f} core-seconds: {core_s:,.0f} s on 1 idle core, "
                f"{core_s / 2:,.0f} s on 2 (plus Dask's overhead per task, `costs`)",
                flush=True,
            )
        results: dict[str, Outcome] = {}
        for config in configs:
            _reset_peak()
            here0 = _usage()[1]
            if config == "threads":
                results[config] = out = timed(ThreadExecutor(2), job)
                peak, cpu = _usage()
                used = f", peak RSS here {peak:,.0f} MiB"
            else:
                mode, workers = config.rstrip("12"), int(config[-1])
                with local_cluster(workers) as cluster:
                    clks = tmp if mode == "files" else "scatter"
                    ex = DaskExecutor(DaskSettings(cluster.address, clks))
                    cluster.reset()
                    here0 = _usage()[1]
                    results[config] = out = timed(ex, job)
                    peaks, workers_cpu = cluster.usage()
                    here = _usage()[1] - here0  # the matcher's side, and this local scheduler
                    cpu = workers_cpu + here + here0
                    used = (
                        f" (workers {workers_cpu:.1f}, matcher and scheduler {here:.1f}), "
                        "worker peak RSS " + " / ".join(f"{p:,.0f}" for p in peaks) + " MiB"
                    )
            cpu -= here0
            print(
                f"  {config:>9}: {out.seconds:8.1f} s, CPU {cpu:7.1f} s, {out.tasks:,} tasks, "
                f"{out.candidates:,} candidates, digest {out.digest}{used}",
                flush=True,
            )
        base = results.get("threads")
        if base is not None:
            print("ratios to the in-process run (2 threads), wall time:")
            for config, out in results.items():
                print(f"  {config:>9}: {out.seconds / base.seconds:.2f}")
        same = len({o.digest for o in results.values()}) == 1
        print(f"every configuration found the same candidates: {'yes' if same else 'NO'}")
        print(f"after: {load()}")


# -- the standing index at scale ---------------------------------------------------------


class Echo:
    """A Dask actor that does nothing: the floor of a look-up sent to an actor."""

    def ask(self, query: bytes) -> bytes:
        return query


def index(args: argparse.Namespace) -> None:
    from blindmatch.matcher.core.index import Segment, as_words

    print(f"index: {args.kind} CLKs; {load()}")
    largest = max(args.sizes)
    if args.kind == "realistic":
        # A's record-level CLKs are the index (past 1,000,000 rows, followed by the seed-1
        # export's: `realistic_members`); the queries are B's, half of them people A holds
        # (the truth of the cached pair) and half people it does not.
        from benchmarks.realclks import load_realistic, realistic_pair

        pair = realistic_pair(1_000_000, 1_000_000)
        rows = pair.a
        if largest > len(rows):
            extra, _ = load_realistic(largest - len(rows), 0, seed=1)
            rows = np.concatenate([rows, extra])
        held = pair.truth_b[pair.truth_a < min(args.sizes)][: args.queries // 2]
        others = np.setdiff1d(np.arange(len(pair.b)), pair.truth_b)[: args.queries - len(held)]
        queries = pair.b[np.concatenate([held, others])]
    else:
        print(f"generating 2 x {largest:,} synthetic CLKs ...", flush=True)
        rows, queries = members(2, largest, overlap=0.5, seed=12)
    asked = as_words(np.ascontiguousarray(queries[: args.queries]), 1024)
    for size in sorted(args.sizes):
        words = as_words(rows[:size], 1024)
        start, cpu_start = time.perf_counter(), time.process_time()
        seg = Segment.build(words, [str(i) for i in range(size)], threshold=THRESHOLD)
        built, built_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        for q in asked[:200]:  # warm the tables, as the matcher does before it listens
            seg.search(q, THRESHOLD)
        times, cpu = [], []
        found = 0
        for q in asked:
            t0, c0 = time.perf_counter(), time.thread_time()
            hit, _ = seg.search(q, THRESHOLD)
            cpu.append(time.thread_time() - c0)  # this thread's CPU: other jobs do not count
            times.append(time.perf_counter() - t0)
            found += len(hit)
        mean = sum(times) / len(times)
        p50 = sorted(times)[len(times) // 2]
        cpu_mean, cpu_p50 = sum(cpu) / len(cpu), sorted(cpu)[len(cpu) // 2]
        mib = seg.lsh.nbytes / 2**20 if seg.lsh is not None else 0.0
        print(
            f"  {size:>10,} rows: look-up CPU p50 {cpu_p50 * 1e6:,.0f} µs, mean "
            f"{cpu_mean * 1e6:,.0f} µs ({cpu_p50 * 1e6 / (size / 1e6):,.0f} µs per million "
            f"rows at p50); wall p50 {p50 * 1e6:,.0f} µs, mean {mean * 1e6:,.0f} µs; tables "
            f"{mib:,.0f} MiB, built in {built_cpu:.1f} CPU s ({built:.1f} s); "
            f"{found / len(asked):.2f} hits a query",
            flush=True,
        )
        del seg, words
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None)
        as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        actor = client.submit(Echo, actor=True).result()
        query = asked[0].tobytes()
        for _ in range(50):
            actor.ask(query).result()
        times = []
        for _ in range(args.queries):
            t0 = time.perf_counter()
            actor.ask(query).result()
            times.append(time.perf_counter() - t0)
        direct = []
        echo = Echo()
        for _ in range(args.queries):
            t0 = time.perf_counter()
            echo.ask(query)
            direct.append(time.perf_counter() - t0)
    times.sort()
    print(
        f"Dask actor round trip (a call that does nothing, {args.queries:,} calls): "
        f"p50 {times[len(times) // 2] * 1e3:.2f} ms, p99 {times[int(len(times) * 0.99)] * 1e3:.2f}"
        f" ms; the same call in-process {sorted(direct)[len(direct) // 2] * 1e6:.1f} µs"
    )
    print(f"after: {load()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("same-run", help="one run in-process and on 1 and 2 Dask workers")
    p.add_argument("--members", type=int, default=10)
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--blocking", choices=("lsh", "exhaustive"), default="lsh")
    p.add_argument(
        "--configs",
        default="threads,files1,files2,scatter1,scatter2",
        help="threads, filesN (workers read upload files), scatterN (N = 1 or 2 workers)",
    )
    p.add_argument("--tmp", help="folder for the upload files (default: the system's)")
    p.add_argument("--model-bands", type=int, default=BAND_PASS, help="bands timed for the model")
    p.add_argument("--kind", choices=KINDS, default="realistic", help=KIND_HELP)
    p.set_defaults(func=same_run)
    p = sub.add_parser("costs", help="unit costs and the national-scale projection")
    p.add_argument("--overhead-tasks", type=int, default=1_000)
    p.add_argument("--bands", type=int, default=BAND_PASS, help="bands timed per shape")
    p.add_argument("--kind", choices=KINDS, default="realistic", help=KIND_HELP)
    p.add_argument("--overlap", type=float, default=0.05, help="share of a dataset in each pair")
    p.set_defaults(func=costs)
    p = sub.add_parser("index", help="standing index look-ups by size, and a Dask actor's floor")
    p.add_argument(
        "--sizes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[250_000, 1_000_000, 2_000_000],
    )
    p.add_argument("--queries", type=int, default=2_000)
    p.add_argument("--kind", choices=KINDS, default="realistic", help=KIND_HELP)
    p.set_defaults(func=index)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
