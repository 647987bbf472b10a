"""An unblocked block's link bits by arithmetic sharing (core/densearith.py, denseblock.py)
beside the boolean circuit a pair (core/gmwrule.py `rule_circuit`), on the same pairs, in one
run.

    .venv/bin/python benchmarks/densearith.py [--records 400] [--partner-records 400]
        [--population households|messy] [--seed 1] [--block-only] [--ripple | --depth N]

Members A and B: the `--population`'s first `--records` and `--partner-records` people's
records (benchmarks/twoserver_people.py), encoded under the shipped schema
(schemas/person-uk.json: a record-level and a fallback CLK of 1,024 bits each, its gap rule,
the default buckets 0.8, 0.85, 0.9, 0.95), XOR-shared as `encode --two-server` shares them.
Every pair of A's rows x B's rows goes through:

- the boolean path (what an unblocked part runs today): per batch of `linkbit.BATCH` pairs, C
  deals the rule circuit's triples, S1 and S2 take their shares of each pair's a ^ b (both
  CLKs) and of the four popcounts, check the triples, run the rounds, send C their output
  shares;
- the block path: C deals the block's daBits and matrix triples once, S1 and S2 convert and
  check them and compute every pair's H shares by matrix products (`block` below), then per
  batch the same steps on core/gmwsum.py's circuit, whose input is those shares;
- the block path with the rule's margin by arithmetic (core/densemargin.py, "margin"): the
  same H shares, the records' popcounts turned into additive shares mod 2^64 once a record,
  then per batch core/margincircuit.py's first circuit, the products and checks mod 2^64
  (core/ring64.py), the second circuit on the tests' values (`--ripple`: its carries
  rippled, fewer AND gates in more rounds; `--depth N`: rippled as far as leaves them N AND
  levels deep, core/margincircuit.py `plan`).

Printed: CPU µs a pair by role (this process's `process_time`, each role's own steps), bytes
a pair by direction as `linkbit.Transcript` counts them, the ratios, and whether the two
paths' output bits (every cut-off of every pair) are the same and the rule's in the clear
(core/ruleform.py `rule_bounds` on the clear popcounts and distances), and the process's
peak RSS, and each path's AND gates and rounds a pair. `--block-only`: the block paths alone
(a block of the CLI walk's size, 6,000 x 1,600, without an hour of the boolean circuit beside
them).
"""

from __future__ import annotations

import argparse
import resource
import secrets
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt

from benchmarks import twoserver_people
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy.graphcheck import upload_views
from blindmatch.matcher.core import denseblock, densemargin, linkbit, ruleform
from blindmatch.matcher.core.gmwrule import rule_circuit
from blindmatch.matcher.core.gmwsum import sum_rule_circuit
from blindmatch.matcher.core.margincircuit import RIPPLE, plan
from blindmatch.matcher.domain import Rule

ROOT = Path(__file__).resolve().parent.parent
CUTOFFS = (0.8, 0.85, 0.9, 0.95)
ROLES = ("S1", "S2", "C")
Clks = npt.NDArray[np.uint8]


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=400, help="member A's records")
    parser.add_argument("--partner-records", type=int, default=400, help="member B's records")
    parser.add_argument("--population", choices=["households", "messy"], default="households")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--block-only",
        action="store_true",
        help="the block paths alone (no boolean circuit beside them)",
    )
    parser.add_argument(
        "--ripple", action="store_true", help="the margin's second circuit with its carries rippled"
    )
    parser.add_argument("--depth", type=int, default=0,
                        help="the margin's carries rippled to this AND-depth")  # fmt: skip
    return parser


def members(args: argparse.Namespace) -> tuple[list[Clks], Rule]:
    """Each CLK's rows, A's then B's (A: the first --records of B's people's population)."""
    schema = load_schema(ROOT / "schemas" / "person-uk.json")
    people = argparse.Namespace(population=args.population, seed=args.seed,
                                records=max(args.records, args.partner_records), pad_to=0,
                                decoys="generator", shared_decoys=False,
                                partner_records=0)  # fmt: skip
    loaded = twoserver_people.load(people, schema)
    secret = secrets.token_bytes(32)
    views = [upload_views(schema, rows, secret, NONE) for rows, _ in loaded[:2]]
    a, b = views[0], views[1]
    rows = [np.vstack([a[k][: args.records], b[k][: args.partner_records]]) for k in (0, 1)]
    if not schema.rule:
        raise SystemExit("the shipped schema has a gap rule")
    return [np.ascontiguousarray(r) for r in rows], Rule(*schema.rule)


def boolean(one: list[Clks], two: list[Clks], p1: list[npt.NDArray[np.uint32]],
            p2: list[npt.NDArray[np.uint32]], n_a: int, n_b: int, rule: Rule,
            clock: dict[str, float], t: linkbit.Transcript) -> npt.NDArray[np.bool_]:  # fmt: skip
    """Today's path on every pair: the rule circuit a batch, each server gathering its
    shares of the pairs' a ^ b and popcounts."""
    c = rule_circuit(8 * one[0].shape[1], 8 * one[1].shape[1], CUTOFFS, rule)
    out = np.zeros((len(CUTOFFS), n_a * n_b), dtype=bool)
    for at in range(0, n_a * n_b, linkbit.BATCH):
        ia, ib = np.divmod(np.arange(at, min(n_a * n_b, at + linkbit.BATCH)), n_b)
        t0 = time.process_time()
        d = linkbit.deal(c, len(ia))
        parties = []
        spent = [time.process_time() - t0]
        for role, (shares, pops) in enumerate(((one, p1), (two, p2))):
            t0 = time.process_time()
            diffs = tuple(s[ia] ^ s[n_a + ib] for s in shares)
            per_pair = [p[rows] for p in pops for rows in (ia, n_a + ib)]
            setup = t.send("C", ROLES[role], "setup", d.to_s2 if role else d.to_s1)
            parties.append(linkbit.Party(role, c, diffs, setup, per_pair))
            spent.append(time.process_time() - t0)
        linkbit.exchange(parties[0], parties[1], t, clock)
        outs = []
        for role, party in enumerate(parties):
            t0 = time.process_time()
            outs.append(t.send(ROLES[role], "C", "output", party.output()))
            spent[1 + role] += time.process_time() - t0
        t0 = time.process_time()
        out[:, at : at + len(ia)] = linkbit.reveal(c, outs[0], outs[1], len(ia))
        spent[0] += time.process_time() - t0
        for who, secs in zip(("C", "S1", "S2"), spent, strict=True):
            clock[who] = clock.get(who, 0.0) + secs
        t.pairs += len(ia)
    return out


def clear(rows: list[Clks], n_a: int, rule: Rule) -> npt.NDArray[np.bool_]:
    """The rule's outputs in the clear (popcounts and distances by numpy)."""
    cols = []
    for r in rows:
        a, b = r[:n_a], r[n_a:]
        pops = np.bitwise_count(r).sum(axis=1).astype(np.int64)
        h = np.stack([np.bitwise_count(a[i] ^ b).sum(axis=1) for i in range(n_a)]).ravel()
        cols += [np.repeat(pops[:n_a], len(b)), np.tile(pops[n_a:], n_a), h.astype(np.int64)]
    n1, n2 = 8 * rows[0].shape[1], 8 * rows[1].shape[1]
    return ruleform.rule_bounds(ruleform.integer_form(rule, CUTOFFS, n1, n2), n1, *cols)


def main() -> int:
    args = arguments().parse_args()
    rows, rule = members(args)
    n_a, n_b = args.records, args.partner_records
    pairs = n_a * n_b
    shares = [sharing.split_shares(r) for r in rows]
    one, two = [s[0] for s in shares], [s[1] for s in shares]
    split = [linkbit.split_popcounts(sharing.popcounts(r), 8 * r.shape[1]) for r in rows]
    p1, p2 = [s[0] for s in split], [s[1] for s in split]
    print(f"{args.population}, seed {args.seed}: {n_a:,} x {n_b:,} records ({pairs:,} pairs), "
          f"CLKs of {8 * rows[0].shape[1]:,} and {8 * rows[1].shape[1]:,} bits, rule "
          f"{rule.text()}, cut-offs {CUTOFFS}")  # fmt: skip
    n1, n2 = 8 * rows[0].shape[1], 8 * rows[1].shape[1]
    depth = RIPPLE if args.ripple else args.depth
    margin_plan = plan(n1, n2, CUTOFFS, rule, depth)
    circuits = {"boolean circuit": rule_circuit(n1, n2, CUTOFFS, rule),
                "block": sum_rule_circuit(n1, n2, CUTOFFS, rule)}  # fmt: skip
    gates = {label: (c.and_gates, c.rounds) for label, c in circuits.items()}
    gates["margin"] = (margin_plan.and_gates, margin_plan.first.rounds
                       + margin_plan.second.rounds + 2)  # fmt: skip
    figures = {}
    labels = ("boolean circuit", "block", "margin")
    for label in labels[1:] if args.block_only else labels:
        clock: dict[str, float] = {}
        t = linkbit.Transcript()
        w0 = time.perf_counter()
        if label == "block":
            got = denseblock.compare(one, two, p1, p2, n_a, CUTOFFS, rule, t, clock)
        elif label == "margin":
            got = densemargin.compare(one, two, p1, p2, n_a, CUTOFFS, rule, t, clock, depth)
        else:
            got = boolean(one, two, p1, p2, n_a, n_b, rule, clock, t)
        wall = time.perf_counter() - w0
        figures[label] = (got, clock, dict(t.sent))
        by = ", ".join(f"{a}->{b} {v / pairs:,.1f}" for (a, b), v in sorted(t.sent.items()))
        us = ", ".join(f"{r} {1e6 * clock.get(r, 0.0) / pairs:.2f}" for r in ROLES)
        every = 1e6 * sum(clock.values()) / pairs
        print(f"  {label:15s}: {gates[label][0]:,} AND gates, {gates[label][1]} rounds a pair; "
              f"CPU µs a pair {us} (all {every:.2f}); bytes a pair "
              f"{sum(t.sent.values()) / pairs:,.1f} ({by}); wall {wall:.1f} s")  # fmt: skip
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"  peak RSS of this process (the three roles, the data): {peak:,.0f} MiB")
    truth = clear(rows, n_a, rule)
    new, margin = figures["block"][0], figures["margin"][0]
    same_margin = bool((margin == new).all())
    print(f"  the margin's output bits the block path's: {same_margin}")
    if args.block_only:
        print(f"  output bits the rule in the clear's: {bool((new == truth).all())}")
        return 0 if (new == truth).all() and same_margin else 1
    old, c_old, s_old = figures["boolean circuit"]
    for label in labels[1:]:
        _, c_new, s_new = figures[label]
        ratios = ", ".join(f"{r} {c_old[r] / max(c_new[r], 1e-9):.1f}x" for r in ROLES)
        print(f"  the {label} path's gain over the boolean circuit: CPU {ratios}, all "
              f"{sum(c_old.values()) / sum(c_new.values()):.1f}x; bytes "
              f"{sum(s_old.values()) / sum(s_new.values()):.1f}x")  # fmt: skip
    (_, c_b, s_b), (_, c_m, s_m) = figures["block"], figures["margin"]
    ratios = ", ".join(f"{r} {c_b[r] / max(c_m[r], 1e-9):.1f}x" for r in ROLES)
    print(f"  the margin's gain over the block path: CPU {ratios}, all "
          f"{sum(c_b.values()) / sum(c_m.values()):.1f}x; bytes "
          f"{sum(s_b.values()) / sum(s_m.values()):.1f}x")  # fmt: skip
    same = bool((old == new).all() and same_margin)
    print(f"  output bits the same: {same} ({int(new[0].sum()):,} pairs at "
          f"the threshold); the rule in the clear's: {bool((new == truth).all())}")  # fmt: skip
    return 0 if same and (new == truth).all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
