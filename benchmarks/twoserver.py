"""A prototype of secret-shared Dice on two non-colluding servers and a combiner, and its leak.

    .venv/bin/python benchmarks/twoserver.py [--records 1000] [--seed 1] [--r 16 --b 264]
        [--protocol-pairs 20000] [--attack graph|trilateration|both] [--known 0 50]
        [--margin 3] [--robust] [--lap 10] [--cap 20000] [--curve 50 200 1000]
        [--view dice|link-bit|buckets|candidates|links|s1|s2|roles|c-dishonest]
        [--reach-runs 0 1 4 | -1 -2 -3 -4] [--reach-uncapped] [--cuts 0.8 0.85 0.9 0.95]
        [--population synthetic|messy|households] [--bits 20 --bands 1600] [--dummies 0.5]
        [--plan 26 9357] [--s2-top 25000] [--s2-scale 2] [--pad-to 5000 [--shared-decoys]
        [--keep 1 0.5] [--decoys generator|client]]

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
import dataclasses
import hashlib
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from benchmarks.graph_attack import band_keys, with_fallback
from benchmarks.reach_attack import dishonest_combiner
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encode import EncodeReport, read_rows
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy import twocheck
from blindmatch.client.tools.privacy.graph import (
    _double_centred,
    known_pairs,
    match_graphs,
    score_matching,
)
from blindmatch.client.tools.privacy.graphcheck import upload_views
from blindmatch.client.tools.privacy.trilateration import (
    CombinerView,
    Trilateration,
    fit_model,
    trilaterate,
)
from blindmatch.client.tools.privacy.twocheck import check_members, synthetic_members
from blindmatch.matcher.core import twoblocking
from blindmatch.matcher.core.twoviews import role_views

ROOT = Path(__file__).resolve().parent.parent
Floats = npt.NDArray[np.float32]


def candidates(keys_a: np.ndarray, keys_b: np.ndarray) -> npt.NDArray[np.intp]:
    """Cross-member pairs (row in a, row in b) sharing at least one band key, in row order:
    the product of the two members' (record x band key) incidence matrices."""
    ids: dict[tuple[int, int], int] = {}
    incidence = []
    for keys in (keys_a, keys_b):
        rows, cols = [], []
        for band in range(keys.shape[1]):
            for i, k in enumerate(keys[:, band].tolist()):
                rows.append(i)
                cols.append(ids.setdefault((band, k), len(ids)))
        incidence.append((np.array(rows), np.array(cols)))
    mats = [
        sp.csr_matrix((np.ones(len(r), np.float32), (r, c)), shape=(len(keys), len(ids)))
        for (r, c), keys in zip(incidence, (keys_a, keys_b), strict=True)
    ]
    both = (mats[0] @ mats[1].T).tocoo()
    pairs = np.stack([both.row, both.col], axis=1).astype(np.intp)
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]


def protocol(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], pairs: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.float64], int, float]:
    """Run the three-party protocol on candidate pairs: (Dice at C, bytes to C, seconds)."""
    rng = np.random.default_rng(secrets.randbits(64))
    a1 = rng.integers(0, 256, size=a.shape, dtype=np.uint8)
    b1 = rng.integers(0, 256, size=b.shape, dtype=np.uint8)
    a2, b2 = a ^ a1, b ^ b1  # S1 holds a1, b1; S2 holds a2, b2
    pop_a, pop_b = np.bitwise_count(a).sum(1), np.bitwise_count(b).sum(1)  # to C
    shared_key = secrets.token_bytes(32)  # S1 and S2 only
    bits = 8 * a.shape[1]
    started = time.perf_counter()
    dice = np.empty(len(pairs))
    for k, (i, j) in enumerate(pairs.tolist()):
        seed = hashlib.blake2b(f"{i},{j}".encode(), key=shared_key, digest_size=8).digest()
        perm = np.random.default_rng(int.from_bytes(seed, "big")).permutation(bits)
        m1 = np.packbits(np.unpackbits(a1[i] ^ b1[j])[perm])  # S1 -> C
        m2 = np.packbits(np.unpackbits(a2[i] ^ b2[j])[perm])  # S2 -> C
        hamming = int(np.bitwise_count(m1 ^ m2).sum())  # C
        dice[k] = 1 - hamming / (pop_a[i] + pop_b[j])
    return dice, 2 * a.shape[1] * len(pairs), time.perf_counter() - started


def two_hop(n_a: int, n_b: int, pairs: np.ndarray, dice: np.ndarray) -> np.ndarray:
    """C's view of member A: each record's Dice to its candidates in B (0 elsewhere),
    correlated between A's records (double-centred)."""
    m = np.zeros((n_a, n_b), dtype=np.float32)
    m[pairs[:, 0], pairs[:, 1]] = dice
    m -= m.mean(axis=1, keepdims=True)
    m /= np.linalg.norm(m, axis=1, keepdims=True) + 1e-9
    return _double_centred(m @ m.T)


def sealed_view(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], bits: int, bands: int,
    fallback: tuple[npt.NDArray[np.uint8], npt.NDArray[np.uint8]] | None = None,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.int64]]:  # fmt: skip
    """The candidates (row of A, row of B) and each one's count of shared bands, through the
    shipped client's sealed band keys, S1's join and S2's expansion: the record-level CLK's,
    or with `fallback` (A's and B's fallback CLKs) both CLKs' counts added (S2 opens both)."""
    t0 = time.process_time()
    secret = secrets.token_bytes(32)
    plan = sharing.BandPlan(bits, bands)
    seal = (secrets.token_bytes(32), secrets.token_bytes(32))
    clks = [(a, b)] + ([fallback] if fallback is not None else [])
    up = [[sharing.seal_bands(sharing.record_keys(x, sharing.part_secret(secret, name) if k
                                                  else secret, plan)[0], k, sk)
           for x, sk in zip(pair, seal, strict=True)]
          for k, (name, pair) in enumerate(zip(sharing.PARTS, clks, strict=False))]  # fmt: skip
    t1 = time.process_time()
    matched = [twoblocking.join(0, 1, k, *(twoblocking.Sealed(u.counts, u.keys, u.classes, u.sealed)
                                         for u in sides))
               for k, sides in enumerate(up)]  # fmt: skip
    t2 = time.process_time()
    codes = np.concatenate([twoblocking.expanded_pairs(m, seal, (len(a), len(b))) for m in matched])
    uniq, count = np.unique(codes, return_counts=True)
    t3 = time.process_time()
    print(f"sealed band keys ({bits} bits x {bands} bands): members {t1 - t0:.0f} CPU s, S1's "
          f"join {t2 - t1:.1f} s ({sum(len(m) for m in matched):,} pairs of tokens), S2's "
          "expansion "
          f"{t3 - t2:.1f} s", flush=True)  # fmt: skip
    pairs = np.stack([(uniq >> np.uint64(32)).astype(np.intp),
                      (uniq & np.uint64(0xFFFFFFFF)).astype(np.intp)], axis=1)  # fmt: skip
    return pairs, count.astype(np.int64)


def decoy_people(gen: Any, count: int, seed: int, member: int) -> list[Any]:
    """`count` decoy people for member `member` (0: A, 1: B): the generator's people drawn
    with a seed of their own (each member its own), their entities negative (no real person's,
    and not in the attacker's plaintext)."""
    drawn = gen.population(count, random.Random(f"decoys {seed} {member}"))[:count]
    return [dataclasses.replace(p, entity=-1 - p.entity - member * 10_000_000) for p in drawn]


def client_decoys(
    folder: Path, loaded: list[Any], count: int, seed: int, shared: bool, schema: Any
) -> list[Any]:
    """A and B of `loaded` each padded with `count` decoys of the client's own synthetic
    generator (client/tools/privacy/population.py, what a client could ship), not the real
    people's: the same people in both (`shared`, each member's export its own) or each
    member's own; entities negative, shuffled in."""
    from blindmatch.client.tools.privacy import population
    from blindmatch.client.tools.privacy.graphcheck import normalised_export

    pairs = [population.write_pair(folder / f"decoys{k}", 7919 * seed + k, count, 1.0)
             for k in range(1 if shared else 2)]  # fmt: skip
    exports = [pairs[0].victim, pairs[0].attacker] if shared else [q.victim for q in pairs]
    out = []
    rng = random.Random(f"decoy order {seed}")
    for k, export in enumerate(exports):
        ids, rows = normalised_export(export, schema)
        people = [-1 - export.truth[i] for i in ids]
        both = list(zip(loaded[k][0] + rows, loaded[k][1] + people, strict=True))
        rng.shuffle(both)
        out.append(([r for r, _q in both], [q for _r, q in both]))
    return [*out, loaded[2]]


def generator_three(
    folder: Path, generator: str, seed: int, size: int, schema: object, pad_to: int = 0,
    shared_decoys: bool = False,
) -> list[tuple[list[list[str]], list[int]]]:  # fmt: skip
    """A benchmark generator's first `size` people: A's export (its first organisation's),
    B's (its second's, the same people shuffled) and the attacker's plaintext (its third's),
    read as `read_rows` reads them, with each row's person. `pad_to`: A and B each padded
    to that many records with decoy people of their own (`decoy_people`), shuffled in; the
    attacker's plaintext holds none of them; `shared_decoys`: the same decoy people in both
    (each member's export of them its own, as of real people), so that they link."""
    from benchmarks import households, messy
    from benchmarks.exports import write_export

    gen: Any = {"messy": messy, "households": households}[generator]
    rng = random.Random(seed)
    people = gen.population(size, rng)[:size]
    out = []
    for k, org in enumerate(gen.ORGS[:3]):
        chosen = list(people)
        if k < 2 and pad_to > size:
            chosen += decoy_people(gen, pad_to - size, seed, 0 if shared_decoys else k)
        rng.shuffle(chosen)
        rows = [gen.export_row(org, p, n, rng) for n, p in enumerate(chosen)]
        header = [org.id_column, *org.columns.values()]
        export = write_export(folder, org.name, header, rows, org.mapping_toml(),
                              [p.entity for p in chosen])  # fmt: skip
        mapping = load_mapping(export.mapping, schema)  # type: ignore[arg-type]
        ids, read = read_rows(export.csv, schema, mapping, EncodeReport(""))  # type: ignore[arg-type]
        out.append((read, [export.truth[i] for i in ids]))
    return out


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


def main() -> int:
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
        help="messy/households: pad A and B each to N records with decoy people of their own "
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
    args = parser.parse_args()
    schema = with_fallback(load_schema(ROOT / "schemas" / "person-uk.json"), False)
    with tempfile.TemporaryDirectory(prefix="blindmatch-2s-") as tmp:
        if args.population != "synthetic":
            own = args.decoys == "generator"
            loaded = generator_three(Path(tmp), args.population, args.seed, args.records, schema,
                                     args.pad_to if own else 0, args.shared_decoys)  # fmt: skip
            if args.pad_to > args.records and not own:
                loaded = client_decoys(Path(tmp), loaded, args.pad_to - args.records, args.seed,
                                       args.shared_decoys, schema)  # fmt: skip
        else:
            # Member A (the victim), member B (another force: half the same people), and the
            # attacker's plaintext of every person of A and B (one record a person, its own
            # errors): privacy-check --mode two-server's synthetic project.
            loaded = synthetic_members(Path(tmp), args.seed, args.records, schema)
    if args.view == "c-dishonest":
        shipped = load_schema(ROOT / "schemas" / "person-uk.json")
        dishonest_combiner(loaded, shipped, secrets.token_bytes(32), args.known, args.reach_runs,
                           cap=not args.reach_uncapped)  # fmt: skip
        return 0
    if args.view == "roles":
        # privacy-check --mode two-server's check on this population, with the shipped schema.
        shipped = load_schema(ROOT / "schemas" / "person-uk.json")
        if args.plan:
            shipped = dataclasses.replace(shipped, twoserver=(args.plan[0], args.plan[1]))
        source = f"{args.population} ({args.records} people, seed {args.seed})"
        secret = secrets.token_bytes(32)
        seen: dict[str, tuple[Any, float]] = {}

        def views(uploads: Any, threshold: float, rule: Any, label: str, dummies: float) -> Any:
            t0 = time.process_time()
            got = role_views(uploads, threshold, rule, dummies=dummies)
            seen[label] = (got, time.process_time() - t0)
            pairs, counts = got["S2"]
            if args.s2_top and len(counts) > args.s2_top:
                top = np.argsort(-counts, kind="stable")[: args.s2_top]
                pairs, counts = pairs[top], counts[top]
            return {**got, "S2": (pairs, counts * args.s2_scale)}

        label = f"plan {args.plan or 'shipped'}, dummies {args.dummies:g}"
        if args.pad_to:
            source += f", A and B padded to {args.pad_to:,} records with decoys"
        t_check = time.process_time()
        report = check_members(loaded, shipped, secret,
                               lambda u, t, r: views(u, t, r, label, args.dummies), source=source,
                               known=args.known)  # fmt: skip
        print(report.render())
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
            mine, ref = (
                {tuple(p) for p in seen[k][0]["C"][0].tolist()} for k in (label, "reference")
            )
            print(f"links: {len(mine & ref):,} in both, {len(mine - ref):,} only with {label}, "
                  f"{len(ref - mine):,} only with the reference")  # fmt: skip
        return 0
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
        for count in args.known:
            known = known_pairs(a_people, p_people, count, seed=count)
            scored = score_matching(
                match_graphs(victim, attacker, known), a_people, p_people, known
            )
            print(
                f"graph matching on C's view, {count} known pairs: {scored.rate:.1%} of A's "
                f"records (claim precision {scored.precision:.1%})",
                flush=True,
            )
    whose = {"s1": "S1", "s2": "S2"}.get(args.view, "C")
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
