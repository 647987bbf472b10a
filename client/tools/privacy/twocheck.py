"""`privacy-check --mode two-server`: attack what each role of a two-server run learns.

In a project in two-server mode (docs/operations.md, docs/privacy-design.md) no role holds a
CLK it can compare: the combiner C learns the linking pairs' rows and buckets, S1 the
candidate pairs (its sealed band keys show it no pair of one member's records), S2 the
candidate pairs and each one's count of shared bands. The check simulates a project of three
members: member A, the data checked (a sample of `size` records), member B, another
organisation's export holding half of A's people (and, on synthetic data, as many others),
and member M, a third organisation's noisy copy of another half of A's people, which gives
the run groups of three: C then also learns, of A and B, the buckets of the pairs inside its
groups it asks (extras) and the bits of the pairs of completing its groups at the reach
cut-off (matcher/core/twocomplete.py); M's records are in no attacked view. All are encoded
as `blindmatch encode --two-server` encodes them (the schema's CLKs and fallback CLKs, then
client/encoding/sharing.py `shared_upload`), the roles are the run's own
objects (the command line hands in matcher/core/twoviews.py `role_views`, with the circuit's
outputs computed in the clear, matcher/core/twoclear.py: the client does not import the
matcher), and each role's view is attacked with trilateration
(trilateration.py; S2's counts under each of `S2_READINGS`, the worst kept), and S2's view
of A's own rows (tokens of B it opened twice) with the collision attack (collisions.py), blind
and with known pairs of A, by an attacker holding plaintext (its own export, its own errors) on
every person of A and B. The plaintext only scores the claims.

The verdict is the CLK check's rule (report.py `LIMIT`): PASS when every attack on every view
re-identifies under 1% of A's records (those not among the known pairs).

Decoys (benchmarks/twoserver.py `--pad-to`): a row whose person the attacker's plaintext lacks,
attacked like any row, counted in no share; S2's view is then attacked too by an attacker that
drops the rows least likely real (`unpartnered_attack`; privacy-design.md "(d) Decoy records").
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.harden import NONE, Hardening
from blindmatch.client.encoding.schema import LinkageSchema
from blindmatch.client.errors import InputError
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.attacks import AttackResult
from blindmatch.client.tools.privacy.collisions import View, attack, blind_seeds, expected_counts
from blindmatch.client.tools.privacy.graph import known_pairs
from blindmatch.client.tools.privacy.graphcheck import (
    KNOWN_PAIRS,
    normalised_export,
    sample,
    upload_views,
)
from blindmatch.client.tools.privacy.reachprobes import pair_dice, quota_view
from blindmatch.client.tools.privacy.report import CheckReport
from blindmatch.client.tools.privacy.trilateration import (
    CombinerView,
    OwnGraph,
    fit_model,
    own_graph,
    trilaterate,
)

# Fewer records refused: one record is 0.2%+ of a share, a lucky claim decides the verdict.
MIN_SAMPLE = 500
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
UNBLOCKED_VIEW = "members not blocked"
Views = Mapping[str, tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]]
# (uploads, threshold, the schema's blindmatch.rule or None) -> each role's view
RoleViews = Callable[[Sequence[sharing.SharedUpload], float, tuple[float, float, float] | None],
                     Views]  # fmt: skip
Member = tuple[list[list[str]], list[int]]  # normalised rows, each row's person


@dataclass
class TwoServerReport(CheckReport):
    """The two-server check's results: one per role and number of known pairs
    (`encoding` is the role)."""

    mode: str = "two-server"
    partner: dict[str, float] = field(default_factory=dict)  # member B's share, per result
    # S2's trilateration rows: the share of A re-identified at each reading of the counts
    # (the row keeps the worst), per attack
    readings: dict[str, dict[float, float]] = field(default_factory=dict)
    kept: dict[str, float] = field(default_factory=dict)  # the reading each row kept

    @property
    def too_few(self) -> bool:
        return False  # refused before any attack (`check_members`)

    def verdict(self) -> str:
        worst = self.worst
        if worst is None:
            return "NO VERDICT: no view was attacked"
        if self.passed:
            return (
                f"PASS: every attack on every role's view re-identified under {self.limit:.0%} "
                f"of records (worst: {worst.record_share:.2%}, {worst.attack} on "
                f"{worst.encoding}'s view)"
            )
        return (
            f"LEAKS: {worst.attack} on {worst.encoding}'s view re-identified "
            f"{worst.record_share:.1%} of records ({worst.records_reidentified} of "
            f"{worst.records}); the limit is {self.limit:.0%} (docs/privacy-design.md)"
        )

    def render(self) -> str:
        lines = [
            f"privacy-check (two-server mode) of {self.source}: {self.records} records of "
            f"member A, hardening: {self.hardening}",
            f"  {'role':<4} {'attack':<28} {'A':>8} {'B':>8}  view",
        ]
        for r in self.results:
            key = f"{r.encoding} {r.attack}"
            lines.append(
                f"  {r.encoding:<4} {r.attack:<28} {r.record_share:>8.2%} "
                f"{self.partner.get(key, 0.0):>8.2%}  {r.public_list}"
            )
        lines.append(
            "  (share of A's records not among the known pairs re-identified; B: the partner "
            "member's, for reference)"
        )
        for name, shares in self.readings.items():
            each = ", ".join(f"x{k:g} {v:.2%}" for k, v in shares.items())
            lines.append(f"  S2 {name}, by reading of the counts: {each}")
        lines.append(self.verdict())
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        roles: dict[str, dict[str, float]] = {}
        for r in self.results:
            roles.setdefault(r.encoding, {})[r.attack] = r.record_share
        s2 = {
            attack: {"kept": self.kept[attack], "shares": {f"{k:g}": v for k, v in shares.items()}}
            for attack, shares in self.readings.items()
        }
        return {**super().to_dict(), "mode": self.mode, "roles": roles,
                "partner": self.partner, "s2_readings": s2}  # fmt: skip


def synthetic_members(folder: Path, seed: int, size: int, schema: LinkageSchema) -> list[Member]:
    """Member A (a police force's export of `size` people), member B (another organisation's:
    half of A's people and as many others) and the attacker's plaintext (a third export, its
    own errors, of every person of A and B), read as `blindmatch encode` reads them
    (population.py's generator, `write_pair`)."""
    pair = population.write_pair(folder / "ab", seed, size, 0.5)
    extra = size - round(0.5 * size)
    people = population.population(size + extra, seed)  # write_pair's people, A's first
    rng = random.Random(seed + 11)
    rows = [population.export_row(population.ORGS[1], q, k, rng) for k, q in enumerate(people)]
    population.write_csv(folder / "ab" / "plaintext.csv", rows)
    own = population.Export(
        folder / "ab" / "plaintext.csv",
        pair.victim.mapping,
        {row["id"]: q.entity for row, q in zip(rows, people, strict=True)},
    )
    out = []
    for export in (pair.victim, pair.attacker, own):
        ids, read = normalised_export(export, schema)
        out.append((read, [export.truth[i] for i in ids]))
    return out


def seeded_keys(seed: int) -> tuple[bytes, bytes]:
    """`privacy-check --mode two-server --seed N`'s keys, derived from the seed: the
    synthetic project's secret and the attacker's own key. The roles' views depend on the
    data and the project's secret alone (their other keys seal, pad or order, and every view
    is read sorted), the attacks on those and the attacker's key: fixing both repeats a run's
    figures. Without --seed both are fresh, as a real project's and attacker's are."""
    project, attacker = (
        hashlib.sha256(f"blindmatch privacy-check two-server {role} {seed}".encode()).digest()
        for role in ("project", "attacker")
    )
    return project, attacker


def export_members(rows: Sequence[Sequence[str]], schema: LinkageSchema, size: int) -> list[Member]:
    """From a member's own export: A a sample of `size` of its rows, B a noisy copy
    (population.noisy_copy: another organisation's typos and gaps) of half of them in an
    order of its own, the attacker's plaintext another noisy copy of all of them."""
    picked = sample(len(rows), size, 0)
    a = [list(rows[i]) for i in picked]
    kinds = [rule.kind for rule in schema.rules]
    half = sorted(np.random.default_rng(1).permutation(len(a))[: len(a) // 2].tolist())
    b_people = [picked[i] for i in np.random.default_rng(2).permutation(half).tolist()]
    b = population.noisy_copy([rows[i] for i in b_people], kinds, seed=1)
    return [(a, list(picked)), (b, b_people), (population.noisy_copy(a, kinds, seed=3), picked)]


def _upload(schema: LinkageSchema, rows: Sequence[Sequence[str]], secret: bytes,
            hardening: Hardening) -> sharing.SharedUpload:  # fmt: skip
    """What `blindmatch encode --two-server` uploads: the CLKs (the fallback CLK last, as
    `encode_csv` lays them out), shared by `shared_upload` under the schema's plan."""
    views = upload_views(schema, rows, secret, hardening)
    fallback_bits = 8 * views[1].shape[1] if len(views) > 1 else 0
    return sharing.shared_upload(np.hstack(views), secret, sharing.plan_of(schema), fallback_bits)


def check_members(
    members: Sequence[Member],
    schema: LinkageSchema,
    secret: bytes,
    role_views: RoleViews,
    *,
    source: str,
    hardening: Hardening = NONE,
    threshold: float = 0.8,
    known: Sequence[int] = KNOWN_PAIRS,
    attacker_key: bytes | None = None,
    third: bool = True,
    roles: Collection[str] | None = None,
) -> TwoServerReport:
    """Encode members A, B (and M, a noisy copy of half of A) as a two-server project uploads
    them, build each role's view of A and B with `role_views` (the run's own roles) and attack
    each, blind and with `known` pairs of A; the third member is the attacker's plaintext on
    every person of A and B, encoded under `attacker_key` (default: a fresh one; `seeded_keys`
    gives a run that repeats); `third` False leaves M out (a project of two: C's view without
    extras or reach pairs); `roles`: attack only these of `ROLES` (None: every one)."""
    (a_rows, a_people), (b_rows, b_people), (u_rows, u_people) = members
    if len(a_rows) < MIN_SAMPLE:
        raise InputError(
            f"privacy-check --mode two-server: {len(a_rows)} records are too few to mean "
            f"anything (at least {MIN_SAMPLE:,}: below, one record is 0.2% or more of a share, "
            "and a claim right by chance decides the verdict); check a larger export, or the "
            "synthetic data (no DATA argument)"
        )
    # M: a third organisation's noisy copy of half of A's people (a half of its own), so that
    # the run has groups of three (extras, completion's reach pairs); attacked in no view.
    half = np.random.default_rng(4).permutation(len(a_rows))[: len(a_rows) // 2]
    m_rows = population.noisy_copy([a_rows[i] for i in sorted(half.tolist())],
                                   [rule.kind for rule in schema.rules], seed=5)  # fmt: skip
    uploads = [_upload(schema, rows, secret, hardening)
               for rows in (a_rows, b_rows, *([m_rows] if third else []))]  # fmt: skip
    views = dict(role_views(uploads, threshold, schema.rule))  # the run applies the rule
    clks = len(uploads[0].s1.bands)
    del uploads  # not read again (a large member's sealed band keys are large)
    wanted = set(ROLES if roles is None else roles)
    if third and "C*" in wanted:  # C's view and its reach pairs' worst under S1's quota
        ab = [upload_views(schema, rows, secret, hardening)[0] for rows in (a_rows, b_rows)]
        views["C*"] = quota_view(*views["C"], pair_dice(*ab), threshold)
    plan = sharing.plan_of(schema)
    # The attacker's own encodings (its own key, the public schema): both CLKs.
    key = attacker_key if attacker_key is not None else secrets.token_bytes(32)
    own = upload_views(schema, u_rows, key, hardening)
    u = own[0]
    # A row whose person the attacker's plaintext lacks is a decoy (benchmarks/twoserver.py
    # --pad-to): -1, never a right claim, never a record counted in a share.
    where = {q: k for k, q in enumerate(u_people)}
    truth_a = np.array([where.get(q, -1) for q in a_people], dtype=np.intp)
    truth_b = np.array([where.get(q, -1) for q in b_people], dtype=np.intp)
    real = int((truth_a >= 0).sum())
    report = TwoServerReport(source, real, hardening.describe(), [], [])
    graph = own_graph(u)  # the attacker's own Dice graph: every view's model starts from it
    # A and B not blocked only if the views say so (a blocked pair may have empty views too)
    said = views.get(UNBLOCKED_VIEW)
    unblocked = said is not None and [0, 1] in np.asarray(said[0]).tolist()
    for role in (r for r in ROLES if r in views and r in wanted):
        pairs, values = views[role]
        worst: dict[int, tuple[AttackResult, float, float]] = {}
        empty = unblocked and role in ("S1", "S2")  # nothing to read: attacked as it is
        for reading in S2_READINGS if role == "S2" and not empty else (0.0,):
            # A pair's count of shared bands, read as the agreement it implies (over `reading`
            # x the bands each CLK has): the attacker may read it any way.
            shown = read_counts(values, reading, clks, plan) if reading else values
            view = CombinerView(len(a_rows), len(b_rows), pairs, shown,
                                np.zeros(len(a_rows), np.int64), np.zeros(len(b_rows), np.int64),
                                pops=False)  # fmt: skip
            model = fit_model(graph, plan.bits, plan.bands, *_real(view, truth_a, truth_b))
            read = (f" (read against {clks * plan.bands / reading:,.0f} bands, the worst of "
                    f"{len(S2_READINGS)} readings)" if reading else "")  # fmt: skip
            for count in known:
                result, partner = _attack(role, view, model, count, a_people, b_people,
                                          u_people, truth_a, truth_b, read)  # fmt: skip
                if empty:
                    result = _not_blocked(result)
                if reading:
                    report.readings.setdefault(result.attack, {})[reading] = result.record_share
                if count not in worst or result.record_share > worst[count][0].record_share:
                    worst[count] = (result, partner, reading)
        for count in known:
            result, partner, reading = worst[count]
            report.results.append(result)
            report.partner[f"{role} {result.attack}"] = partner
            if reading:
                report.kept[result.attack] = reading
    if "S2" in wanted and ((truth_a < 0).any() or (truth_b < 0).any()):
        # Decoy rows: S2 attacked too by an attacker that drops the rows least likely real.
        pairs, counts = views["S2"]
        for count in known:
            found = unpartnered_attack(pairs, counts, truth_a, truth_b, graph, a_people,
                                       u_people, plan, clks, count)  # fmt: skip
            report.results.append(found)
    within = [views[f"S2 A:{k}"] for k in range(clks) if f"S2 A:{k}" in views]
    within = within if "S2" in wanted else []
    if within:
        own_rows = _own_pairs(within, own, truth_a, a_people, u_people, plan, known)
        report.results.extend(_not_blocked(r) if unblocked else r for r in own_rows)
    return report


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
        model = fit_model(u, plan.bits, plan.bands, *_real(view, ta, tb))
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
                     f"{int(on.sum()):,} pairs; {_claims(right, made)}"),
        records=real, records_reidentified=right, values=real, values_reidentified=right,
        claims=made,
    )  # fmt: skip


def _not_blocked(result: AttackResult) -> AttackResult:
    """S1's or S2's row of a pair not blocked: `NOT_BLOCKED` for the view, then the claims."""
    made = _claims(result.records_reidentified, result.claims or 0)
    return dataclasses.replace(result, public_list=f"{NOT_BLOCKED}; {made}")


def _claims(right: int, made: int) -> str:
    return f"{made} claims, precision {right / made:.1%}" if made else "no claims"


def _own_pairs(
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
                         f"{_claims(right, len(claims))}"),
            records=len(mine) - len(known_a), records_reidentified=right,
            values=len(mine) - len(known_a), values_reidentified=right, claims=len(claims),
        ))  # fmt: skip
    return out


def _attack(
    role: str, view: CombinerView, model: Any, count: int,
    a_people: list[int], b_people: list[int], u_people: list[int],
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
        public_list=f"{ROLES[role]}{read}: {len(view.pairs):,} pairs; {_claims(right_a, made)}",
        records=int((truth_a >= 0).sum()) - len(known_a),
        records_reidentified=right_a,
        values=int((truth_a >= 0).sum()) - len(known_a),
        values_reidentified=right_a,
        claims=made,
    )
    return result, right_b / max(int((truth_b >= 0).sum()) - len(known_b), 1)


def _real(
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
    "MIN_SAMPLE",
    "NOT_BLOCKED",
    "S2_READINGS",
    "TwoServerReport",
    "check_members",
    "export_members",
    "read_counts",
    "seeded_keys",
    "synthetic_members",
    "unpartnered_attack",
]
