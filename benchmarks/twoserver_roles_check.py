"""`benchmarks/twoserver.py --view roles` (a part of it, not a script): `blindmatch
privacy-check --mode two-server`'s check on the population, with the shipped schema (or
`--plan`), S1's dummies, S2's top pairs or scaled counts; with `--pad-to` the decoys' cost and
false links, and the attacker on S2 keeping `--keep` times as many rows as real people."""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks import clk_baseline, clk_tags
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy import twocheck
from blindmatch.client.tools.privacy.graphcheck import upload_views
from blindmatch.client.tools.privacy.twocheck import check_members
from blindmatch.matcher.core.twoviews import role_views

ROOT = Path(__file__).resolve().parent.parent


def decoy_report(seen: tuple[Any, float], loaded: Any, cpu: float) -> None:
    """A padded run's cost (pairs through the circuit, the roles' and the whole check's CPU)
    and the links C makes that involve a decoy (a decoy of A with a real record of B is a
    false hit for B; the combiner would have to drop them); and the attack's claims are in
    the report above, counted on real records only."""
    got, roles_cpu = seen
    decoy_a = np.array([q < 0 for q in loaded[0][1]])
    decoy_b = np.array([q < 0 for q in loaded[1][1]])
    links = got["C"][0]
    da, db = decoy_a[links[:, 0]], decoy_b[links[:, 1]]
    cand = got["S1"][0]
    ca, cb = decoy_a[cand[:, 0]], decoy_b[cand[:, 1]]
    real = int((~ca & ~cb).sum())
    print(f"decoys: A {int(decoy_a.sum()):,} of {len(decoy_a):,} rows, B {int(decoy_b.sum()):,} "
          f"of {len(decoy_b):,}; {len(cand):,} pairs through the circuit ({real:,} "
          f"real-real, {int((ca ^ cb).sum()):,} decoy-real, {int((ca & cb).sum()):,} decoy-decoy); "
          f"{len(links):,} links: {int((~da & ~db).sum()):,} real-real, "
          f"{int((da & ~db).sum()):,} A's decoy with B's real, {int((~da & db).sum()):,} A's real "
          f"with B's decoy, {int((da & db).sum()):,} decoy-decoy; the roles {roles_cpu:.1f} CPU s, "
          f"the whole check {cpu:.0f} CPU s")  # fmt: skip


def partnered_attack(
    s2: tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]],
    loaded: Any,
    schema: Any,
    known: list[int],
    share: float,
) -> None:
    """twocheck.py `unpartnered_attack` (the check runs it at share 1 on padded members) keeping
    `share` x as many rows of each member as it has real people."""
    pairs, counts = s2
    (_a, a_people), (_b, b_people), (u_rows, u_people) = loaded
    u = upload_views(schema, u_rows, secrets.token_bytes(32), NONE)[0]
    where = {q: k for k, q in enumerate(u_people)}
    ta, tb = (np.array([where.get(q, -1) for q in ppl], dtype=np.intp)
              for ppl in (a_people, b_people))  # fmt: skip
    for count in known:
        got = twocheck.unpartnered_attack(pairs, counts, ta, tb, u, a_people, u_people,
                                          sharing.plan_of(schema), 2, count, share)  # fmt: skip
        print(f"  S2 {got.attack}: {got.record_share:.2%} ({got.public_list})", flush=True)


def run(args: argparse.Namespace, loaded: Any) -> None:
    """The roles' check on `loaded` (twoserver_people.py `load`), printed."""
    # privacy-check --mode two-server's check on this population, with the shipped schema.
    shipped = load_schema(ROOT / "schemas" / "person-uk.json")
    if args.plan:
        shipped = dataclasses.replace(shipped, twoserver=(args.plan[0], args.plan[1]))
    source = f"{args.population} ({args.records} people, seed {args.seed})"
    secret = secrets.token_bytes(32)
    seen: dict[str, tuple[Any, float]] = {}
    lacking: dict[str, tuple[Any, Any]] = {}

    def views(uploads: Any, threshold: float, rule: Any, label: str, dummies: float) -> Any:
        t0 = time.process_time()
        got = role_views(
            uploads,
            threshold,
            rule,
            dummies=dummies,
            exhaustive=args.exhaustive_pairs,
            clear=args.clear,
        )
        seen[label] = (got, time.process_time() - t0)
        lacking[label] = (uploads[0].s1.lacking, uploads[1].s1.lacking)
        pairs, counts = got["S2"]
        if args.s2_top and len(counts) > args.s2_top:
            top = np.argsort(-counts, kind="stable")[: args.s2_top]
            pairs, counts = pairs[top], counts[top]
        return {**got, "S2": (pairs, counts * args.s2_scale)}

    label = f"plan {args.plan or 'shipped'}, dummies {args.dummies:g}"
    if args.exhaustive_pairs is not None:
        label += f", S1's cap {args.exhaustive_pairs:,} pairs"
    if args.pad_to:
        source += f", A and B padded to {args.pad_to:,} records with decoys"
    t_check = time.process_time()
    report = check_members(loaded, shipped, secret,
                           lambda u, t, r: views(u, t, r, label, args.dummies), source=source,
                           known=args.known, roles=args.roles,
                           third=not args.two_members)  # fmt: skip
    print(report.render())
    if label not in seen:  # no view made (too few records: NO VERDICT), nothing to compare
        return
    if args.clk_tags and lacking[label][0] is not None:  # what C's CLK of each pair tells
        own = upload_views(shipped, loaded[2][0], secrets.token_bytes(32), NONE)
        clk_tags.report(seen[label][0]["C"][0], *lacking[label], loaded[0][1], own, loaded[2][1])
    if args.clk_baseline:  # the same records' CLKs in a CLK project, attacked
        clk_baseline.report(shipped, loaded[0], loaded[2], secret, args.known)
    if args.pad_to:
        decoy_report(seen[label], loaded, time.process_time() - t_check)
        for share in args.keep:
            print(f"the attacker on S2 dropping unpartnered rows first, keeping {share:g} x "
                  "as many rows as real people:")  # fmt: skip
            partnered_attack(seen[label][0]["S2"], loaded, shipped, args.known, share)
    if args.dummies or args.plan:
        # The same people and secret, the shipped plan without dummies: the pairs through
        # the circuit, the links.
        reference = load_schema(ROOT / "schemas" / "person-uk.json")
        check_members(loaded, reference, secret,
                      lambda u, t, r: views(u, t, r, "reference", 0.0),
                      source=source, known=[])  # fmt: skip
        for name, (got, cpu) in seen.items():
            print(f"{name}: {len(got['S1'][0]):,} pairs through the circuit, "
                  f"{len(got['C'][0]):,} links, S2 opened {int(got['S2'][1].sum()):,} pairs "
                  f"of tokens, the roles {cpu:.1f} CPU s")  # fmt: skip
        mine, ref = ({tuple(p) for p in seen[k][0]["C"][0].tolist()} for k in (label, "reference"))
        print(f"links: {len(mine & ref):,} in both, {len(mine - ref):,} only with {label}, "
              f"{len(ref - mine):,} only with the reference")  # fmt: skip
