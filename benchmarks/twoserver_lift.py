"""What the crowd lift (matcher/core/crowd.py) would need in a two-server run, and what it
would give (issues 18 and 21), in process, on the same encodings as `popprec.py --ab`.

    nice -n 10 .venv/bin/python benchmarks/twoserver_lift.py households:7:50000 \
        [households:7:20000 ...] [--cache /tmp/blindmatch-popprec] [--two-server]

Each GENERATOR:SEED:PEOPLE[:CORRUPTION] cell is written and encoded as `popprec.py --ab`
does it (the same secret), then put through `match` (default settings, every member) once a
variant, with `crowd.lifted` replaced by the variant; F1 (P/R) over all members' hits as
`blindmatch evaluate` counts them. A two-server run's candidates are the Dice oracle's, each
scored by the lower end of its bucket among the run's cut-offs (the threshold and
`twoserver.default_buckets`: 0.85, 0.9, 0.95 at 0.8; docs/privacy-design.md "The combiner
without the candidates"), which is what C, who decides the hits, holds of them; so the
variants floor the candidates' Dice to cut-offs before the solver sees them:

- `CLK, lifted` / `CLK, not lifted`: a CLK project's run now / before the lift;
- `two-server, not lifted`: the run's buckets, no lift (a two-server run now);
- `two-server, lifted on its buckets, kinds pooled`: `crowd.lifted` on the buckets with what
  C holds (each member's record count, the candidates' rows and buckets): no record is
  known to lack the fallback's fields, so a pair of members' two kinds are counted as one;
- `... on its buckets, each kind`: the same, told which records lack them (S1 knows it);
- `... with threshold + 0.01 a cut-off, each kind`: one extra cut-off in the circuit, the
  lift's first band told apart (C would learn which candidates lie in it);
- `... on 0.01 buckets, kinds pooled` / `each kind`: with the extra cut-offs threshold +
  0.01 ... + 0.09 (crowd.py's bands) in the circuit, so C would learn each candidate's
  Dice to 0.01 up to threshold + 0.1.

`--two-server`: first a two-server run in process on the cell (S1, S2 and C as plain
objects, `two_server`), the row the simulated `two-server, not lifted` stands for (1.3 GB at
5,000 people; S1's and S2's shares grow with the records, about 143 kB a record).

Then what those extras would tell C, from the CLK run's candidates: how many candidates lie
under threshold + 0.1 (their Dice told to 0.01 rather than 0.05), the bits of a candidate's
bucket with either set of cut-offs (entropy over the run's candidates), and the records
lacking the fallback's fields (each member's count and, of the records a kind's count
would need told, the anchored records of the fallback kind, how many lack them).
"""

from __future__ import annotations

import argparse
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.popprec import THRESHOLD, ab_cell, ab_secret, fmt, prf
from blindmatch.matcher.core import crowd
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.twoserver import default_buckets

if TYPE_CHECKING:
    from benchmarks.quality_errors import Member as EncodedMember
    from blindmatch.client.tools.truth import Hit

Lacking = list[npt.NDArray[np.bool_]] | None
Variant = Callable[[Candidates, float, list[int], Lacking], Candidates]


def floored(cands: Candidates, cutoffs: tuple[float, ...]) -> Candidates:
    """`cands` scored by the lower end of their bucket among `cutoffs` (all at or above the
    first), as C holds a two-server run's candidates (`Combiner.bucket_scores`)."""
    cuts = np.asarray(cutoffs)
    at = np.searchsorted(cuts, cands.sims, side="right") - 1
    return Candidates(cuts[at], cands.dset0, cands.dset1, cands.rec0, cands.rec1)


FINE = round(crowd.ANCHOR / crowd.WIDTH)  # crowd.py's bands, threshold to threshold + ANCHOR


def cutoffs(threshold: float, bands: int = 0) -> tuple[float, ...]:
    """The run's cut-offs, with the lower ends of crowd.py's first `bands` bands as well."""
    run = (threshold, *default_buckets(threshold))
    return tuple(sorted({*run, *(round(threshold + k * crowd.WIDTH, 6) for k in range(bands))}))


def variants(original: Variant) -> dict[str, Variant]:
    def two(bands: int, lift: bool, kinds: bool) -> Variant:
        def variant(c: Candidates, t: float, sizes: list[int], lack: Lacking) -> Candidates:
            c = floored(c, cutoffs(t, bands))
            return original(c, t, sizes, lack if kinds else None) if lift else c

        return variant

    return {
        "CLK, lifted": original,
        "CLK, not lifted": lambda c, t, sizes, lack: c,
        "two-server, not lifted": two(0, False, False),
        "two-server, lifted on its buckets, kinds pooled": two(0, True, False),
        "two-server, lifted on its buckets, each kind": two(0, True, True),
        "two-server, lifted with threshold + 0.01 a cut-off, each kind": two(2, True, True),
        "two-server, lifted on 0.01 buckets, kinds pooled": two(FINE, True, False),
        "two-server, lifted on 0.01 buckets, each kind": two(FINE, True, True),
    }


def entropy(scores: npt.NDArray[np.float64], cuts: tuple[float, ...]) -> float:
    """The bits of a candidate's bucket among `cuts`, over `scores`."""
    at = np.searchsorted(np.asarray(cuts), scores, side="right") - 1
    p = np.bincount(at) / len(at)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def extras(c: Candidates, t: float, sizes: list[int], lack: Lacking) -> str:
    """What the extras would tell C of the run's candidates `c` (see the module's doc)."""
    anchor = round(t + crowd.ANCHOR, 6)
    out = [
        f"{len(c)} candidates, {int(np.count_nonzero(c.sims < anchor))} under {anchor}",
        f"bits of a candidate's bucket: {entropy(c.sims, cutoffs(t)):.2f} with the "
        f"run's cut-offs, {entropy(c.sims, cutoffs(t, 2)):.2f} with threshold + 0.01 too, "
        f"{entropy(c.sims, cutoffs(t, FINE)):.2f} with 0.01 ones",
    ]
    if lack is None:
        return "; ".join(out)
    ends = [(c.dset0, c.rec0), (c.dset1, c.rec1)]
    lacks = [np.array([lack[m][x] for m, x in zip(d.tolist(), r.tolist(), strict=True)],
                      dtype=bool) for d, r in ends]  # fmt: skip
    kind = lacks[0] | lacks[1]  # scored on the fallback CLK
    anchored: set[tuple[int, int]] = set()
    for d, r in ends:
        best: dict[tuple[int, int], float] = {}
        for m, x, s in zip(d[kind].tolist(), r[kind].tolist(), c.sims[kind].tolist(),
                           strict=True):  # fmt: skip
            best[m, x] = max(best.get((m, x), 0.0), s)
        anchored |= {k for k, s in best.items() if s >= anchor}
    # C knows each candidate's CLK (its part's): a record with a candidate on the first CLK
    # has the fields, and the other end of its candidates on the fallback CLK lacks them.
    full = {(m, x) for d, r in ends for m, x in zip(d[~kind].tolist(), r[~kind].tolist(),
                                                     strict=True)}  # fmt: skip
    known = set(full)
    for (d, r), (e, q) in (ends, ends[::-1]):
        for m, x, n, y in zip(d[kind].tolist(), r[kind].tolist(), e[kind].tolist(),
                              q[kind].tolist(), strict=True):  # fmt: skip
            if (n, y) in full:
                known.add((m, x))
    counts = ", ".join(f"{int(x.sum())} of {n}" for x, n in zip(lack, sizes, strict=True))
    lacking = sum(bool(lack[m][x]) for m, x in anchored)
    out.append(f"records lacking the fallback's fields, by member: {counts}")
    out.append(f"anchored records of the fallback kind (each one's lack told): "
               f"{len(anchored)}, {lacking} of them lacking; C knows already "
               f"{len(anchored & known)} of the {len(anchored)}")  # fmt: skip
    return "; ".join(out)


def two_server(spec: str, members: list[EncodedMember]) -> set[Hit]:
    """The cell's hits from a two-server run in process (`tworun.run`: S1 with its shipped
    caps and who lacks the fallback's fields, C without popcounts, as `blindmatch serve`
    and its roles run it; link bits, the default buckets, the schema's rule)."""
    from blindmatch.client.encoding import sharing
    from blindmatch.matcher.core import exhaustive, tworun, twoserver

    ups = [sharing.shared_upload(m.clks, ab_secret(spec), fallback_bits=m.fallback_bits)
           for m in members]  # fmt: skip
    key = secrets.token_bytes(32)
    lacking = [u.s1.lacking for u in ups]
    s1 = twoserver.BlockingServer(
        [u.s1.bands for u in ups], [u.s1.shares for u in ups], key,
        [u.s1.popcounts for u in ups], [x for x in lacking if x is not None] or None,
        exhaustive=exhaustive.or_default(None), small_member=exhaustive.small_or_default(None),
    )  # fmt: skip
    s2 = twoserver.ShareServer([u.s2.shares for u in ups], key, [u.s2.popcounts for u in ups],
                               [u.s2.seal_key for u in ups])  # fmt: skip
    del ups
    rule = {m.rule for m in members}.pop()
    links = tworun.run(s1, s2, twoserver.Combiner(None, THRESHOLD, clks=2, rule=rule)).links
    return {(members[d].name, members[d].ids[r], members[p].name)
            for d, r, p in zip(links.dset.tolist(), links.row.tolist(), links.partner.tolist(),
                               strict=True)}  # fmt: skip


def cell(spec: str, cache: Path, run_two: bool = False) -> list[str]:
    """One grid cell (as `popprec.py --ab`): each variant's F1 (P/R), then the extras;
    `run_two`: first the hits of a two-server run in process (`two_server`)."""
    from benchmarks.quality_errors import linked
    from blindmatch.matcher.usecases import runs

    members, actual = ab_cell(spec, cache)
    lines: list[str] = []
    if run_two:
        found = two_server(spec, members)
        tp = len(found & actual)
        lines.append(f"{spec} a two-server run (S1, S2, C in process): "
                     f"{fmt(*prf(tp, len(found), len(actual)))}")  # fmt: skip
        print(lines[-1], flush=True)
    original = runs.crowd.lifted
    seen: list[str] = []
    for name, variant in variants(original).items():

        def lifted(c: Candidates, t: float, sizes: list[int], lack: Lacking = None,
                   _v: Variant = variant, **kw: object) -> Candidates:  # fmt: skip
            seen.append(extras(c, t, sizes, lack)) if not seen else None
            return _v(c, t, sizes, lack)

        runs.crowd.lifted = lifted  # type: ignore[assignment]
        try:
            found = set(linked(members, THRESHOLD))
        finally:
            runs.crowd.lifted = original  # type: ignore[assignment]
        tp = len(found & actual)
        lines.append(f"{spec} {name}: {fmt(*prf(tp, len(found), len(actual)))}")
        print(lines[-1], flush=True)
    lines.append(f"{spec} what the extras tell C: {seen[0]}")
    print(lines[-1], flush=True)
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cells", nargs="+", metavar="GEN:SEED:PEOPLE[:CORRUPTION]")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/blindmatch-popprec"))
    parser.add_argument(
        "--two-server", action="store_true", help="also a two-server run in process, first"
    )
    args = parser.parse_args()
    for spec in args.cells:
        cell(spec, args.cache, args.two_server)
    return 0


if __name__ == "__main__":
    sys.exit(main())
