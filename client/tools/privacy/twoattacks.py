"""Each attack `privacy-check --mode two-server` (twocheck.py) runs on a role's view.

Trilateration (trilateration.py) on a view of the pairs between members A and B, by an
attacker holding plaintext on every person of both (`attack_view`; S2's counts read under each
of `S2_READINGS`, the caller keeps the worst), the same by an attacker that first drops the rows
least likely real where the members are padded with decoys (`unpartnered_attack`), and the
collision attack (collisions.py) on S2's view of A's own pairs (`own_pairs`). twocheck.py
builds the views and the report; this module only attacks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from blindmatch.client.encoding import sharing
from blindmatch.client.tools.privacy.attacks import AttackResult
from blindmatch.client.tools.privacy.collisions import View, attack, blind_seeds, expected_counts
from blindmatch.client.tools.privacy.graph import known_pairs
from blindmatch.client.tools.privacy.trilateration import (
    CombinerView,
    OwnGraph,
    fit_model,
    trilaterate,
)

# S2's counts are attacked as the agreement (count x reading / (CLKs x bands))^(1 / bits) at
# each reading, the worst kept: the attack's quantisation of the counts into Dice levels and
# the saturation at 1 make its strength depend on the reading, and a band plan whose counts
# read one way passed while another leaked (docs/privacy-design.md, "S2's counts of shared
# bands"; 0.5 and 4 also won at some plans).
S2_READINGS = (0.5, 1.0, 2.0, 4.0)
ROLES = {
    "C": "the linking pairs' rows and buckets, the extras' buckets, the reach pairs' bits",
    "C*": "C's, and S1's quota of reach pairs a dishonest C asks, each a 1 (a perfect guess)",
    "S1": "the candidate pairs",
    "S2": "the candidate pairs and their counts of shared bands",
}
# S1's and S2's rows of a pair of members S1 did not block (matcher/core/exhaustive.py), which
# the views' entry UNBLOCKED_VIEW names (twoviews.py NOT_BLOCKED): both views empty.
NOT_BLOCKED = "not blocked: no candidate pairs, no counts (the cross product)"


def read_counts(
    counts: npt.NDArray[np.float64], reading: float, clks: int, plan: sharing.BandPlan
) -> npt.NDArray[np.float64]:
    """S2's counts of shared bands read as the agreement they imply over `reading` x the
    bands each CLK has: (count x reading / (CLKs x bands))^(1 / bits), at most 1."""
    return np.minimum(counts * reading / (clks * plan.bands), 1.0) ** (1 / plan.bits)


def unpartnered_attack(
    pairs: npt.NDArray[np.intp], counts: npt.NDArray[np.float64], truth_a: npt.NDArray[np.intp],
    truth_b: npt.NDArray[np.intp], u: npt.NDArray[np.uint8] | OwnGraph, a_people: list[int],
    u_people: list[int], plan: sharing.BandPlan, clks: int, count: int, share: float = 1.0,
) -> AttackResult:  # fmt: skip
    """Trilateration on S2's view of members padded with decoys (rows whose truth is -1) by
    an attacker that first drops the rows least likely real: of each member it keeps `share`
    x as many rows as it has real people (it holds their plaintext, so it knows how many),
    those with the highest count to any row of the other member (a member's own decoys have
    no partner), and the rows of its `count` known pairs (the other attacks' own); each
    reading of the counts (`S2_READINGS`), the worst kept. `u`: the attacker's encodings, or
    their `own_graph`. The share is of all of A's real records less the
    known pairs (docs/privacy-design.md, "(d) Decoy records")."""
    truth = (truth_a, truth_b)
    known_a = known_pairs(a_people, u_people, count, seed=count)
    keep = []
    for side in (0, 1):
        best = np.zeros(len(truth[side]))
        np.maximum.at(best, pairs[:, side], counts)
        mask = np.zeros(len(truth[side]), bool)
        mask[np.argsort(-best, kind="stable")[: round(share * int((truth[side] >= 0).sum()))]] = 1
        if side == 0:
            mask[list(known_a)] = True
        keep.append(mask)
    on = keep[0][pairs[:, 0]] & keep[1][pairs[:, 1]]
    renum = [np.cumsum(k) - 1 for k in keep]
    sub = np.stack([renum[0][pairs[on, 0]], renum[1][pairs[on, 1]]], axis=1).astype(np.intp)
    ta, tb = truth_a[keep[0]], truth_b[keep[1]]
    rows_a = np.flatnonzero(keep[0])
    sub_known = {int(renum[0][i]): q for i, q in known_a.items()}
    n_a, n_b = int(keep[0].sum()), int(keep[1].sum())
    most = (-1, 0, 0.0)
    for reading in S2_READINGS:
        shown = read_counts(counts[on], reading, clks, plan)
        view = CombinerView(n_a, n_b, sub, shown, np.zeros(n_a, np.int64),
                            np.zeros(n_b, np.int64), pops=False)  # fmt: skip
        model = fit_model(u, plan.bits, plan.bands, *real_view(view, ta, tb))
        claims, _b, _blind = trilaterate(
            view, model, np.sort(ta[ta >= 0]), np.sort(tb[tb >= 0]), sub_known, {}, blind=50,
            margin=3.0, cap=20_000, robust=True,
        )  # fmt: skip
        mine = [(i, q) for i, q in claims.items() if i not in sub_known]
        right = sum(1 for i, q in mine if truth_a[rows_a[i]] == q)
        if right > most[0]:
            most = (right, len(mine), reading)
    right, made, reading = most
    real = int((truth_a >= 0).sum()) - len(known_a)
    label = "blind" if not count else f"{count} known"
    return AttackResult(
        attack=f"decoy-aware ({label})", encoding="S2", field="(record)",
        public_list=(f"{ROLES['S2']} (read against {clks * plan.bands / reading:,.0f} bands), "
                     f"the {n_a:,} rows of A and {n_b:,} of B with the highest count kept: "
                     f"{int(on.sum()):,} pairs; {claims_text(right, made)}"),
        records=real, records_reidentified=right, values=real, values_reidentified=right,
        claims=made,
    )  # fmt: skip


def not_blocked(result: AttackResult) -> AttackResult:
    """S1's or S2's row of a pair not blocked: `NOT_BLOCKED` for the view, then the claims."""
    made = claims_text(result.records_reidentified, result.claims or 0)
    return dataclasses.replace(result, public_list=f"{NOT_BLOCKED}; {made}")


def claims_text(right: int, made: int) -> str:
    if not made:
        return "no claims"
    return f"{made} claim{'' if made == 1 else 's'}, precision {right / made:.1%}"


def own_pairs(
    within: Sequence[tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]],
    own: Sequence[npt.NDArray[np.uint8]], truth_a: npt.NDArray[np.intp], a_people: list[int],
    u_people: list[int], plan: sharing.BandPlan, known: Sequence[int],
) -> list[AttackResult]:  # fmt: skip
    """The collision attack (collisions.py) on S2's view of A's own pairs (a CLK each: the
    pairs linked by a reused token of B, and how many tokens link them), against the
    attacker's encodings of A's people; blind seeds from degrees, or `known` pairs."""
    n = len(truth_a)
    mine = np.sort(truth_a[truth_a >= 0])  # the attacker's records of A's people
    people = [u_people[k] for k in mine]
    parts: list[View] = []
    for (pairs, counts), clks in zip(within, own, strict=False):
        c = sp.coo_matrix((counts, (pairs[:, 0], pairs[:, 1])), shape=(n, n)).tocsr()
        parts.append(((c + c.T).tocsr().astype(np.float32), expected_counts(
            clks[mine], plan.bits, plan.bands)))  # fmt: skip
    pos = {int(q): j for j, q in enumerate(mine)}
    truth = np.array([pos.get(int(q), -1) for q in truth_a], dtype=np.intp)
    linked = sum(len(p) for p, _c in within)
    out = []
    for count in known:
        known_a = known_pairs(a_people, people, count, seed=count)
        start = dict(known_a)
        if not count:
            summed = parts[0] if len(parts) == 1 else (
                parts[0][0] + parts[1][0], parts[0][1] + parts[1][1])  # fmt: skip
            start = blind_seeds(summed[0], summed[1], 50)
        claims = attack(parts, start, 1.0, 3000, fixed=set(known_a))
        claims = {i: p for i, p in claims.items() if i not in known_a}
        right = sum(1 for i, p in claims.items() if truth[i] == p)
        label = "blind" if not count else f"{count} known"
        out.append(AttackResult(
            attack=f"collisions ({label})", encoding="S2", field="(record)",
            public_list=(f"A's own pairs linked by a reused token of B: {linked:,} pairs; "
                         f"{claims_text(right, len(claims))}"),
            records=len(mine) - len(known_a), records_reidentified=right,
            values=len(mine) - len(known_a), values_reidentified=right, claims=len(claims),
        ))  # fmt: skip
    return out


def attack_view(
    role: str, view: CombinerView, model: Any, count: int,
    a_people: list[int], u_people: list[int],
    truth_a: npt.NDArray[np.intp], truth_b: npt.NDArray[np.intp], read: str,
) -> tuple[AttackResult, float]:  # fmt: skip
    """Trilateration on one view with `count` known pairs of A (B's records of those people
    are left out of B's share, as the known pairs are out of A's): the result, and B's
    share re-identified."""
    known_a = known_pairs(a_people, u_people, count, seed=count)
    claims_a, claims_b, _blind = trilaterate(
        view, model, np.sort(truth_a[truth_a >= 0]), np.sort(truth_b[truth_b >= 0]), known_a,
        {}, blind=50, margin=3.0, cap=20_000, robust=True,
    )  # fmt: skip
    people_known = {int(q) for q in known_a.values()}
    known_b = {i for i, q in enumerate(truth_b) if int(q) in people_known}
    right_a = sum(1 for i, q in claims_a.items() if i not in known_a and truth_a[i] == q)
    made = sum(1 for i in claims_a if i not in known_a)
    right_b = sum(1 for i, q in claims_b.items() if i not in known_b and truth_b[i] == q)
    label = "blind" if not count else f"{count} known"
    attack = f"trilateration ({label})"
    result = AttackResult(
        attack=attack,
        encoding=role,
        field="(record)",
        public_list=f"{ROLES[role]}{read}: {len(view.pairs):,} pairs; {claims_text(right_a, made)}",
        records=int((truth_a >= 0).sum()) - len(known_a),
        records_reidentified=right_a,
        values=int((truth_a >= 0).sum()) - len(known_a),
        values_reidentified=right_a,
        claims=made,
    )
    return result, right_b / max(int((truth_b >= 0).sum()) - len(known_b), 1)


def real_view(
    view: CombinerView, truth_a: npt.NDArray[np.intp], truth_b: npt.NDArray[np.intp]
) -> tuple[CombinerView, npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The view's pairs between rows the attacker's plaintext holds (no decoy), renumbered,
    with their truth: what the model is calibrated on (the attacker's best case: it calibrates
    on its own people, whose rows it cannot tell from decoys in the view it attacks)."""
    ka, kb = truth_a >= 0, truth_b >= 0
    if ka.all() and kb.all():
        return view, truth_a, truth_b
    new_a, new_b = np.cumsum(ka) - 1, np.cumsum(kb) - 1
    keep = ka[view.pairs[:, 0]] & kb[view.pairs[:, 1]]
    pairs = np.stack([new_a[view.pairs[keep, 0]], new_b[view.pairs[keep, 1]]], axis=1)
    sub = CombinerView(int(ka.sum()), int(kb.sum()), pairs.astype(np.intp), view.dice[keep],
                       view.pop_a[ka], view.pop_b[kb], view.pops)  # fmt: skip
    return sub, truth_a[ka], truth_b[kb]


__all__ = [
    "NOT_BLOCKED",
    "ROLES",
    "S2_READINGS",
    "attack_view",
    "claims_text",
    "not_blocked",
    "own_pairs",
    "read_counts",
    "real_view",
    "unpartnered_attack",
]
