"""A dishonest combiner's reach pairs, attacked (docs/privacy-design.md, "A dishonest
combiner's reach pairs, attacked"): `benchmarks/twoserver.py --view c-dishonest`.

The project is `privacy-check --mode two-server`'s (client/tools/privacy/twocheck.py
`check_members`): members A and B, and M, a noisy copy of half of A's people, so that the run
has three members (S1 admits no reach pair in a run of two); the shipped schema, the run's own
roles (matcher/core/twoviews.py `views_and_oracle`). C's honest view of A and B (the links
and their buckets, the extras' buckets, completion's reach bits) is attacked with
trilateration as the check attacks it (`runs` 0), then C goes on as a dishonest combiner:
`runs` runs over the same uploads, each asking, of A and B, the reach pairs
client/tools/privacy/reachprobes.py `choose` picks (a matching: one pair a record, S1's bound
a run), through S1's own checks, the reach budget and the circuit (matcher/core/twoprobe.py
`ReachOracle`: a batch S1 would refuse is refused, and the attack never sends one), and
attacks with every bit (`probe_attack`). Each attack (each known count and number of runs)
starts from fresh uploads' budget: a new oracle over the same run.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import LinkageSchema
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.graph import known_pairs
from blindmatch.client.tools.privacy.graphcheck import upload_views
from blindmatch.client.tools.privacy.reachprobes import (
    calibrate,
    guessed_matching,
    pair_dice,
    probe_attack,
)
from blindmatch.client.tools.privacy.trilateration import (
    LEVEL,
    SAME,
    CombinerView,
    OwnGraph,
    fit_model,
    own_graph,
    trilaterate,
)
from blindmatch.client.tools.privacy.twocheck import Member, _upload
from blindmatch.matcher.core.rowledger import reach_quota
from blindmatch.matcher.core.twoprobe import ReachOracle
from blindmatch.matcher.core.twoviews import views_and_oracle


def _share(claims: dict[int, int], known: set[int], truth: np.ndarray) -> tuple[int, int, int]:
    """(right claims, claims, records counted): the rows not in `known`."""
    claimed = {i: q for i, q in claims.items() if i not in known}
    right = sum(1 for i, q in claimed.items() if truth[i] == q)
    return right, len(claimed), len(truth) - len(known)


def _prior(
    graph: OwnGraph, truth_a: np.ndarray, truth_b: np.ndarray, clks: list[np.ndarray], reach: float
) -> np.ndarray:
    """`calibrate` on the victims' own CLKs (the attacker's best case): every pair of A and B
    whose attacker Dice is 0.5 or more (300,000 of them at most), and 200,000 others at
    random."""
    near = np.argwhere(graph.dice_of(truth_a, truth_b) >= 0.5)
    rng = np.random.default_rng(0)
    if len(near) > 300_000:  # a sample (synthetic people of 5,000 have millions)
        near = near[rng.choice(len(near), 300_000, replace=False)]
    more = np.stack([rng.integers(0, len(truth_a), 200_000),
                     rng.integers(0, len(truth_b), 200_000)], axis=1)  # fmt: skip
    rows = np.concatenate([near, more])
    a, b = clks[0][rows[:, 0]], clks[1][rows[:, 1]]
    inter = np.bitwise_count(a & b).sum(axis=1)
    dice = 2 * inter / np.maximum(np.bitwise_count(a).sum(axis=1)
                                  + np.bitwise_count(b).sum(axis=1), 1)  # fmt: skip
    assert isinstance(graph.level, np.ndarray)  # `own_graph`'s, every pair's
    return calibrate(graph.level, dice, np.stack([truth_a[rows[:, 0]], truth_b[rows[:, 1]]], 1),
                     reach)  # fmt: skip


def _every_pair(view: CombinerView, dice: np.ndarray, cuts: Sequence[float]) -> CombinerView:
    """The most any number of runs' reach pairs could show C (each pair once an upload at the
    reach cut-off, and at the run's cut-offs): every pair of A and B whose Dice (the record
    CLK's, `pair_dice`) reaches the first of `cuts` (the reach cut-off), valued at the highest
    cut-off it reaches, beside C's own view (the higher value where both hold a pair)."""
    edges = np.asarray(cuts, np.float64)
    at = np.argwhere(dice >= edges[0] - 1e-9)
    valued = edges[np.searchsorted(edges, dice[at[:, 0], at[:, 1]] + 1e-9, side="right") - 1]
    keys = np.concatenate([at[:, 0] * view.n_b + at[:, 1],
                           view.pairs[:, 0] * view.n_b + view.pairs[:, 1]])  # fmt: skip
    vals = np.concatenate([valued, view.dice])
    order = np.lexsort((-vals, keys))
    keys, vals = keys[order], vals[order]
    first = np.ones(len(keys), bool)
    first[1:] = keys[1:] != keys[:-1]
    keys, vals = keys[first], vals[first]
    pairs = np.stack([keys // view.n_b, keys % view.n_b], axis=1).astype(np.intp)
    return CombinerView(view.n_a, view.n_b, pairs, vals, view.pop_a, view.pop_b, pops=False)


def dishonest_combiner(
    members: Sequence[Member], schema: LinkageSchema, secret: bytes, known: Sequence[int],
    runs: Sequence[int], attacker_key: bytes | None = None, threshold: float = 0.8,
    cap: bool = True,
) -> list[dict[str, Any]]:  # fmt: skip
    """For each known count and number of runs (0: C's honest view alone; -1: every pair's
    bits, `_every_pair`, what unlimited runs would show; -2: every pair's bucket at the run's
    cut-offs alone, what unlimited runs' extras would; -3: one run's matching of pairs that
    all reach the cut-off, `guessed_matching`, what a C guessing perfectly would ask under S1's
    cap; -4: as many of those as S1's reach quota admits), the share of
    A's and B's records re-identified and the claims' precision; printed as they come. `cap`
    False: S1 without its per-upload cap (matcher/core/rowledger.py), each run's bound
    alone."""
    (a_rows, a_people), (b_rows, b_people), (u_rows, u_people) = members
    half = np.random.default_rng(4).permutation(len(a_rows))[: len(a_rows) // 2]
    m_rows = population.noisy_copy([a_rows[i] for i in sorted(half.tolist())],
                                   [rule.kind for rule in schema.rules], seed=5)  # fmt: skip
    t0 = time.process_time()
    uploads = [_upload(schema, rows, secret, NONE) for rows in (a_rows, b_rows, m_rows)]
    views, first = views_and_oracle(uploads, threshold, schema.rule)
    print(f"the run (three members, the roles in process): {time.process_time() - t0:.0f} CPU s",
          flush=True)  # fmt: skip
    key = attacker_key if attacker_key is not None else secrets.token_bytes(32)
    u = upload_views(schema, u_rows, key, NONE)[0]
    where = {q: k for k, q in enumerate(u_people)}
    truth_a = np.array([where[q] for q in a_people], dtype=np.intp)
    truth_b = np.array([where[q] for q in b_people], dtype=np.intp)
    pairs, values = views["C"]
    view = CombinerView(len(a_rows), len(b_rows), pairs, values, np.zeros(len(a_rows), np.int64),
                        np.zeros(len(b_rows), np.int64), pops=False)  # fmt: skip
    plan = sharing.plan_of(schema)
    graph = own_graph(u)
    model = fit_model(graph, plan.bits, plan.bands, view, truth_a, truth_b)
    in_a, in_b = np.sort(truth_a), np.sort(truth_b)
    reach = first.combiner.reach
    assert reach is not None
    clks = [upload_views(schema, rows, secret, NONE)[0] for rows in (a_rows, b_rows)]
    prior = _prior(graph, truth_a, truth_b, clks, reach)
    print("P(bit | attacker's Dice): " + ", ".join(
        f"{lv * LEVEL:.2f} {prior[lv]:.3f}" for lv in range(25, SAME, 5)
    ) + f", same person {prior[SAME]:.3f}", flush=True)  # fmt: skip
    print(f"C's honest view of A and B: {len(pairs):,} pairs ({int((values == reach).sum())} "
          f"reach pairs); reach cut-off {reach:.2f}", flush=True)  # fmt: skip
    out = []
    for count in known:
        known_a = known_pairs(a_people, u_people, count, seed=count)
        people_known = {int(q) for q in known_a.values()}
        known_b = {i for i, q in enumerate(truth_b) if int(q) in people_known}
        for r in runs:
            t1 = time.process_time()
            oracle = ReachOracle(first.servers, first.combiner, cap)  # fresh uploads
            if r < 0:  # every pair at the reach cut-off and the run's: the bound's limit
                cuts = first.combiner.cutoffs if r == -2 else (reach, *first.combiner.cutoffs)
                dice = pair_dice(clks[0], clks[1])
                quota = reach_quota(len(a_rows), len(b_rows)) if r == -4 else None
                every = (guessed_matching(view, dice, reach, quota) if r in (-3, -4)
                         else _every_pair(view, dice, cuts))  # fmt: skip
                model_every = fit_model(graph, plan.bits, plan.bands, every, truth_a, truth_b)
                claims_a, claims_b, _ = trilaterate(every, model_every, in_a, in_b, known_a, {},
                                                    50, 3.0, 20_000, robust=True)  # fmt: skip
                asked = len(every.pairs) - len(pairs) if r < -2 else len(truth_a) * len(truth_b)
                ones = len(every.pairs)
            elif r:
                oracle.next_run()
                got = probe_attack(
                    view, model, in_a, in_b, known_a, truth_a, truth_b, prior,
                    oracle.ask,
                    oracle.next_run, oracle.proposed, r,
                )  # fmt: skip
                claims_a, claims_b, asked, ones = got.claims_a, got.claims_b, got.asked, got.ones
            else:
                claims_a, claims_b, _ = trilaterate(view, model, in_a, in_b, known_a, {}, 50,
                                                    3.0, 20_000, robust=True)  # fmt: skip
                asked = ones = 0
            right_a, made_a, of_a = _share(claims_a, set(known_a), truth_a)
            right_b, made_b, of_b = _share(claims_b, known_b, truth_b)
            row = {
                "known": count, "runs": r, "asked": asked, "ones": ones, "cap": cap,
                "evaluated": oracle.evaluated,
                "refused": oracle.refused, "A": right_a / of_a,
                "A precision": right_a / made_a if made_a else 1.0, "A claims": made_a,
                "B": right_b / of_b, "B precision": right_b / made_b if made_b else 1.0,
                "cpu": time.process_time() - t1,
            }  # fmt: skip
            out.append(row)
            runs_ = {
                -1: "every pair's bits as",
                -2: "every pair's extras, no",
                -3: "one run's best (a matching of true 1s) as",
                -4: "S1's quota of the best (true 1s) as",
            }.get(r, f"{r} runs of")
            print(f"C dishonest{'' if cap else ' (S1 uncapped)'}, {count} known pairs, "
                  f"{runs_} reach pairs ({asked:,} asked, {oracle.evaluated:,} evaluated, "
                  f"{ones:,} at or above {reach:.2f}, {oracle.refused} refused): A "
                  f"{row['A']:.2%} ({right_a} of {of_a:,}; {made_a} claims, precision "
                  f"{row['A precision']:.1%}); B {row['B']:.2%} ({right_b} of {of_b:,}; "
                  f"{made_b} claims); {row['cpu']:.0f} CPU s", flush=True)  # fmt: skip
    return out


__all__ = ["dishonest_combiner"]
