"""The attacks of benchmarks/twoserver.py on C's, S1's or S2's view (a part of it, not a
script): the candidates (keyed LSH, or sealed band keys for `--view s1|s2`), the simulated
protocol checked on `--protocol-pairs` of them, the view (`--view`: the Dice, link bits,
buckets, candidates alone, links, S1's or S2's), then the graph-matching attack and
trilateration at `--known`."""

from __future__ import annotations

import argparse
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.graph_attack import band_keys, with_fallback
from benchmarks.twoserver_views import candidates, protocol, sealed_view, two_hop
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy.graph import known_pairs, scored_runs
from blindmatch.client.tools.privacy.graphcheck import upload_views
from blindmatch.client.tools.privacy.trilateration import (
    CombinerView,
    Trilateration,
    fit_model,
    trilaterate,
)

ROOT = Path(__file__).resolve().parent.parent


def run(args: argparse.Namespace, loaded: Any, schema: Any) -> None:
    """The attacks on `loaded` (twoserver_people.py `load`), printed."""
    (a_rows, a_people), (b_rows, b_people), (u_rows, u_people) = loaded
    key = secrets.token_bytes(32)
    a, b = (upload_views(schema, rows, key, NONE)[0] for rows in (a_rows, b_rows))
    shared = None
    if args.view in ("s1", "s2"):
        fb = None
        if args.fallback:
            both = with_fallback(load_schema(ROOT / "schemas" / "person-uk.json"), True)
            fa, fbb = (upload_views(both, rows, key, NONE)[1] for rows in (a_rows, b_rows))
            fb = (fa, fbb)
        pairs, shared = sealed_view(a, b, args.bits, args.bands, fb)
    else:
        keys_a, keys_b = band_keys(a, args.r, args.b, key), band_keys(b, args.r, args.b, key)
        pairs = candidates(keys_a, keys_b)
    inter = np.bitwise_count(a[pairs[:, 0]] & b[pairs[:, 1]]).sum(1)
    total = np.bitwise_count(a[pairs[:, 0]]).sum(1) + np.bitwise_count(b[pairs[:, 1]]).sum(1)
    dice = 2 * inter / total
    run = np.random.default_rng(args.seed).permutation(len(pairs))[: args.protocol_pairs]
    at_c, sent, seconds = protocol(a, b, pairs[run])
    assert np.allclose(at_c, dice[run]), "C's Dice differs from the plaintext Dice"
    if shared is not None:
        # S1: the candidates alone; S2: each candidate's shared bands, as an agreement.
        dice = (
            np.zeros(len(pairs)) if args.view == "s1" else (shared / args.bands) ** (1 / args.bits)
        )
        print(f"{args.view}'s view: {len(pairs):,} candidates; shared bands a candidate: "
              f"median {np.median(shared):.0f}, max {shared.max()} of {total}")  # fmt: skip
    elif args.view != "dice":
        # What C learns with the link-bit step (matcher/core/linkbit.py): each candidate's
        # bucket, its Dice's lower end among the cut-offs, 0.0 below the threshold (C knows
        # only that). The attacks below read it where they read the Dice: the same attacks,
        # calibrated on this view as on the Dice.
        chosen = {"buckets": args.cuts, "link-bit": args.cuts[:1], "candidates": [2.0],
                  "links": args.cuts}  # fmt: skip
        cuts = np.array([0.0, *chosen[args.view]])
        dice = cuts[np.searchsorted(cuts, dice, side="right") - 1]
        if args.view == "links":
            # C learns a candidate's identity only where it links (core/linkbit.py gates the
            # rows by the link bit): the other candidates are not in its view at all.
            pairs, dice = pairs[dice > 0], dice[dice > 0]
        print(f"C's view: {args.view} at cut-offs {', '.join(map(str, cuts[1:]))}: "
              f"{(dice > 0).sum():,} of {len(dice):,} candidates link")  # fmt: skip
    print(
        f"{len(pairs)} candidate pairs ({len(pairs) / len(a):.1f} per record of A, "
        f"{len(pairs) / (len(a) * len(b)):.2%} of cross pairs); C's Dice = plaintext Dice on "
        f"all {len(run):,} run through the protocol; {sent / len(run):.0f} bytes to C per pair; "
        f"{1e6 * seconds / len(run):.0f} us per pair (numpy, one process, all three parties)",
        flush=True,
    )
    own_key = secrets.token_bytes(32)
    u = upload_views(schema, u_rows, own_key, NONE)[0]
    where = {q: k for k, q in enumerate(u_people)}
    truth_a = np.array([where[q] for q in a_people], dtype=np.intp)
    truth_b = np.array([where[q] for q in b_people], dtype=np.intp)
    whose = {"s1": "S1", "s2": "S2"}.get(args.view, "C")
    if args.attack in ("graph", "both"):
        # The graph-matching attack: the attacker's same view of its plaintext of A's people,
        # its encodings against themselves, blocked by its own keyed LSH.
        p = u[np.sort(truth_a)]
        p_people = [u_people[k] for k in np.sort(truth_a)]
        keys_p = band_keys(p, args.r, args.b, own_key)
        own_pairs = candidates(keys_p, keys_p)
        own_pairs = own_pairs[own_pairs[:, 0] != own_pairs[:, 1]]
        inter = np.bitwise_count(p[own_pairs[:, 0]] & p[own_pairs[:, 1]]).sum(1)
        total = np.bitwise_count(p[own_pairs[:, 0]]).sum(1) + np.bitwise_count(
            p[own_pairs[:, 1]]
        ).sum(1)
        victim = [two_hop(len(a), len(b), pairs, dice)]
        attacker = [two_hop(len(p), len(p), own_pairs, 2 * inter / total)]
        for count, scored in scored_runs(victim, attacker, a_people, p_people, args.known):
            print(
                f"graph matching on {whose}'s view, {count} known pairs: {scored.rate:.1%} of A's "
                f"records (claim precision {scored.precision:.1%})",
                flush=True,
            )
    if args.attack in ("trilateration", "both"):
        t0 = time.process_time()
        pop_a, pop_b = (np.bitwise_count(x).sum(1).astype(np.int64) for x in (a, b))
        # C holds no popcount under "links" (the circuit takes them shared), S1 and S2 none.
        holds = shared is None and args.view != "links"
        view = CombinerView(len(a), len(b), pairs, dice, pop_a, pop_b, holds)
        model = fit_model(u, args.r, args.b, view, truth_a, truth_b)
        in_a, in_b = np.sort(truth_a), np.sort(truth_b)
        print(
            f"trilateration: the attacker's plaintext holds {len(u):,} people (all of A's and "
            f"B's); model {time.process_time() - t0:.0f} CPU s",
            flush=True,
        )
        if args.curve:
            pos = {int(q): j for j, q in enumerate(in_a)}
            col = np.array([pos[int(q)] for q in truth_a])
            order = np.random.default_rng(5).permutation(len(b))
            for k in args.curve:
                tri = Trilateration(view, model, in_a, np.zeros((len(a), len(in_a)), np.float32))
                tri.add({int(i): int(truth_b[i]) for i in order[:k]})
                best = np.argmax(tri.score, axis=1)
                print(
                    f"  evidence: with the true identities of {min(k, len(b)):,} random records "
                    f"of B, A's true identity scores best for {np.mean(best == col):.1%} of A",
                    flush=True,
                )
        for count in args.known:
            t1 = time.process_time()
            known_a = known_pairs(a_people, u_people, count, seed=count)
            known_b: dict[int, int] = {}  # the known pairs are A's: the victim's
            claims_a, claims_b, blind_a = trilaterate(
                view, model, in_a, in_b, known_a, known_b, args.blind_seeds, args.margin,
                args.cap, args.robust, args.lap,
            )  # fmt: skip
            good = sum(1 for i, q in blind_a.items() if truth_a[i] == q)
            out = []
            # B's records of the known people (linked to a known record of A at Dice ~0.9,
            # which C sees) are left out of B's count as the known pairs are out of A's.
            people_known = {int(q) for q in known_a.values()}
            known_b = {i: int(q) for i, q in enumerate(truth_b) if int(q) in people_known}
            for claims, known, truth in (
                (claims_a, known_a, truth_a),
                (claims_b, known_b, truth_b),
            ):
                claimed = {i: q for i, q in claims.items() if i not in known}
                right = sum(1 for i, q in claimed.items() if truth[i] == q)
                covered = len(truth) - len(known)
                out.append(
                    f"{right / covered:.2%} ({right} of {covered:,}; {len(claimed)} claims, "
                    f"precision {right / len(claimed) if claimed else 1:.1%})"
                )
            print(
                f"trilateration on {whose}'s view, {count} known pairs of A "
                f"({len(blind_a)} blind seeds in A, {good} right): A {out[0]}; B {out[1]}; "
                f"{time.process_time() - t1:.0f} CPU s",
                flush=True,
            )
    return
