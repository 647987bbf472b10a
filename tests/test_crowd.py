"""The cut lifted where chance candidates crowd (matcher/core/crowd.py): a run against a large
partner drops the band of scores just over the threshold when its own candidates say that
band is mostly chance; where candidates are few, nothing moves."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import crowd
from blindmatch.matcher.core.compare import Candidates, merge
from blindmatch.matcher.usecases.runs import match

BITS, SET = 1024, 400


def _clk(bits: npt.NDArray[np.intp]) -> npt.NDArray[np.uint8]:
    row = np.zeros(BITS, dtype=bool)
    row[bits] = True
    return np.packbits(row)


def _near(
    base: npt.NDArray[np.intp], moved: int, rng: np.random.Generator
) -> npt.NDArray[np.uint8]:
    """A CLK sharing all but `moved` of `base`'s bits: Dice (SET - moved) / SET with it."""
    elsewhere = rng.choice(np.setdiff1d(np.arange(BITS), base), moved, replace=False)
    return _clk(np.concatenate([base[moved:], elsewhere]))


def _members(
    anchored: int, namesakes: int, alone: int, seed: int = 1
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]]:
    """A small member of `anchored` + `alone` records and its partner: each anchored record
    has its true partner (Dice 0.95) and `namesakes` strangers at Dice 0.805; each of the
    `alone` records has no partner, only one stranger at 0.805."""
    rng = np.random.default_rng(seed)
    bases = [rng.choice(BITS, SET, replace=False) for _ in range(anchored + alone)]
    small = np.stack([_clk(b) for b in bases])
    partner = []
    for i, base in enumerate(bases):
        if i < anchored:
            partner.append(_near(base, 20, rng))
        partner += [_near(base, 78, rng) for _ in range(namesakes if i < anchored else 1)]
    return small, np.stack(partner)


def _links(small: npt.NDArray[np.uint8], partner: npt.NDArray[np.uint8]) -> dict[int, float]:
    result = match([small, partner], 0.8, blocking="exhaustive", workers=1)
    mine = result.links.dset == 0
    return dict(
        zip(result.links.row[mine].tolist(), result.links.score[mine].tolist(), strict=True)
    )


def test_a_crowded_band_over_the_threshold_is_cut() -> None:
    # 30 records with their partner and 4 strangers each at 0.805: 120 sure-chance pairs in
    # the band [0.80, 0.81), which the estimate puts at about all of its 130 pairs. The 10
    # records with a stranger only are not linked (before: linked to it, every one false).
    small, partner = _members(anchored=30, namesakes=4, alone=10)
    links = _links(small, partner)
    assert sorted(links) == list(range(30))
    assert min(links.values()) > 0.9


def test_nothing_moves_where_candidates_are_few() -> None:
    # 2 strangers in all beside the anchored records' partners: under the evidence a band
    # needs, so the lonely records keep their (false) links, as a fixed threshold gives.
    small, partner = _members(anchored=30, namesakes=0, alone=2)
    assert sorted(_links(small, partner)) == list(range(32))


def test_a_band_of_true_pairs_stays() -> None:
    # 12 sure-chance pairs in the band found in 6,000 comparisons: of 9,000 in all that is
    # about 18 chance pairs of the band's 72, mostly true pairs: the cut stays. Of 180,000
    # comparisons, about 360: the band is chance, and the cut moves over it.
    scores = np.r_[np.full(12, 0.805), np.full(60, 0.805), np.full(30, 0.95)]
    chance = np.r_[np.ones(12, bool), np.zeros(90, bool)]
    assert crowd.band_cut(scores, chance, 30 * 200, 90 * 100, 0.8) == 0.8
    assert crowd.band_cut(scores, chance, 30 * 200, 90 * 2000, 0.8) == 0.81


def test_each_kind_of_pair_has_its_own_cut() -> None:
    # Member 0's records 0-39 lack a date of birth (pairs scored on the fallback CLK): 30 with
    # their partner at 0.95 and 4 strangers at 0.805, 10 with one stranger. Records 40-49 have
    # one (scored by the rule) at 0.805 each, with no crowd of their kind: they stay.
    sims, rec0, rec1 = [], [], []
    row = 0
    for i in range(50):
        for score in [0.95, *[0.805] * 4] if i < 30 else [0.805]:
            sims.append(score)
            rec0.append(i)
            rec1.append(row)
            row += 1
    k = len(sims)
    cands = merge(
        [Candidates(np.array(sims), np.zeros(k, np.uint32), np.ones(k, np.uint32),
                    np.array(rec0, np.uint32), np.array(rec1, np.uint32))]
    )  # fmt: skip
    lacking = [np.arange(50) < 40, np.zeros(row, dtype=bool)]
    kept = crowd.lifted(cands, 0.8, [50, row], lacking)
    left = sorted(set(kept.rec0.tolist()))
    assert left == [*range(30), *range(40, 50)]
    assert (kept.sims[kept.rec0 < 30] == 0.95).all()
