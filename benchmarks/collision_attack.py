"""A stronger attack on the keyed-LSH view: collision counts modelled directly (Poisson).

    .venv/bin/python benchmarks/collision_attack.py [--records 10000] [--r 16 --bands 559]
        [--known 0 50 200] [--seed 1] [--oracle-rows 1000] [--pool informative|all]
        [--blind degree|signature|households] [--robust]
        [--population synthetic|messy|households] [--clk record|fallback|both]

The design study (docs/privacy-design.md, option a) found the graph-matching attack re-identified
0% of records from a keyed-LSH view, and said why that might be the attack's fault: it was built
for dense similarity graphs. This attacker models what the view is. The matcher holds, for each
pair (i, j) of one member's records, c_ij: the number of bands whose keys are equal. A band of r
bit positions collides for a pair that agrees on A of the M informative bits with chance
P(A) = prod_{k<r} (A - k) / (M - k) (positions drawn from the secret are unknown to the attacker,
so it averages over them), so c_ij ~ Poisson(L * P(A_ij)) for L bands. The attacker holds
plaintext on the same people (another organisation's export, its own errors,
client/tools/privacy/population.py `write_pair`), encodes it under its own key with the public
schema, and computes for each pair of its own records (p, q) the expected count
lambda_pq = L * P(A_pq).

Seeds (known pairs, or blind ones) then propagate: the log-likelihood that victim record i is
attacker record p is sum over seeds (k, s) of c_ik log lambda_ps - lambda_ps (Poisson, up to
terms that do not depend on p). Each round the mutual best matches whose margin over the
runner-up in row and column is at least `--margin` nats join the seeds (most confident first, at
most as many as there are seeds, so a wrong start cannot snowball at once). The attacker claims
every seed it found and every final mutual best match with that margin.

Blind seeds (`--blind`): `degree`, each record's degree (its collisions summed) and its number
of records it collides with at least twice, against their expectations under lambda (Poisson),
matched by margin; `signature`, the likelihood of each record's whole histogram of counts (how
many records it shares exactly k bands with) given an attacker record's expected histogram;
`households`, the victim's most-collided pairs (household members, relatives, namesakes,
near-duplicates) matched to the attacker's pairs with the largest lambda by the count's
likelihood ratio plus both ends' signatures. `signature` and `households` seeds are added to
the known pairs too. `--robust`: self-correcting propagation (sparse products: it finishes at
10^4 records in about a minute of CPU).

`--clk`: which CLK's band keys the view holds. Under the default schema every record has two
CLKs (record-level, and the DOB-free fallback, `blindmatch.fallback`), each shared and blocked
with band keys of its own (client/encoding/sharing.py `shared_upload`: positions and keys from
`part_secret`), and the blocking server holds both for the same record: `both` attacks them
together (each seed's Poisson terms from both views added; the blind seeds read the summed
counts). `--population`: whose records: `population.write_pair`'s (the synthetic data of
`privacy-check`), or the first N people of benchmarks/messy.py or benchmarks/households.py
(whole households: parents, siblings and twins sharing a surname, a postcode and dates in the
one export), the victim's export written by the generator's first organisation and the
attacker's by its second (its conventions and errors), full overlap.

`--view`: whose view. `record-keys` (the default): S1 holding every record's band keys, the
upload format before sealed band keys. `s1`: S1 with sealed band keys (client/encoding/sharing.py
`seal_bands`): each band's distinct keys once, with no record behind them, so it holds no count
for any pair of one member's records (every c_ij is 0; what it learns of records, the
cross-member candidates, is attacked by benchmarks/twoserver.py `--view s1`). `s2`: S2, which
opens the tokens of the keys S1 matched across members (member B: the generator's third
organisation's export of the same people; needs `--population messy` or `households`): each
token once, so c_ij counts only the bands where the victim's key has more slots than B's has
copies and S2 sees B's token reused for slots of i and j (`victim_counts`). `s2-lists`: what
S2 would see opening each matched key's rows as one list (the first design of the sealed
keys): every band whose key B also holds.

`--oracle-rows`: an upper bound on what any propagation can reach. For that many victim records,
every *other* record's identity is given as a seed, and the share whose true identity scores
best is printed (with the all-identities seeds, this is the view's evidence ceiling).

Also printed: the view's recall at Dice >= 0.8 is not measured here (benchmarks/keyedblocking.py
does, on realistic encodings); the band setting is the one it found for recall 0.999 at 10^6.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from benchmarks import households, messy
from benchmarks.exports import Export, write_export
from benchmarks.graph_attack import with_fallback
from benchmarks.keyedblocking import bits_little
from blindmatch.client.encoding.encode import EncodeReport, read_rows
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.encoding.sharing import PARTS, band_positions, part_secret, size_class
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.collisions import View, attack, blind_seeds, expected_counts
from blindmatch.client.tools.privacy.graph import known_pairs
from blindmatch.client.tools.privacy.graphcheck import upload_views
from blindmatch.client.tools.privacy.trilateration import mutual_best
from blindmatch.matcher.core import blocking

ROOT = Path(__file__).resolve().parent.parent
Floats = npt.NDArray[np.float32]


POOL = "informative"  # or "all": every position, as the shipped client draws them
MIN_COPIES = 2  # --min-copies: a floor on each slot's copies (2: as shipped)
OTHER: Export | None = None  # generator_pair's third organisation's export (--view s2's B)


def informative_mask(clks: npt.NDArray[np.uint8]) -> npt.NDArray[np.bool_]:
    """Bits set in 2-95% of one's own records (the planner's rule), or every bit when the
    pool is "all" (what the two-server client on main ships: members cannot agree on a
    data-dependent pool)."""
    freq = bits_little(clks).mean(axis=0)
    if POOL == "all":
        return np.ones(len(freq), dtype=np.bool_)
    return (freq >= blocking.SPARSE_BIT) & (freq <= blocking.DENSE_BIT)


def victim_counts(
    clks: npt.NDArray[np.uint8], r: int, bands: int, key: bytes,
    other: npt.NDArray[np.uint8] | None = None, tokens: bool = False,
) -> sp.csr_matrix:  # fmt: skip
    """The matcher's view: c_ij, the bands (r informative positions each, drawn from the
    secret by the shipped client's `band_positions`) in which records i and j have equal keys.
    Equal HMACs are equal bits (up to a 2^-64 chance), so the keys here are the bits themselves.
    With `other` (another member's CLKs): only the keys that member holds too in the band (what
    S2 would see opening a matched key's rows as one list). With `tokens` too, only what S2
    sees of the shipped sealed band keys (client/encoding/sharing.py `seal_bands`, core/
    twoserver.py `join`): a matched key's tokens are each opened once, except that where the
    victim's key has more slots than the other member's has copies, the other's tokens are
    reused and link the victim's slots s and s' with s = s' modulo those copies."""
    bits = bits_little(clks)
    other_bits = None if other is None else bits_little(other)
    pool = np.flatnonzero(informative_mask(clks))
    weights = (1 << np.arange(r, dtype=np.int64)).astype(np.int64)
    rows, cols = [], []
    groups = 0
    n = len(clks)
    for pos in band_positions(key, pool, r, bands):
        keys = bits[:, pos].astype(np.int64) @ weights
        _u, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        shared = counts[inverse] >= 2
        if other_bits is not None:
            theirs: npt.NDArray[np.int64] = np.asarray(
                other_bits[:, pos].astype(np.int64) @ weights
            )
            shared &= np.isin(keys, theirs)
            if tokens:
                their_u, their_n = np.unique(theirs, return_counts=True)
                held_b = np.zeros(len(_u), dtype=np.int64)
                at: npt.NDArray[np.intp] = np.asarray(np.searchsorted(their_u, _u))
                ok = (at < len(their_u)) & (their_u[np.minimum(at, len(their_u) - 1)] == _u)
                held_b[ok] = their_n[at[ok]]
                copies_b = np.clip(
                    np.power(4, size_class(np.maximum(held_b, 1)).astype(np.int64)), MIN_COPIES, 16
                )
                # each victim row's slot: its rank among its key's rows (rows ascending)
                order = np.lexsort((np.arange(len(keys)), inverse))
                rank = np.empty(len(keys), dtype=np.int64)
                first = np.searchsorted(inverse[order], inverse[order])
                rank[order] = np.arange(len(keys)) - first
                residue = rank % copies_b[inverse]
                # rows of one key and one residue are linked; a key's own id otherwise
                inverse = inverse * 16 + residue
                _g, inverse, counts = np.unique(inverse, return_inverse=True, return_counts=True)
                shared &= counts[inverse] >= 2
        rows.append(np.flatnonzero(shared))
        cols.append(groups + inverse[shared])
        groups += len(counts)
    r_idx, c_idx = np.concatenate(rows), np.concatenate(cols)
    e = sp.csr_matrix((np.ones(len(r_idx), np.float32), (r_idx, c_idx)), shape=(n, groups))
    c = (e @ e.T).tocsr()
    c.setdiag(0)
    c.eliminate_zeros()
    return c


def signature_ll(c: sp.csr_matrix, lam: Floats, top: int = 8) -> Floats:
    """(victim i, attacker p): log-likelihood of i's histogram of counts (how many records it
    shares exactly k bands with, k = 1 .. top-1, and >= top) given p's expected histogram under
    lambda (each bin Poisson). The structural signature a count view gives without a seed: it
    generalises degree and 'collided twice', and weighs near-duplicates (households, relatives,
    namesakes: the records sharing many bands) most."""
    n = c.shape[0]
    hist = np.zeros((n, top), dtype=np.float32)
    coo = c.tocoo()
    k = np.minimum(coo.data.astype(np.int64), top) - 1
    np.add.at(hist, (coo.row, k), 1.0)
    expected = np.zeros((n, top), dtype=np.float64)
    below = np.zeros_like(lam)
    term = np.exp(-lam)  # P(count 0)
    for kk in range(1, top):
        term = term * lam / kk  # P(count kk)
        below += term
        expected[:, kk - 1] = term.sum(axis=1)
    tail = 1 - np.exp(-lam) - below
    expected[:, top - 1] = np.clip(tail, 0, None).sum(axis=1)
    expected = np.maximum(expected, 1e-3)
    ll = hist @ np.log(expected).T.astype(np.float32) - expected.sum(axis=1)[None, :]
    return ll.astype(np.float32)


def signature_seeds(ll: Floats, count: int) -> dict[int, int]:
    """The `count` mutual best matches of the signature with the largest margins."""
    return {i: p for _m, i, p in mutual_best(ll, {}, 0.0)[:count]}


def household_seeds(
    c: sp.csr_matrix, lam: Floats, ll: Floats, count: int, pairs: int = 400
) -> dict[int, int]:
    """Seeds from households: the victim's `pairs` most-collided pairs (near-duplicates,
    relatives, namesakes sharing many bands) against the attacker's most expected-to-collide
    pairs, each candidate pair of pairs scored by the Poisson likelihood ratio of the pair's
    count plus both ends' signatures (both orientations). Pairs of pairs are taken most
    confident first (margin over the runner-up), never reusing a record; `count` seeds."""
    upper = sp.triu(c, k=1).tocoo()
    order = np.argsort(-upper.data)[:pairs]
    vi, vj, vc = upper.row[order], upper.col[order], upper.data[order].astype(np.float64)
    flat = np.triu(lam, k=1).ravel()
    top = np.argpartition(-flat, 10 * pairs)[: 10 * pairs]
    del flat
    ap, aq = np.unravel_index(top, lam.shape)
    al = lam[ap, aq].astype(np.float64)
    background = float(lam.mean())
    pois = vc[:, None] * np.log(al[None, :] / background) - (al[None, :] - background)
    straight = pois + ll[vi][:, ap] + ll[vj][:, aq]
    crossed = pois + ll[vi][:, aq] + ll[vj][:, ap]
    flip = crossed > straight
    best = np.where(flip, crossed, straight)
    ranked = np.sort(best, axis=1)
    margin = ranked[:, -1] - ranked[:, -2]
    chosen: dict[int, int] = {}
    used: set[int] = set()
    for row in np.argsort(-margin):
        col = int(np.argmax(best[row]))
        p, q = (aq[col], ap[col]) if flip[row, col] else (ap[col], aq[col])
        i, j = int(vi[row]), int(vj[row])
        if {i, j} & set(chosen) or {int(p), int(q)} & used:
            continue
        chosen[i], chosen[j] = int(p), int(q)
        used.update((int(p), int(q)))
        if len(chosen) >= count:
            break
    return chosen


def oracle(views: list[View], truth: npt.NDArray[np.intp], rows: int, seed: int) -> float:
    """Share of sampled victim records whose true identity scores best when every other
    record's identity is a seed."""
    rng = np.random.default_rng(seed)
    n = views[0][0].shape[0]
    sample = rng.choice(n, min(rows, n), replace=False)
    score = np.zeros((len(sample), n), dtype=np.float32)
    for c, lam in views:
        dense = c[sample].toarray().astype(np.float32)  # (rows, n): counts to every record
        log_lam = np.log(lam)[truth]  # row k: lambda of seed k's true identity to every p
        # every record but i itself is a seed (c_ii = 0 leaves its count term out; its
        # lambda term is added back)
        score += dense @ log_lam - lam[truth].sum(axis=0)[None, :] + lam[truth[sample]]
    return float((np.argmax(score, axis=1) == truth[sample]).mean())


def ceiling_curve(
    views: list[View], truth: npt.NDArray[np.intp], rows: int, counts: list[int]
) -> list[tuple[int, float]]:
    """With k random true seeds: the share of (other) sampled records whose true identity
    scores best among all attacker records."""
    rng = np.random.default_rng(5)
    n = views[0][0].shape[0]
    order = rng.permutation(n)
    sample, rest = order[:rows], order[rows:]
    out = []
    for k in counts:
        seeds = rest[: min(k, len(rest))]
        score = np.zeros((len(sample), n), dtype=np.float32)
        for c, lam in views:
            dense = c[sample][:, seeds].toarray().astype(np.float32)
            score += dense @ np.log(lam)[truth[seeds]] - lam[truth[seeds]].sum(axis=0)[None, :]
        out.append((len(seeds), float((np.argmax(score, axis=1) == truth[sample]).mean())))
    return out


def generator_pair(
    folder: Path, generator: str, seed: int, size: int
) -> tuple[Export, Export, dict[int, int]]:
    """The victim's export of `size` people of a benchmark generator (benchmarks/messy.py,
    benchmarks/households.py: its first organisation's conventions and errors) and the
    attacker's plaintext on the same people (its second organisation's export: its own
    conventions and errors; full overlap, shuffled). The people are the generator's first
    `size`: for households.py whole households (parents, siblings, twins sharing surname,
    postcode and dates), every member of each in the one export, the most within-member
    near-duplicates a member can hold. Also returned: each person's household (messy.py's
    people each live alone), to tell how many right claims are a known person's relatives."""
    gen = {"messy": messy, "households": households}[generator]
    rng = random.Random(seed)
    people = gen.population(size, rng)
    held = list(people)
    rng.shuffle(held)
    out = []
    other = list(people)
    rng.shuffle(other)
    for org, chosen in zip(gen.ORGS[:3], (people, held, other), strict=False):
        rows = [gen.export_row(org, p, n, rng) for n, p in enumerate(chosen)]
        header = [org.id_column, *org.columns.values()]
        entities = [p.entity for p in chosen]
        out.append(write_export(folder, org.name, header, rows, org.mapping_toml(), entities))
    home = {p.entity: getattr(p, "household", p.entity) for p in people}
    global OTHER
    OTHER = out[2]
    return out[0], out[1], home


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--bands", type=int, default=559)
    parser.add_argument("--known", type=int, nargs="+", default=[0, 50, 200])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--margin", type=float, default=3.0, help="nats")
    parser.add_argument("--cap", type=int, default=3000, help="most seeds propagated")
    parser.add_argument("--oracle-rows", type=int, default=1000)
    parser.add_argument("--robust", action="store_true", help="self-correcting propagation")
    parser.add_argument(
        "--blind",
        choices=("degree", "signature", "households"),
        default="degree",
        help="blind seeding: degree and twice-collided counts (the first attacker); the "
        "histogram-of-counts signature's most confident mutual best matches; or households "
        "(the most-collided pairs matched to the attacker's most expected pairs, with both "
        "ends' signatures). signature/households seeds are added to known pairs too",
    )
    parser.add_argument("--blind-seeds", type=int, default=50, help="blind seeds wanted")
    parser.add_argument(
        "--pool",
        choices=("informative", "all"),
        default="informative",
        help="positions bands draw from: the informative bits (set in 2-95%% of records), or "
        "every bit (what the shipped two-server client draws from)",
    )
    parser.add_argument(
        "--curve", type=int, nargs="*", default=[50, 200, 1000, 3000],
        help="true seeds for the evidence curve",
    )  # fmt: skip
    parser.add_argument(
        "--population",
        choices=("synthetic", "messy", "households"),
        default="synthetic",
        help="the people: population.write_pair's (privacy-check's synthetic data), or the "
        "first N of benchmarks/messy.py's or benchmarks/households.py's (whole households), "
        "the victim's export by the generator's first organisation, the attacker's by its "
        "second",
    )
    parser.add_argument(
        "--clk",
        choices=("record", "fallback", "both"),
        default="record",
        help="whose band keys the blocking server's view holds: the record-level CLK's, the "
        "fallback (DOB-free) CLK's, or both side by side (what S1 holds for every record "
        "under the default schema); each CLK's bands drawn as the shipped client draws them "
        "(sharing.part_secret per CLK)",
    )
    parser.add_argument(
        "--view", choices=("record-keys", "s1", "s2", "s2-lists"), default="record-keys",
        help="whose view: S1 holding every record's band keys (the format before sealed band "
        "keys); S1 with sealed band keys (each band's distinct keys once: no pair of one "
        "member's records, so every count is 0); or S2, which opens the rows of the keys S1 "
        "matched across members: the victim's pairs sharing a key that member B (the "
        "generator's third organisation's export of the same people) holds too in the band",
    )  # fmt: skip
    parser.add_argument(
        "--min-copies", type=int, default=2,
        help="s2: at least this many copies of every slot (2, as shipped; 1: a key's copies "
        "its slots, half the tokens of the keys one record holds)",
    )  # fmt: skip
    args = parser.parse_args()
    global POOL, MIN_COPIES
    MIN_COPIES = args.min_copies
    POOL = args.pool
    t0 = time.process_time()
    parts = {"record": [0], "fallback": [1], "both": [0, 1]}[args.clk]
    schema = with_fallback(load_schema(ROOT / "schemas" / "person-uk.json"), args.clk != "record")
    with tempfile.TemporaryDirectory(prefix="blindmatch-ca-") as tmp:
        if args.population == "synthetic":
            pair = population.write_pair(Path(tmp), args.seed, args.records, 1.0)
            exports = tuple(Export(e.csv, e.mapping, e.truth) for e in (pair.victim, pair.attacker))
            home: dict[int, int] = {}
        else:
            victim, attacker, home = generator_pair(
                Path(tmp), args.population, args.seed, args.records
            )
            exports = (victim, attacker)
            if args.view.startswith("s2"):
                assert OTHER is not None
                exports = (victim, attacker, OTHER)
        if args.view.startswith("s2") and args.population == "synthetic":
            raise SystemExit("--view s2 needs --population messy or households")
        data = []
        for export in exports:
            ids, rows = read_rows(
                export.csv, schema, load_mapping(export.mapping, schema), EncodeReport("")
            )
            data.append((rows, [export.truth[i] for i in ids]))
    (v_rows, v_people), (a_rows, a_people) = data[:2]
    key_v, key_a = secrets.token_bytes(32), secrets.token_bytes(32)
    v_clks = upload_views(schema, v_rows, key_v, NONE)
    b_clks = upload_views(schema, data[2][0], key_v, NONE) if len(data) > 2 else None
    a_clks = upload_views(schema, a_rows, key_a, NONE)
    where = {p: j for j, p in enumerate(a_people)}
    truth = np.array([where[p] for p in v_people], dtype=np.intp)
    n = len(v_rows)
    rng = np.random.default_rng(0)
    pi, pj = rng.integers(0, n, 2_000_000), rng.integers(0, n, 2_000_000)
    keep = pi != pj
    pi, pj = pi[keep], pj[keep]
    views: list[View] = []
    for k in parts:
        other = None if b_clks is None else b_clks[k]
        c = victim_counts(v_clks[k], args.r, args.bands, part_secret(key_v, PARTS[k]), other,
                          tokens=args.view == "s2")  # fmt: skip
        if args.view == "s1":
            c = sp.csr_matrix(c.shape, dtype=np.float32)  # S1: no pair of one member's records
        lam = expected_counts(a_clks[k], args.r, args.bands, informative_mask(a_clks[k]))
        views.append((c, lam))
        counts = np.asarray(c[pi, pj]).ravel()
        corr = float(np.corrcoef(counts, lam[truth[pi], truth[pj]])[0, 1]) if c.nnz else 0.0
        print(
            f"{args.view} view: "
            f"{n:,} victim records ({args.population}), {PARTS[k]} CLK, r={args.r} x "
            f"{args.bands} bands on {args.pool} bits: "
            f"{c.nnz / (n * (n - 1)):.2%} of pairs share a band, "
            f"mean count {c.sum() / (n * (n - 1)):.4f}, "
            f"{(c >= 8).nnz // 2:,} pairs share >= 8 bands; "
            f"correlation of the view's counts with the attacker's expected counts (true "
            f"alignment) {corr:.3f}; setup {time.process_time() - t0:.0f} CPU s",
            flush=True,
        )
    del v_clks, a_clks
    # Blind seeding reads one count a pair: the views' counts summed (a sum of independent
    # Poisson counts is Poisson with the summed mean).
    c, lam = views[0] if len(views) == 1 else (views[0][0] + views[1][0], views[0][1] + views[1][1])
    if args.oracle_rows:
        t1 = time.process_time()
        ceiling = oracle(views, truth, args.oracle_rows, args.seed)
        print(
            f"evidence ceiling: every other record's identity known, the true identity scores "
            f"best among all {n:,} attacker records for {ceiling:.1%} of "
            f"{min(args.oracle_rows, n):,} records "
            f"({time.process_time() - t1:.0f} CPU s)",
            flush=True,
        )
        for k, share in ceiling_curve(views, truth, args.oracle_rows, args.curve):
            print(f"  with {k:,} true seeds: {share:.1%}", flush=True)
    ll = None
    if args.blind != "degree":
        ll = sum((signature_ll(cv, lv) for cv, lv in views), np.zeros((n, n), np.float32))
    for count in args.known:
        t1 = time.process_time()
        known = known_pairs(v_people, a_people, count, seed=count) if count else {}
        blind: dict[int, int] = {}
        if ll is not None:
            if args.blind == "signature":
                blind = signature_seeds(ll, args.blind_seeds)
            else:
                blind = household_seeds(c, lam, ll, args.blind_seeds)
        elif not count:
            blind = blind_seeds(c, lam, args.blind_seeds)
        blind = {i: p for i, p in blind.items() if i not in known and p not in set(known.values())}
        if blind:
            good = sum(1 for i, p in blind.items() if truth[i] == p)
            print(
                f"  {args.blind} blind seeds: {len(blind)}, {good} right "
                f"({time.process_time() - t1:.0f} CPU s)",
                flush=True,
            )
        start = {**blind, **known}
        claims = attack(views, start, args.margin, args.cap, args.robust, fixed=set(known))
        if count:
            claims = {i: p for i, p in claims.items() if i not in known}
        right = sum(1 for i, p in claims.items() if truth[i] == p)
        covered = n - count
        if home and count:
            homes = {home[v_people[i]] for i in known}
            kin = sum(1 for i, p in claims.items() if truth[i] == p and home[v_people[i]] in homes)
            print(f"  right claims in a known person's household: {kin} of {right}", flush=True)
        print(
            f"{'blind' if not count else f'{count} known pairs'}: {right / covered:.2%} of records "
            f"re-identified ({right} of {covered:,}; {len(claims)} claims, precision "
            f"{right / len(claims) if claims else 1:.1%}; {time.process_time() - t1:.0f} CPU s)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
