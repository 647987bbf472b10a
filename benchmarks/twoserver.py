"""A prototype of secret-shared Dice on two non-colluding servers and a combiner, and its leak.

    .venv/bin/python benchmarks/twoserver.py [--records 1000] [--seed 1] [--r 16 --b 264]
        [--protocol-pairs 20000] [--attack graph|trilateration|both] [--known 0 50]
        [--margin 3] [--robust] [--lap 10] [--cap 20000] [--curve 50 200 1000]
        [--view dice|link-bit|buckets|candidates|links|s1|s2|roles|c-dishonest]
        [--reach-runs 0 1 4 | -1 -2 -3 -4] [--reach-uncapped] [--cuts 0.8 0.85 0.9 0.95]
        [--population synthetic|messy|households] [--bits 20 --bands 1600] [--dummies 0.5]
        [--plan 26 9357] [--s2-top 25000] [--s2-scale 2] [--pad-to 5000 [--shared-decoys]
        [--keep 1 0.5] [--decoys generator|client]] [--exhaustive-pairs N]
        [--partner-records M] [--roles S2] [--clear] [--clk-baseline] [--two-members] [--clk-tags]

The protocol (docs/privacy-design.md, option b), simulated in one process:

1. Each member splits each CLK x into XOR shares x1 (uniformly random) and x2 = x ^ x1, sends x1
   to server S1 and x2 to server S2, and its CLKs' popcounts to the combiner C.
2. Blocking gives cross-member candidate pairs (here: keyed-LSH band collisions, as in
   benchmarks/graph_attack.py, computed by whoever runs blocking).
3. For each candidate pair (a, b), S1 and S2 derive the same per-pair permutation pi from a key
   they share (C does not have it) and send C pi(x1_a ^ x1_b) and pi(x2_a ^ x2_b).
4. C XORs the two: pi(x_a ^ x_b), whose popcount is the Hamming distance H; Dice =
   1 - H / (|x_a| + |x_b|). The permutation leaves C only the distance, not where the bits
   differ; each share alone is uniformly random.

Printed: that C's Dice equals the plaintext Dice on every candidate pair; bytes and time per
pair; candidates per record; and two attacks on what C learns, by an attacker holding
plaintext (its own export, its own errors) on every person of A and of B:

- the graph-matching attack (each record of member A described by its Dice to its candidates
  in member B, correlated between records; the attacker builds the same view of its own
  plaintext of A's people);
- trilateration, the attack built for the bipartite view: each record of A placed by its
  Dice to B's records whose identities the attacker holds (and each of B's by its Dice to A's),
  under a model of the blocking chance and the Dice noise by the attacker's own Dice level;
  blind seeds from popcounts (C receives them) and each record's histogram of candidates' Dice;
  alternating seed propagation over both members. `--curve`: its evidence, the share of A
  placed right from k true identities of B without propagation.

`--view links`: what C learns since the circuit tests the shared popcounts and gates each
pair's rows by its link bit: the linking pairs with their buckets, and no popcount.

`--view link-bit` / `--view buckets`: the attacks on what C learns with the link-bit step
(matcher/core/linkbit.py): each candidate's link bit at the threshold (the first `--cuts`),
or its bucket among `--cuts`, in place of its Dice; C still knows which pairs are candidates
and every popcount. `--view candidates`: that alone (every candidate's value 0).

`--view s1` and `--view s2`: the two servers' views of blocking with sealed band keys
(client/encoding/sharing.py `seal_bands`, matcher/core/twoserver.py `join`, `expanded_pairs`),
the members' band keys made by the shipped client (every position in the pool, `--bits` x
`--bands`, the record-level CLK), run through the real join and expansion. S1 learns of a
record only which cross-member pairs are candidates (it relays S2's pairs and evaluates them):
`s1` is `candidates` without the popcounts (S1 never receives them). S2, which opens the
matched keys' rows, learns per candidate pair the number of bands whose keys the two records
share: `s2` reads that count c, as the agreement it implies, (c / bands)^(1 / bits), where the
other views read the Dice (the model's calibration, fitted on the true alignment, learns how it
relates to the attacker's Dice); no popcounts. (S2 also sees which records of one member share
a matched key, and the fallback CLK's counts: this attack reads neither, so it is a lower
bound on what S2's view gives.)

`--view roles`: `blindmatch privacy-check --mode two-server`'s check (client/tools/privacy/
twocheck.py `check_members`: C's, S1's and S2's views built by the run's own roles, the
shipped schema with its fallback CLK) on the `--population`'s people, at `--known`. With
`--dummies D`, S1 adds D dummy pairs of tokens a real one to what it forwards S2
(core/twoblocking.py `join`); the run then also prints the pairs through the circuit and the
links, beside the same run without dummies on the same encodings, and the CPU seconds of each.
`--plan R B`: the roles' keyed blocking, R bits x B bands, instead of the shipped schema's
`blindmatch.twoserver` (docs/privacy-design.md "Blocking density at recall 0.999": 16 x 559,
20 x 1,580, 26 x 9,357 at design recall 0.999). `--s2-top N`: the attacker on S2 keeps only
the N pairs of highest count (a denser candidate graph can hide the signal from the attack
rather than from S2: this undoes that). `--s2-scale K`: the check reads each S2 count times K
(it reads a count at each of `twocheck.S2_READINGS`, (count x reading / (2 bands))^(1 / bits)
for 0.5, 1, 2 and 4, the worst kept; K shifts them all: K = 2 with reading 1 reads
count / bands, as `--view s2` does).

`--exhaustive-pairs N` (roles): S1's cap (matcher/core/exhaustive.py): A and B of at most N
pairs are compared without blocking, and S1's and S2's views are then empty; 0 blocks them
(the view before the cap). `--partner-records M` (messy/households): B holds the generator's
first M people and A a random `--records` of them (a small member against a larger one; with
`--exhaustive-pairs 0`, or M x `--records` over the cap, the pair is blocked). `--roles S2`
(roles): attack only those roles' views (the others' attacks cost as much against a large B);
`--clear`: the roles' circuit outputs computed in the clear, as `privacy-check` computes them
(the same views, tests/test_twoclear.py; minutes of the circuit's rounds saved on large members).
`--clk-baseline` (roles): then the baseline in the same run, the graph-matching attack on A's
CLKs as a CLK project would upload them (benchmarks/clk_baseline.py), the same secret and
known pairs. `--two-members` (roles): A and B alone, without the third member M (whose
records are in no attacked view; C's view then holds no extras or reach pairs, S1's join and
memory are A's and B's alone: a large B's check within 4 GB). `--clk-tags` (roles): what the
CLK of each pair in C's view (which C learns: each proposed part's CLK, and each reach or
extras pair's that comes back 1) says of A's records (benchmarks/clk_tags.py).

`--pad-to N` (messy/households): A and B each padded to N rows with decoy people, the
generator's drawn with a seed of their own (each member's own, or with `--shared-decoys` the
same people in both, so that they link), shuffled in; the attacker's plaintext holds none, and
the check counts only real records and adds its decoy-aware attack on S2 ("decoy-aware":
twocheck.py `unpartnered_attack`, keeping of each member as many rows as it has real
people, those with the highest count to the other member). With `--view roles` the run also
prints the pairs through the circuit and the links by kind (a decoy linking a real record is
a false hit for the partner), the roles' CPU, and with `--keep SHARE ...` the same attack
keeping SHARE times as many rows (docs/privacy-design.md "(d) Decoy records"). `--decoys
client`: the decoys are the client's own synthetic people (client/tools/privacy/population.py),
not the population's.

`--population`: the synthetic pair of `privacy-check` (member B holds half of A's people), or
the first N people of benchmarks/messy.py or benchmarks/households.py: A the generator's first
organisation's export, B its second's (the same people, full overlap), the attacker's
plaintext its third's.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import twoserver_attacks, twoserver_people, twoserver_roles_check
from benchmarks.graph_attack import with_fallback
from benchmarks.reach_attack import dishonest_combiner
from blindmatch.client.encoding.schema import load_schema

ROOT = Path(__file__).resolve().parent.parent


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--b", type=int, default=264)
    parser.add_argument(
        "--protocol-pairs", type=int, default=20_000,
        help="candidate pairs run through the simulated protocol (checked and timed); the "
        "attack reads every candidate's Dice, which the check shows C computes exactly",
    )  # fmt: skip
    parser.add_argument(
        "--attack",
        choices=("graph", "trilateration", "both"),
        default="both",
        help="the graph-matching attack on C's view, the trilateration attack built for it, "
        "or both",
    )
    parser.add_argument("--known", type=int, nargs="+", default=[0, 50])
    parser.add_argument(
        "--blind-seeds",
        type=int,
        default=50,
        help="trilateration: the signature's most confident mutual best matches taken as "
        "seeds on each side (popcount and histogram of candidates' Dice)",
    )
    parser.add_argument("--margin", type=float, default=3.0, help="trilateration: nats")
    parser.add_argument("--cap", type=int, default=20_000, help="trilateration: most seeds")
    parser.add_argument(
        "--curve",
        type=int,
        nargs="*",
        default=[],
        help="trilateration's evidence: the share of A placed right with this many true "
        "identities of B as seeds (no propagation)",
    )
    parser.add_argument(
        "--robust",
        action="store_true",
        help="trilateration: self-correcting propagation (take the most confident half as many "
        "new mutual best matches as there are seeds, drop found seeds no longer mutual best)",
    )
    parser.add_argument(
        "--lap",
        type=int,
        default=0,
        metavar="ROUNDS",
        help="trilateration: Hungarian-assignment rounds after propagation (claims: the last "
        "assignment's pairs --margin nats above their row's runner-up)",
    )
    parser.add_argument(
        "--view",
        choices=[
            "dice",
            "link-bit",
            "buckets",
            "candidates",
            "links",
            "s1",
            "s2",
            "roles",
            "c-dishonest",
        ],
        default="dice",
        help="what C learns of a candidate: its Dice (the oracle), its link bit at the first "
        "--cuts, its bucket among --cuts, or nothing (candidates: which pairs are candidates); "
        "links: what C learns since the circuit gates identities by the link bit (the linking "
        "pairs and their buckets, no other candidate, no popcount); or with sealed band keys "
        "what S1 learns (the candidates, no popcounts) or S2 (each candidate's count of shared "
        "bands, no popcounts); roles: `privacy-check --mode two-server`'s check (every role's "
        "view from the run's own roles, the shipped schema, trilateration at --known) on "
        "--population; c-dishonest: C's view with the reach pairs a dishonest combiner "
        "chooses within S1's bound, --reach-runs runs of them (benchmarks/reach_attack.py)",
    )
    parser.add_argument(
        "--reach-uncapped", action="store_true",
        help="c-dishonest: S1 without its per-upload cap on extra and reach partners "
        "(matcher/core/rowledger.py): each run's bound alone, as S1 was before",
    )  # fmt: skip
    parser.add_argument(
        "--reach-runs", type=int, nargs="+", default=[0, 1, 4], metavar="RUNS",
        help="c-dishonest: runs over the same uploads whose reach pairs C chooses (0: its "
        "honest view alone; each run S1 admits one reach pair a record and other member; -1: "
        "every pair's bit at the reach cut-off and bucket, what unlimited runs could show; "
        "-2: every pair's bucket alone, what unlimited runs' extras could; -3: one run's "
        "matching of pairs that all reach the cut-off, a perfect guesser under S1's cap; -4: "
        "as many of those as S1's reach quota admits)",
    )  # fmt: skip
    parser.add_argument(
        "--population", choices=("synthetic", "messy", "households"), default="synthetic",
        help="the people: privacy-check's synthetic pair, or a benchmark generator's first N "
        "(A its first organisation's export, B its second's, the attacker its third's)",
    )  # fmt: skip
    parser.add_argument("--bits", type=int, default=20, help="s1/s2: bits a band")
    parser.add_argument("--bands", type=int, default=1600, help="s1/s2: bands")
    parser.add_argument(
        "--fallback", action="store_true",
        help="s1/s2: the fallback CLK's band keys too (S2 opens both CLKs' matched keys): a "
        "candidate's count is both CLKs' shared bands added, read as the agreement "
        "(count / 2 bands)^(1 / bits)",
    )  # fmt: skip
    parser.add_argument(
        "--dummies", type=float, default=0.0,
        help="roles: S1's dummy pairs of tokens, a share of the real ones (0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--plan", type=int, nargs=2, metavar=("BITS", "BANDS"),
        help="roles: keyed blocking of BITS x BANDS instead of the schema's",
    )  # fmt: skip
    parser.add_argument(
        "--s2-top", type=int, default=0,
        help="roles: attack only S2's N pairs of highest count (0: all)",
    )  # fmt: skip
    parser.add_argument(
        "--s2-scale", type=float, default=1.0,
        help="roles: multiply S2's counts by this before the check reads them (1: as shipped)",
    )  # fmt: skip
    parser.add_argument(
        "--pad-to", type=int, default=0, metavar="N",
        help="--view roles, messy/households: pad A and B each to N records with decoy people "
        "of their own "
        "(the generator's, another seed; the attacker's plaintext holds none); roles: the "
        "shares count real records only, and the run prints the decoys' cost and false links",
    )  # fmt: skip
    parser.add_argument(
        "--shared-decoys", action="store_true",
        help="--pad-to: the same decoy people in A and B (they link, as real people do), "
        "not each member's own",
    )  # fmt: skip
    parser.add_argument(
        "--decoys", choices=("generator", "client"), default="generator",
        help="--pad-to: decoy people from the population's own generator (another seed), or "
        "from the client's synthetic one (client/tools/privacy/population.py)",
    )  # fmt: skip
    parser.add_argument(
        "--keep", type=float, nargs="*", default=[], metavar="SHARE",
        help="--pad-to: the attacker dropping unpartnered rows (the check's 'decoy-aware' "
        "rows keep 1 x) also keeping SHARE x as many rows of each member as it has "
        "real people (one attack per SHARE)",
    )  # fmt: skip
    parser.add_argument("--cuts", type=float, nargs="+", default=[0.8, 0.85, 0.9, 0.95])
    parser.add_argument(
        "--partner-records",
        type=int,
        default=0,
        metavar="M",
        help="messy/households: B (and the attacker's plaintext) the generator's first M people, "
        "A a random --records of them (a small member against a larger one)",
    )
    parser.add_argument(
        "--exhaustive-pairs", type=int, metavar="N",
        help="roles: S1 compares members of at most N pairs without blocking (default: "
        "matcher/core/exhaustive.py's; 0: blocks every pair)",
    )  # fmt: skip
    parser.add_argument(
        "--roles", nargs="+", choices=("C", "C*", "S1", "S2"),
        help="roles: attack only these roles' views (default: every one)",
    )  # fmt: skip
    for flag, text in (
        (
            "--clear",
            "the circuit's outputs computed in the clear (matcher/core/twoclear.py, as "
            "privacy-check runs it: the same views, tests/test_twoclear.py), not its rounds",
        ),
        (
            "--clk-baseline",
            "also the graph-matching attack on A's CLKs as a CLK project uploads "
            "them (the baseline), the same secret and --known",
        ),
        (
            "--two-members",
            "a project of A and B alone, no third member (C: no extras, no reach "
            "pairs; S1's join of two members' keys)",
        ),
        (
            "--clk-tags",
            "what the CLK of each pair in C's view says of A's records (no attack "
            "reads it: its entropy, information and a claim within its class)",
        ),
    ):
        parser.add_argument(flag, action="store_true", help=f"roles: {text}")
    return parser


def main() -> int:
    parser = arguments()
    args = parser.parse_args()
    if args.pad_to and args.view != "roles":  # the attacks below know no decoy's person
        parser.error("--pad-to: with --view roles only")
    schema = with_fallback(load_schema(ROOT / "schemas" / "person-uk.json"), False)
    loaded = twoserver_people.load(args, schema)
    if args.view == "c-dishonest":
        shipped = load_schema(ROOT / "schemas" / "person-uk.json")
        dishonest_combiner(loaded, shipped, secrets.token_bytes(32), args.known, args.reach_runs,
                           cap=not args.reach_uncapped)  # fmt: skip
        return 0
    if args.view == "roles":
        twoserver_roles_check.run(args, loaded)
        return 0
    twoserver_attacks.run(args, loaded, schema)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
