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

import secrets
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.harden import NONE, Hardening
from blindmatch.client.encoding.schema import LinkageSchema
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.attacks import AttackResult
from blindmatch.client.tools.privacy.graphcheck import KNOWN_PAIRS, upload_views
from blindmatch.client.tools.privacy.reachprobes import pair_dice, quota_view
from blindmatch.client.tools.privacy.report import CheckReport
from blindmatch.client.tools.privacy.trilateration import CombinerView, fit_model, own_graph
from blindmatch.client.tools.privacy.trimodel import cross_graph
from blindmatch.client.tools.privacy.twoattacks import (
    NOT_BLOCKED,
    ROLES,
    S2_READINGS,
    attack_view,
    not_blocked,
    own_pairs,
    read_counts,
    real_view,
    unpartnered_attack,
)
from blindmatch.client.tools.privacy.twokeys import KeyViews
from blindmatch.client.tools.privacy.twomembers import (
    Member,
    export_members,
    seeded_keys,
    synthetic_members,
    upload,
)

# Fewer records of A are not attacked (NO VERDICT, as the CLK check's small samples): one
# record is then 0.2%+ of a share, and a lucky claim would decide the verdict.
MIN_SAMPLE = 500
# A member B of at most `DENSE_UP_TO` records is put through the roles' own run and attacked
# dense (trilateration.py: B x B float32 scores beside the attacker's own levels of every
# person of A and B); a larger one does not fit 4 GB (its sealed upload alone: 3.4 GB at peak
# at 12,000 records, 4.5 GB at 16,000, measured; the dense attack 3.25 GB at 16,005), so its
# S1's and S2's views are made from band keys (twokeys.py) and attacked sparse (trisparse.py:
# each record of B scored against the `NEAR` nearest records of its seeded candidates'
# people). `privacy-check --partner-records`, `--near`, `--dense-up-to`.
DENSE_UP_TO = 12_000
NEAR = 32
# A partner over DENSE_UP_TO: S1's and S2's views from band keys, no other role's.
KEYED = (
    "views: S1's and S2's from the members' band keys (twokeys.py; the roles' own run "
    "does not fit a partner this large); C's view and S2's of A's own pairs not attacked"
)
# The views' entry naming the pairs of members S1 did not block (twoviews.py NOT_BLOCKED).
UNBLOCKED_VIEW = "members not blocked"
Views = Mapping[str, tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]]
# (uploads, threshold, the schema's blindmatch.rule or None) -> each role's view
RoleViews = Callable[[Sequence[sharing.SharedUpload], float, tuple[float, float, float] | None],
                     Views]  # fmt: skip
# What benchmarks and tests name a member's upload by (twomembers.py `upload`).
_upload = upload


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
    short: bool = False  # A had fewer than MIN_SAMPLE records: nothing attacked, no verdict
    partner_records: int = 0  # member B's records
    near: int = 0  # B's side of trilateration sparse over each record's `near` nearest; 0: dense
    keyed: bool = False  # S1's and S2's views from band keys (twokeys.py): C's not attacked

    @property
    def too_few(self) -> bool:
        return self.short

    def verdict(self) -> str:
        if self.short:
            return (
                f"NO VERDICT: {self.records} records of member A are too few to mean anything "
                f"(at least {MIN_SAMPLE:,}: below, one record is 0.2% or more of a share, and a "
                "claim right by chance decides the verdict), so no view was attacked; "
                + (self.larger(MIN_SAMPLE, "--sample") if self.synthetic else "check a larger "
                   "export or --sample, or the synthetic data (no DATA argument)")
            )  # fmt: skip
        worst = self.worst
        if worst is None:
            return "NO VERDICT: no view was attacked"
        if self.passed:
            on = "S1's and S2's views (C's not attacked)" if self.keyed else "every role's view"
            return (
                f"PASS: every attack on {on} re-identified under {self.limit:.0%} "
                f"of records (worst: {worst.record_share:.2%}, {worst.attack} on "
                f"{worst.encoding}'s view)"
            )
        return (
            f"LEAKS: {worst.attack} on {worst.encoding}'s view re-identified "
            f"{self.reidentified(worst)}; the limit is {self.limit:.0%} "
            "(docs/privacy-design.md)"
        )

    def render(self) -> str:
        lines = [
            f"privacy-check (two-server mode) of {self.source}: {self.records} records of "
            f"member A, hardening: {self.hardening}",
            f"  member B: {self.partner_records:,} records; trilateration: {self.side()}",
        ]
        if self.keyed:
            lines.append(f"  {KEYED}")
        if self.short:
            return "\n".join([*lines, self.verdict()])
        lines.append(f"  {'role':<4} {'attack':<28} {'A':>8} {'B':>8}  view")
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

    def side(self) -> str:
        """Which trilateration attack ran, on B's side."""
        if not self.near:
            return "dense (B x B scores)"
        return (f"sparse (each record of B scored against the {self.near} nearest records of "
                "its seeded candidates' people)")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        roles: dict[str, dict[str, float]] = {}
        for r in self.results:
            roles.setdefault(r.encoding, {})[r.attack] = r.record_share
        s2 = {
            attack: {"kept": self.kept[attack], "shares": {f"{k:g}": v for k, v in shares.items()}}
            for attack, shares in self.readings.items()
        }
        return {**super().to_dict(), "mode": self.mode, "roles": roles,
                "partner": self.partner, "s2_readings": s2,
                "partner_records": self.partner_records,
                "trilateration": {"attack": "sparse" if self.near else "dense",
                                  "near": self.near or None},
                "views": KEYED if self.keyed else "the roles' own run"}  # fmt: skip


def attack_near(partner: int, near: int | None = None, dense_up_to: int = DENSE_UP_TO) -> int:
    """`check_members`' `near` for a member B of `partner` records: `near` where given (the
    sparse attack at any size), else 0 (dense) up to `dense_up_to` records and `NEAR` above."""
    if near is not None:
        return near
    return 0 if partner <= dense_up_to else NEAR


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
    near: int = 0,
    keyed: KeyViews | None = None,
) -> TwoServerReport:
    """Encode members A, B (and M, a noisy copy of half of A) as a two-server project uploads
    them, build each role's view of A and B with `role_views` (the run's own roles) and attack
    each, blind and with `known` pairs of A; the third member is the attacker's plaintext on
    every person of A and B, encoded under `attacker_key` (default: a fresh one; `seeded_keys`
    gives a run that repeats); `third` False leaves M out (a project of two: C's view without
    extras or reach pairs); `roles`: attack only these of `ROLES` (None: every one); `near`:
    the attacker holds its levels for A's people only and B's side of trilateration sparse,
    over each record's `near` nearest (trisparse.py: a member B of 64,000 records and more);
    `keyed`: S1's and S2's views from A's and B's rows (twokeys.py `key_views`, a partner too
    large for the roles' sealed uploads) instead of the uploads and `role_views`, whose M,
    C's views and S2's of A's own pairs it does not make: the report says so."""
    (a_rows, a_people), (b_rows, b_people), (u_rows, u_people) = members
    if len(a_rows) < MIN_SAMPLE:  # NO VERDICT, as the CLK check gives on a small sample
        return TwoServerReport(source, len(a_rows), hardening.describe(), [], [], short=True,
                               partner_records=len(b_rows), near=near)  # fmt: skip
    # M: a third organisation's noisy copy of half of A's people (a half of its own), so that
    # the run has groups of three (extras, completion's reach pairs); attacked in no view.
    half = np.random.default_rng(4).permutation(len(a_rows))[: len(a_rows) // 2]
    m_rows = population.noisy_copy([a_rows[i] for i in sorted(half.tolist())],
                                   [rule.kind for rule in schema.rules], seed=5)  # fmt: skip
    if keyed is None:
        uploads = [upload(schema, rows, secret, hardening)
                   for rows in (a_rows, b_rows, *([m_rows] if third else []))]  # fmt: skip
        views = dict(role_views(uploads, threshold, schema.rule))  # the run applies the rule
        clks = len(uploads[0].s1.bands)
        del uploads  # not read again (a large member's sealed band keys are large)
    else:
        views, clks = dict(keyed(a_rows, b_rows)), 2 if schema.fallback else 1
        third, roles = False, [r for r in ROLES if r in views and r in (roles or ROLES)]
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
    report = TwoServerReport(source, real, hardening.describe(), [], [],
                             partner_records=len(b_rows), near=near,
                             keyed=keyed is not None)  # fmt: skip
    # the attacker's own Dice graph: every view's model starts from it
    graph = cross_graph(u, np.unique(truth_a[truth_a >= 0]), near) if near else own_graph(u)
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
            model = fit_model(graph, plan.bits, plan.bands, *real_view(view, truth_a, truth_b))
            read = (f" (read against {clks * plan.bands / reading:,.0f} bands, the worst of "
                    f"{len(S2_READINGS)} readings)" if reading else "")  # fmt: skip
            for count in known:
                result, partner = attack_view(role, view, model, count, a_people, u_people,
                                              truth_a, truth_b, read)  # fmt: skip
                if empty:
                    result = not_blocked(result)
                if reading:
                    report.readings.setdefault(result.attack, {})[reading] = result.record_share
                # (ranked as the verdict ranks: by the share of all of A's records)
                if count not in worst or (
                    report.share_of_all(result) > report.share_of_all(worst[count][0])
                ):
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
        own_rows = own_pairs(within, own, truth_a, a_people, u_people, plan, known)
        report.results.extend(not_blocked(r) if unblocked else r for r in own_rows)
    return report


__all__ = [
    "DENSE_UP_TO",
    "KEYED",
    "MIN_SAMPLE",
    "NEAR",
    "NOT_BLOCKED",
    "S2_READINGS",
    "TwoServerReport",
    "attack_near",
    "check_members",
    "export_members",
    "read_counts",
    "seeded_keys",
    "synthetic_members",
    "unpartnered_attack",
]
