"""What C's knowing the CLK of each pair it learns adds (`benchmarks/twoserver.py --view roles
--clk-tags`; a part of it, not a script). C learns the CLK of each part S1 proposes (core/
twoserver.py `Proposed.clk`), so of every link, and of each reach or extras pair that comes back
1 (named on both CLKs, S1 answers 0 on the one it does not score the pair by): whether either
record lacks the fallback's fields (core/twoblocking.py `fallback_split`). No attack of the
project reads such a tag, so this measures what it can give at most: how many of A's records
C's pairs tag, the tag's entropy and its mutual information with the attacker's own flag for
the same person (the attacker's plaintext encoded under its key, `sharing.lacking` on its two
CLKs' popcounts: what it can compare a tag with), and a claim drawn within the tag's class of
the attacker's people: the share of A it would re-identify, expected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding import sharing

Bools = npt.NDArray[np.bool_]


def _entropy(p: npt.NDArray[np.float64]) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def report(
    c_pairs: npt.NDArray[np.intp],
    lack_a: Bools,
    lack_b: Bools,
    a_people: Sequence[Any],
    own: Sequence[npt.NDArray[np.uint8]],
    u_people: Sequence[Any],
) -> None:
    """Print what the CLK tags of C's pairs of A and B (`c_pairs`) say of A's records."""
    fallback = lack_a[c_pairs[:, 0]] | lack_b[c_pairs[:, 1]]
    rows = np.unique(c_pairs[:, 0])
    # C's best reading of A's record: it has the fields where a pair of it was scored on the
    # record-level CLK; where all were on the fallback, it (or its partners) lacks them.
    any_record = np.zeros(len(lack_a), bool)
    any_record[c_pairs[~fallback, 0]] = True
    tag = ~any_record[rows]  # True: "lacks" (every pair of the record on the fallback CLK)
    mine = sharing.lacking(*(sharing.popcounts(v).astype(np.int64) for v in own))
    where = {p: k for k, p in enumerate(u_people)}
    held = np.array([where.get(a_people[i], -1) for i in rows], np.intp)
    ok = held >= 0
    tag, theirs = tag[ok], mine[held[ok]]
    joint = np.array([[np.mean(~tag & ~theirs), np.mean(~tag & theirs)],
                      [np.mean(tag & ~theirs), np.mean(tag & theirs)]])  # fmt: skip
    h_tag, h_own = _entropy(joint.sum(axis=1)), _entropy(joint.sum(axis=0))
    mutual = h_tag + h_own - _entropy(joint.ravel())
    # A claim drawn among the attacker's people whose own flag equals the tag: right with
    # chance 1 / (that class's size) where the person's flag agrees, else never.
    size = {True: int(mine.sum()), False: int((~mine).sum())}
    expected = sum(1.0 / max(size[bool(t)], 1) for t, o in zip(tag, theirs, strict=True) if t == o)
    print(f"C's CLK tags: {len(c_pairs):,} pairs of A and B in C's view, {int(fallback.sum()):,} "
          f"on the fallback CLK; {len(rows):,} of A's {len(lack_a):,} records in them, "
          f"{int(tag.sum()):,} tagged lacking (every pair of theirs on the fallback CLK; "
          f"{int(lack_a[rows].sum()):,} of them do lack the fields)")  # fmt: skip
    print(f"  the tag's entropy {h_tag:.3f} bits a record, its mutual information with the "
          f"attacker's own flag {mutual:.4f} bits (a person among {len(mine):,}: "
          f"{np.log2(len(mine)):.1f} bits); the attacker's people flagged lacking "
          f"{size[True]:,}; a claim drawn within the tag's class re-identifies "
          f"{expected:.2f} of A's records expected ({expected / len(lack_a):.3%})",
          flush=True)  # fmt: skip
