"""Completing C's groups in a two-server run, as core/solve.py `complete` does a CLK run's
(docs/privacy-design.md "What a dishonest combiner can still learn", docs/evaluation.md
"Completing groups").

A link C learned in the bridge bucket (core/twoserver.py `bridge_cutoff`: 0.85 at a threshold
of 0.8, threshold + solve.BRIDGE) whose records ended in different groups (or in none), best
bucket first, joins the two groups when they hold no member twice and every pair between them
reaches the run's reach cut-off (`reach_cutoff`: threshold - solve.REACH, 0.7): C knows a
linked pair does; the others (a pair S1 proposed that C decided under the threshold, or one
blocking did not propose) go through the circuit at the reach cut-off alone, one bit a pair,
in *reach* batches S1 checks (core/proposal.py `check_reach`).

Joins are asked in waves: successive bridges whose groups no earlier bridge of the wave
touches, their unknown pairs in one batch a pair of members and CLK, then applied in order,
so the merges are the ones `complete` makes in its order (a later bridge sees the groups the
earlier ones made; another bridge between the same two groups as a join of the wave asks
nothing: the join made, they are one group, or failed, it would fail again). C never asks a
pair twice nor one whose join already failed on a known pair; and a join that would put a
record in a second reach pair with one member (after a join of its group failed) is not asked
(S1 refuses it: each record at most one reach pair a member), where a CLK run would try it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import fallback as fallback_
from blindmatch.matcher.core import linkbit
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.solve import Group, _across
from blindmatch.matcher.core.twoserver import FALLBACK, RECORD, Combiner, PairBatch

if TYPE_CHECKING:
    from blindmatch.matcher.core.tworun import Servers

Record = tuple[int, int]
Pair = tuple[int, int, int, int]  # (member, row, member, row), the lower member first
# Answers a list of pairs (member lo < member hi) at the reach cut-off.
Ask = Callable[[list[Pair]], npt.NDArray[np.bool_]]


def _pair(x: Record, y: Record) -> Pair:
    return (*x, *y) if x[0] < y[0] else (*y, *x)


def complete_groups(
    groups: Sequence[Group], candidates: Candidates, combiner: Combiner, ask: Ask
) -> tuple[list[Group], dict[str, int]]:
    """`groups` with the joins `complete` would make at the run's bridge and reach cut-offs,
    asking `ask` the pairs C does not know; and what it cost (bridges across groups, joins
    asked, joins made, pairs asked, joins skipped for the per-record bound)."""
    cost = {"bridges": 0, "joins asked": 0, "joins made": 0, "pairs asked": 0, "skipped": 0}
    if combiner.bridge is None:
        return list(groups), cost
    found = np.flatnonzero(candidates.sims >= combiner.bridge)
    members = np.union1d(candidates.dset0[found], candidates.dset1[found])
    if len(members) < 3:
        return list(groups), cost
    found = found[_across(groups, candidates, found)]
    found = found[np.argsort(-candidates.sims[found], kind="stable")]
    cost["bridges"] = len(found)
    known: dict[Pair, bool] = {
        _pair((int(a), int(r)), (int(b), int(s))): True
        for a, r, b, s in zip(candidates.dset0.tolist(), candidates.rec0.tolist(),
                              candidates.dset1.tolist(), candidates.rec1.tolist(), strict=True)
    }  # fmt: skip
    merged: list[list[Record]] = [list(g) for g in groups]
    where = {record: i for i, g in enumerate(merged) for record in g}
    partner: dict[tuple[int, int, int], int] = {}  # (member, row, other member) -> other row
    wave: list[tuple[Record, Record, list[Pair]]] = []
    busy: set[Record] = set()
    pending: set[frozenset[Record]] = set()  # the wave's joins, each group by its least record

    def group(x: Record) -> list[Record]:
        at = where.get(x)
        return merged[at] if at is not None else [x]

    def flush() -> None:
        need = sorted({p for _, _, cross in wave for p in cross if p not in known})
        if need:
            known.update(zip(need, ask(need).tolist(), strict=True))
            cost["pairs asked"] += len(need)
        for x, y, cross in wave:
            if all(known[p] for p in cross):
                cost["joins made"] += 1
                one, other = group(x), group(y)
                if where.get(x) is None:
                    where[x] = len(merged)
                    merged.append(one)
                if where.get(y) is not None:
                    merged[where[y]] = []
                one.extend(other)
                for record in other:
                    where[record] = where[x]
        wave.clear()
        busy.clear()
        pending.clear()

    for k in found.tolist():
        x = (int(candidates.dset0[k]), int(candidates.rec0[k]))
        y = (int(candidates.dset1[k]), int(candidates.rec1[k]))
        if frozenset((min(group(x)), min(group(y)))) in pending:
            continue  # another bridge between the two groups of a join the wave asks
        if x in busy or y in busy:
            flush()
        one, other = group(x), group(y)
        if one is other or {d for d, _ in one} & {d for d, _ in other}:
            continue
        cross = [_pair(a, b) for a in one for b in other]
        if any(not known.get(p, True) for p in cross):
            continue  # a pair known under the reach: the join fails, nothing asked
        new = [p for p in cross if p not in known]
        if any(partner.get(end, row) != row for p in new for end, row in _ends(p)):
            cost["skipped"] += 1
            continue
        for p in new:
            for end, row in _ends(p):
                partner[end] = row
        cost["joins asked"] += 1 if new else 0
        wave.append((x, y, cross))
        pending.add(frozenset((min(one), min(other))))
        busy.update(one)
        busy.update(other)
    flush()
    return [tuple(sorted(g)) for g in merged if len(g) > 1], cost


def _ends(p: Pair) -> tuple[tuple[tuple[int, int, int], int], tuple[tuple[int, int, int], int]]:
    """A pair's two (record, other member) -> other row entries."""
    a, r, b, s = p
    return ((a, r, b), s), ((b, s, a), r)


def reach_bits(
    servers: Servers,
    combiner: Combiner,
    pairs: list[Pair],
    lacking: list[npt.NDArray[np.bool_]] | None,
    transcript: linkbit.Transcript,
    seconds: dict[str, float],
) -> npt.NDArray[np.bool_]:
    """Whether each pair (member lo < member hi) reaches the reach cut-off, through S1 and S2
    in reach batches (`servers.evaluate_reach`, core/tworun.py `Servers`): by pair of members
    and on the CLK the run scores the pair by, or on both where C cannot tell (S1 answers 0 on
    the other)."""
    arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 4)
    out = np.zeros(len(arr), dtype=bool)
    clock = {"S1": 0.0, "S2": 0.0, "C": 0.0}
    for lo, hi in sorted({(int(a), int(b)) for a, b in arr[:, [0, 2]].tolist()}):
        sel = np.flatnonzero((arr[:, 0] == lo) & (arr[:, 2] == hi))
        rows_lo, rows_hi = arr[sel, 1].astype(np.uint32), arr[sel, 3].astype(np.uint32)
        on = clks_named(combiner, lacking, lo, hi, rows_lo, rows_hi)
        for c in (RECORD, FALLBACK):
            pick = np.flatnonzero(on[c])
            batch = PairBatch(lo, hi, c, rows_lo[pick], rows_hi[pick])
            for k, part in enumerate(batch.split(linkbit.BATCH)):
                at = pick[k * linkbit.BATCH : k * linkbit.BATCH + len(part)]
                t0 = time.process_time()
                circuit = combiner.reach_circuit(
                    servers.bits(c), c, fallback_width(servers, combiner)
                )
                dealt = combiner.triples(circuit, len(part))
                clock["C"] += time.process_time() - t0
                o1, o2 = servers.evaluate_reach(part, circuit, dealt, transcript, clock)
                t1 = time.process_time()
                out[sel[at]] |= linkbit.reveal(circuit, o1, o2, len(part))[0]
                transcript.pairs += len(part)
                clock["C"] += time.process_time() - t1
    add_clock(seconds, clock)
    return out


__all__ = ["complete_groups", "reach_bits"]


def clks_named(
    combiner: Combiner,
    lacking: list[npt.NDArray[np.bool_]] | None,
    lo: int,
    hi: int,
    rows_lo: npt.NDArray[np.uint32],
    rows_hi: npt.NDArray[np.uint32],
) -> dict[int, npt.NDArray[np.bool_]]:
    """Which of the pairs (rows_lo of member lo, rows_hi of member hi) C names on each CLK:
    on the CLK the run scores each by where C knows the records lacking fields (`lacking`),
    on both where only S1 knows (S1 and S2 answer 0 on the other: core/proposal.py), else on
    the record-level CLK alone."""
    everything = np.ones(len(rows_lo), dtype=bool)
    if lacking is not None:
        fb = fallback_.on_fallback(lacking[lo][rows_lo], lacking[hi][rows_hi])
        return {RECORD: ~fb, FALLBACK: fb}
    if combiner.has_fallback:
        return {RECORD: everything, FALLBACK: everything}
    return {RECORD: everything, FALLBACK: ~everything}


def fallback_width(servers: Servers, combiner: Combiner) -> int:
    """The fallback CLK's width where the run applies a gap rule (its circuit reads both)."""
    return servers.bits(FALLBACK) if combiner.rule.active else 0


def add_clock(seconds: dict[str, float], clock: dict[str, float]) -> None:
    """CPU seconds by role (`clock`) into a run's `seconds`, by the names it reports."""
    for role, name in (("C", "combining (C)"), ("S1", "messages (S1)"), ("S2", "messages (S2)")):
        seconds[name] = seconds.get(name, 0.0) + clock[role]
