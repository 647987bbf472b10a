"""A batch run's fallback pass: the pairs of fallback CLKs with a record lacking the
left-out fields on either side (core.fallback), found exhaustively or by LSH.

For each pair of members i < j the pass has two blocks, so that each pair of rows is in
one: (i's records lacking the fields) x (all of j's), and (i's other records) x (j's
records lacking them). A pair of a block is a candidate when the Dice of its fallback
CLKs reaches the threshold: `fallback.on_fallback` scores it by them (the rule's
candidate floor is the first CLKs').

- Exhaustive (a run compared exhaustively): every pair of a block, by the dense kernel, in
  about `STEPS` steps, each reported.
- LSH (a run blocked by LSH, `lsh=True`): each block is planned on its own by
  `blocking.plan` from its two sides' fallback CLKs -- their own bit frequencies, how much
  their own unrelated pairs agree, a design pair at the threshold -- to the run's target,
  design recall >= `blocking.TARGET_RECALL`, and compared band by band
  (`blocking.compare_bands`, `BAND_STEP` bands a step on `workers` threads), a pair found
  in several bands kept once. A block no plan serves (none reaches the target within
  `blocking.MAX_BANDS` bands, or the cheapest would cost more than every pair) is compared
  exhaustively, and the pass's `notes` say so: no pair is left to a plan below the target.

Progress is in the units of a run's `compare` stage: comparisons, a band counting as
`round(COST_ROW / COST_DENSE)` for each row of its block. Pure: arrays in, arrays out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import blocking
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.kernel import Clks, dice_candidates

# An exhaustive block is compared in at most about this many steps, each reported, and none
# under MIN_STEP comparisons: a member of 1,000,000 records beside one of 171,600 with
# 60,000 lacking a date of birth makes 6·10^10 comparisons (77 s on the 2-core host).
STEPS = 100
MIN_STEP = 1 << 26
BAND_STEP = 16  # bands a step (the native path computes 16 bands' keys in one pass)

# progress(work done, of this much)
PairProgress = Callable[[int, int], None]


@dataclass(frozen=True)
class Block:
    """Rows `rows_i` of member i against rows `rows_j` of member j (i < j), under `plan`
    (None: every pair)."""

    i: int
    j: int
    rows_i: npt.NDArray[np.intp]
    rows_j: npt.NDArray[np.intp]
    plan: blocking.LshPlan | None = None

    @property
    def pairs(self) -> int:
        return len(self.rows_i) * len(self.rows_j)

    @property
    def units(self) -> int:
        """Work units for progress (see the module docstring)."""
        if self.plan is None:
            return self.pairs
        per_row = max(1, round(blocking.COST_ROW / blocking.COST_DENSE))
        return self.plan.bands * (len(self.rows_i) + len(self.rows_j)) * per_row


@dataclass
class FallbackPass:
    """What the pass found, and what it cost."""

    parts: list[Candidates]
    comparisons: int  # fallback-CLK pairs scored (each band's collisions counted)
    pairs: int  # pairs of rows it covers: what an exhaustive pass compares
    notes: list[str]  # with LSH, one line a block: its plan, or why it was exhaustive

    @property
    def banded(self) -> int:
        """Blocks compared under an LSH plan (0 for an exhaustive pass)."""
        return sum(1 for n in self.notes if n.startswith("LSH"))


def blocks(lacking: Sequence[npt.NDArray[np.bool_]]) -> list[Block]:
    """The pass's blocks, each pair of rows with a lacking record in exactly one."""
    out = []
    n = len(lacking)
    for i in range(n):
        for j in range(i + 1, n):
            li, lj = lacking[i], lacking[j]
            for rows_i, rows_j in (
                (np.flatnonzero(li), np.arange(len(lj))),
                (np.flatnonzero(~li), np.flatnonzero(lj)),
            ):
                if len(rows_i) and len(rows_j):
                    out.append(Block(i, j, rows_i, rows_j))
    return out


def _side(clks: Clks, rows: npt.NDArray[np.intp]) -> Clks:
    return clks if len(rows) == len(clks) else np.ascontiguousarray(clks[rows])


def _planned(second: Sequence[Clks], block: Block, threshold: float) -> tuple[Block, str]:
    """The block with its LSH plan from its own two sides, or as it was (exhaustive), and
    a line saying which."""
    where = f"members {block.i} x {block.j}, {len(block.rows_i):,} x {len(block.rows_j):,} rows"
    rng = np.random.default_rng(blocking.SEED)
    sample = [  # the planner's sample of each side, without copying the whole side first
        second[k][np.sort(rng.choice(rows, min(len(rows), blocking.SAMPLE_ROWS), replace=False))]
        for k, rows in ((block.i, block.rows_i), (block.j, block.rows_j))
    ]
    found = blocking.plan(
        sample, threshold, sizes=[len(block.rows_i), len(block.rows_j)],
        max_bands=blocking.MAX_BANDS,
    )  # fmt: skip
    if isinstance(found, blocking.NoPlan):
        return block, f"exhaustive: {where}: {found.message}"
    return Block(block.i, block.j, block.rows_i, block.rows_j, found), (
        f"LSH: {where}: {found.describe()}"
    )


def find(
    second: Sequence[Clks],
    lacking: Sequence[npt.NDArray[np.bool_]],
    threshold: float,
    workers: int = 1,
    *,
    lsh: bool = False,
    progress: PairProgress | None = None,
) -> FallbackPass:
    """The fallback pass over members' fallback CLKs `second` (see the module docstring);
    `progress` is told of the work done, step by step."""
    todo = blocks(lacking)
    notes: list[str] = []
    if lsh:
        planned = [_planned(second, b, threshold) for b in todo]
        todo = [b for b, _ in planned]
        notes = [line for _, line in planned]
    total = sum(b.units for b in todo)
    tally = _Tally(total, progress)
    parts: list[Candidates] = []
    for block in todo:
        if block.plan is None:
            parts.extend(_every_pair(second, block, threshold, workers, tally))
        else:
            parts.append(_banded(second, block, block.plan, threshold, workers, tally))
    return FallbackPass(parts, tally.comparisons, sum(b.pairs for b in todo), notes)


class _Tally:
    """Work done and comparisons made, reported as they grow."""

    def __init__(self, total: int, progress: PairProgress | None) -> None:
        self.total, self.progress = total, progress
        self.step = max(total // STEPS, MIN_STEP)
        self.done = self.comparisons = 0
        if progress is not None:
            progress(0, total)

    def add(self, units: int, comparisons: int) -> None:
        self.done += units
        self.comparisons += comparisons
        if self.progress is not None:
            self.progress(self.done, self.total)


def _candidates(
    block: Block, sims: npt.NDArray[np.float64], ia: npt.NDArray[np.intp], ib: npt.NDArray[np.intp]
) -> Candidates:
    k = len(sims)
    return Candidates(
        sims.astype(np.float64),
        np.full(k, block.i, dtype=np.uint32),
        np.full(k, block.j, dtype=np.uint32),
        ia.astype(np.uint32),
        ib.astype(np.uint32),
    )


def _every_pair(
    second: Sequence[Clks], block: Block, threshold: float, workers: int, tally: _Tally
) -> list[Candidates]:
    """Every pair of the block, a step at a time."""
    left = second[block.i][block.rows_i]
    per = max(1, tally.step // len(block.rows_i))  # rows of j a step
    parts = []
    for lo in range(0, len(block.rows_j), per):
        rows = block.rows_j[lo : lo + per]
        sims, ia, ib = dice_candidates(left, second[block.j][rows], threshold, workers=workers)
        parts.append(_candidates(block, sims, block.rows_i[ia], rows[ib]))
        tally.add(len(block.rows_i) * len(rows), len(block.rows_i) * len(rows))
    return parts


def _banded(
    second: Sequence[Clks],
    block: Block,
    plan: blocking.LshPlan,
    threshold: float,
    workers: int,
    tally: _Tally,
) -> Candidates:
    """The block's pairs that collide in a band of `plan` and reach the threshold, each once."""
    if plan.design_recall < blocking.TARGET_RECALL:  # never a plan below the target
        raise blocking.LshPlanError(
            f"plan design recall {plan.design_recall:.4f} below target {blocking.TARGET_RECALL}"
        )
    left, right = _side(second[block.i], block.rows_i), _side(second[block.j], block.rows_j)
    steps = [(lo, min(lo + BAND_STEP, plan.bands)) for lo in range(0, plan.bands, BAND_STEP)]
    per_band = block.units // plan.bands

    def run(step: tuple[int, int]) -> blocking.BandResult:
        return blocking.compare_bands(left, right, plan.positions[step[0] : step[1]], threshold)

    sims, rows_a, rows_b = [], [], []
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for (lo, hi), res in zip(steps, pool.map(run, steps), strict=True):
            sims.append(res.sims)
            rows_a.append(res.rows_a)
            rows_b.append(res.rows_b)
            tally.add((hi - lo) * per_band, res.comparisons)
    s, ia, ib = blocking.dedupe(np.concatenate(sims), np.concatenate(rows_a),
                                np.concatenate(rows_b))  # fmt: skip
    return _candidates(block, s, block.rows_i[ia], block.rows_j[ib])


__all__ = ["BAND_STEP", "MIN_STEP", "STEPS", "Block", "FallbackPass", "blocks", "find"]
