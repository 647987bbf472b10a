"""The links a query should get against a partner, in the clear: what
benchmarks/twoserver_standing_rpc.py checks C's answers against, every query, by either path.

The benchmark's members are encoded under a fresh secret each run (benchmarks/densearith.py
`members`), so a pair's Dice moves a little from run to run, and a pair near a cut-off is a
link in one run and not in the next: its links are checked against this run's CLKs, not
against another run's (standfault: the "extra link" of a 128,000-record run was such a pair,
(0, 112027), Dice 0.794 to 0.800 on the record CLK under three secrets of six, 0.62 to 0.64 on
the fallback CLK, linked by the rule at 0.80 where it is).

`clear_links` decides each pair as a two-server run does (core/crosspart.py `cross_parts`,
core/ruleform.py `rule_bounds`): on the fallback CLK alone, the kernel's Dice test, where
either record lacks the fallback's fields (client/encoding/sharing.py `lacking`, from the
popcounts); else the rule on both CLKs (or, without a rule, Dice on the record CLK). Each link
is scored by its bucket, the highest cut-off it reaches (core/twoserver.py `bucket_scores`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding import sharing
from blindmatch.matcher.core import ruleform
from blindmatch.matcher.core.kernelrule import hamming_bounds
from blindmatch.matcher.domain import Rule

Clks = npt.NDArray[np.uint8]
Link = tuple[int, int, float]


def _pops(clks: Clks) -> npt.NDArray[np.int64]:
    return np.bitwise_count(clks).sum(axis=1, dtype=np.int64)


def clear_links(query: Sequence[Clks], partner: Sequence[Clks], rule: Rule,
                cutoffs: Sequence[float]) -> list[Link]:  # fmt: skip
    """(query record, partner record, bucket) of every pair that links, sorted: `query` and
    `partner` each member's CLKs (record CLK, fallback CLK; (records, bytes) each)."""
    cuts = tuple(float(c) for c in cutoffs)
    widths = [8 * int(x.shape[1]) for x in partner]
    if len(query) != 2 or len(partner) != 2:
        raise ValueError("clear_links: two CLKs a member (the record CLK, the fallback)")
    form = ruleform.integer_form(rule, cuts, *widths) if rule.active else None
    pb = [_pops(np.asarray(x)) for x in partner]
    lacks_b = sharing.lacking(pb[0], pb[1])
    out: list[Link] = []
    for i in range(len(query[0])):
        q = [np.asarray(x[i : i + 1]) for x in query]
        pa = [np.full(len(pb[0]), int(_pops(x)[0]), np.int64) for x in q]
        h = [_pops(np.bitwise_xor(x, np.asarray(y))) for x, y in zip(q, partner, strict=True)]
        if form is not None:
            record = ruleform.rule_bounds(form, widths[0], pa[0], pb[0], h[0], pa[1], pb[1], h[1])
        else:
            record = h[0] < hamming_bounds(pa[0], pb[0], cuts, widths[0])
        fallback = h[1] < hamming_bounds(pa[1], pb[1], cuts, widths[1])
        lacks_a = bool(sharing.lacking(pa[0][:1], pa[1][:1])[0])
        bits = np.where(lacks_a | lacks_b, fallback, record)
        reached = bits.sum(axis=0)
        for j in np.flatnonzero(bits[0]):
            out.append((i, int(j), cuts[int(reached[j]) - 1]))
    return sorted(out)


def dice(query: Sequence[Clks], partner: Sequence[Clks], link: Link) -> list[float]:
    """A link's Dice on each CLK (what `--show-links` prints beside it)."""
    i, j, _ = link
    out = []
    for x, y in zip(query, partner, strict=True):
        a, b = np.asarray(x[i : i + 1]), np.asarray(y[j : j + 1])
        total = int(_pops(a)[0] + _pops(b)[0])
        out.append(round(2 * int(_pops(a & b)[0]) / total, 3) if total else 0.0)
    return out


__all__ = ["clear_links", "dice"]
