"""Comparison tasks: however a run is cut, and in whatever order the pieces come back, the
candidates are the same pairs with the same scores."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from blindmatch.matcher.core import blocking
from blindmatch.matcher.core.compare import merge
from blindmatch.matcher.core.executor import CompareJob, ThreadExecutor
from blindmatch.matcher.core.kernel import dice_candidates
from blindmatch.matcher.core.tasks import (
    BandTask,
    DenseTask,
    combine,
    plan_tasks,
    run_task,
)


def clks(seed: int, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Members sharing noisy copies of some people: pairs at Dice ~0.9 and far below."""
    rng = np.random.default_rng(seed)
    people = rng.random((sum(sizes), 512)) < 0.35
    out = []
    for i, n in enumerate(sizes):
        rows = np.roll(people, -40 * i, axis=0)[:n] ^ (rng.random((n, 512)) < 0.03)
        out.append(np.packbits(rows, axis=1))
    return out


def as_lists(parts: list) -> tuple[list, ...]:
    c = merge(parts)
    return c.sims.tolist(), c.dset0.tolist(), c.dset1.tolist(), c.rec0.tolist(), c.rec1.tolist()


def run_all(tasks: list, datasets: list[np.ndarray], lsh: blocking.LshPlan | None) -> list:
    out = []
    for task in tasks:
        a, b = (datasets[r.dataset][r.start : r.stop] for r in task.inputs)
        out.append(run_task(task, a, b, 0.8, lsh))
    return out


def test_dense_tasks_compare_every_pair_of_rows_once_in_any_order() -> None:
    datasets = clks(1, (300, 250, 120))
    tasks = plan_tasks([len(d) for d in datasets], "exhaustive", chunk_comparisons=4_000)
    assert all(isinstance(t, DenseTask) for t in tasks) and len(tasks) > 20
    results = run_all(tasks, datasets, None)
    random.Random(2).shuffle(results)
    parts, comparisons = combine(results)
    assert comparisons == 300 * 250 + 300 * 120 + 250 * 120
    whole = []
    for x in range(3):
        for y in range(x + 1, 3):
            sims, ra, rb = dice_candidates(datasets[x], datasets[y], 0.8)
            whole.append({(x, y, int(i), int(j)): s for s, i, j in zip(sims, ra, rb, strict=True)})
    sims, d0, d1, r0, r1 = as_lists(parts)
    found = dict(zip(zip(d0, d1, r0, r1, strict=True), sims, strict=True))
    assert len(found) == len(sims) > 30  # each pair once
    assert found == {k: v for part in whole for k, v in part.items()}


@pytest.mark.parametrize("band_rows", [0, 5_000, 100_000])
def test_band_tasks_find_the_same_pairs_however_the_bands_are_grouped(band_rows: int) -> None:
    datasets = clks(3, (400, 350, 300))
    lsh = blocking.plan(datasets, 0.8, sizes=[200_000] * 3)  # at 400 rows: no plan, too dear
    assert isinstance(lsh, blocking.LshPlan)
    one_band = plan_tasks([len(d) for d in datasets], "lsh", lsh)
    grouped = plan_tasks([len(d) for d in datasets], "lsh", lsh, band_rows=band_rows)
    assert all(isinstance(t, BandTask) for t in grouped)
    # Every band of every pair of members, exactly once.
    covered = sorted((t.a, t.b, band) for t in grouped for band in range(t.band_start, t.band_stop))
    assert covered == sorted((t.a, t.b, t.band_start) for t in one_band)
    reference = as_lists(combine(run_all(one_band, datasets, lsh))[0])
    results = run_all(grouped, datasets, lsh)
    random.Random(4).shuffle(results)
    assert as_lists(combine(results)[0]) == reference
    assert len(reference[0]) > 30


def test_a_plan_per_shape_of_pair_compares_each_pair_under_its_own_plan() -> None:
    datasets = clks(6, (400, 300, 200, 150))
    sizes = [len(d) for d in datasets]
    # Planned as for members of 1M, 100k, 5k and 500 rows: the large pair gets long keys,
    # the pairs with the 5k member short ones, and the 500-row member's pairs none.
    plans = blocking.plan_pairs(datasets, 0.8, sizes=[1_000_000, 100_000, 5_000, 500])
    assert isinstance(plans, blocking.PairPlans)
    big, small = plans.plans
    assert big.bits_per_band > small.bits_per_band and big.bands > small.bands
    assert plans.pairs == {(0, 1): 0, (0, 2): 1, (1, 2): 1}
    assert set(plans.exhaustive) == {(0, 3), (1, 3), (2, 3)}
    tasks = plan_tasks(sizes, "lsh", plans, band_rows=5_000, chunk_comparisons=10_000)
    for (x, y), k in plans.pairs.items():  # every band of the pair's own plan, once
        bands = sorted(b for t in tasks if isinstance(t, BandTask) and (t.a, t.b) == (x, y)
                       for b in range(t.band_start, t.band_stop))  # fmt: skip
        assert bands == list(range(plans.plans[k].bands))
        assert {t.plan for t in tasks if isinstance(t, BandTask) and (t.a, t.b) == (x, y)} == {k}
    dense = [t for t in tasks if isinstance(t, DenseTask)]
    assert {(t.chunk.a, t.chunk.b) for t in dense} == {(0, 3), (1, 3), (2, 3)}
    assert sum(t.units for t in dense) == 150 * (400 + 300 + 200)
    results = []
    for task in tasks:
        a, b = (datasets[r.dataset][r.start : r.stop] for r in task.inputs)
        results.append(run_task(task, a, b, 0.8, plans))  # each band task takes its plan
    random.Random(5).shuffle(results)
    sims, d0, d1, r0, r1 = as_lists(combine(results)[0])
    found = dict(zip(zip(d0, d1, r0, r1, strict=True), sims, strict=True))
    # What each pair finds alone: its plan's bands, or every pair of rows.
    expected = {}
    for x in range(4):
        for y in range(x + 1, 4):
            k = plans.pairs.get((x, y))
            if k is None:
                s, ia, ib = dice_candidates(datasets[x], datasets[y], 0.8)
            else:
                got = blocking.compare_bands(
                    datasets[x], datasets[y], plans.plans[k].positions, 0.8
                )
                s, ia, ib = got.sims, got.rows_a, got.rows_b
            expected.update({(x, y, int(i), int(j)): v for v, i, j in zip(s, ia, ib, strict=True)})
    assert found == expected and len(found) > 100
    assert {(x, y) for x, y, _, _ in found} == {(x, y) for x in range(4) for y in range(x + 1, 4)}


def test_a_run_mixing_bands_and_exhaustive_pairs_reports_progress_in_one_unit() -> None:
    datasets = clks(6, (400, 300, 200, 150))
    plans = blocking.plan_pairs(datasets, 0.8, sizes=[1_000_000, 100_000, 5_000, 500])
    assert isinstance(plans, blocking.PairPlans) and plans.exhaustive
    reports: list[tuple[int, int]] = []
    job = CompareJob(datasets, 0.8, "lsh", lsh=plans)
    ThreadExecutor(2, chunk_comparisons=10_000).compare(
        job, lambda stage, done, total: reports.append((done, total)), lambda *a: None
    )
    # The three exhaustive pairs' comparisons, and each band as 87 comparisons a row of its
    # two members: the bands are not lost beside the comparisons (a band of 400 + 300 rows
    # counts 60,900), and the bar ends full.
    bands = sum(plans.plans[k].bands * (len(datasets[x]) + len(datasets[y])) * 87
                for (x, y), k in plans.pairs.items())  # fmt: skip
    assert reports[0] == (0, 150 * 900 + bands)
    assert reports[-1] == (150 * 900 + bands, 150 * 900 + bands)
    assert all(a[0] <= b[0] for a, b in itertools.pairwise(reports))


def test_a_task_given_the_wrong_rows_refuses() -> None:
    datasets = clks(5, (100, 100))
    task = plan_tasks([100, 100], "exhaustive", chunk_comparisons=2_500)[0]
    with pytest.raises(ValueError, match="task needs"):
        run_task(task, datasets[0], datasets[1], 0.8)
