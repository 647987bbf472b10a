"""The query-side views of benchmarks/twoserver_queries.py beyond one stream (a part of it,
not a script; docs/privacy-design.md "Repeated queries, a watch's re-uploads and C's counts,
attacked"):

- **repeats** (`--repeats R`, `--retype`): each queried person asked R times, each time a
  query of its own (exact copies of one record, or with `--retype` each time another
  organisation's re-typing of it, `population.noisy_copy`); the views of every query put
  together, then **merged** as an attacker that links a person's repeats would merge them
  (`merge_repeats`: S2's counts averaged over the repeats, a pair missing from a repeat
  counted 0; S1's pairs united; C's buckets, the highest): the attack then runs on one row a
  person, against a stream of the same people asked once (`--queries Q/R`, same `--seed`);
- **re-uploads** (`--uploads K`, `--churn c`): the queries are a standing watch (one batch),
  compared with each of K successive uploads of the partner, each after the first with a share
  `c` of its records re-typed; the views of every comparison put together on the distinct
  records (`merge_uploads`: an unchanged record is one row, as an attacker that links a
  partner's rows across uploads by their identical counts would hold it);
- **counts** (`--count-measure`): what C learns of each single-record query beyond its links,
  the pairs S1 proposed against the partner on each CLK (`candidate_counts`, from the band
  keys: S1's candidates, split by the fallback's rule), measured as information
  (`count_measure`): how many people share a query's count when every person's count is known
  (an attacker holding the project secret: the bound), and how often an attacker simulating
  the counts under its own key on its own plaintext names the right person;
- **S1's keys** (`--s1-stream`): a single-record query's sealed band keys are all its record's,
  so over a stream S1 sees on how many bands every two queried records agree
  (`s1_stream_view`), the within-member view the collision attack reads.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.twokeys import Keys, band_keys
from blindmatch.matcher.core.twoblocking import PairBatch, fallback_split

Member = tuple[list[list[str]], list[int]]
Views = dict[str, tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]]


def kinds(schema: Any) -> list[str]:
    return [rule.kind for rule in schema.rules]


def repeated(queries: Member, repeats: int, retype: bool, schema: Any, seed: int) -> Member:
    """The stream of `queries` asked `repeats` times: repeat r is rows r*D .. r*D + D - 1 (D
    distinct people), the first the records themselves, each later one the same records or,
    `retype`, another organisation's re-typing of them (`population.noisy_copy`, a seed a
    repeat)."""
    rows, people = queries
    out_rows = [list(r) for r in rows]
    for r in range(1, repeats):
        again = population.noisy_copy(rows, kinds(schema), seed=1000 * seed + r) if retype else rows
        out_rows += [list(x) for x in again]
    return out_rows, list(people) * repeats


def merge_repeats(views: Views, distinct: int, repeats: int) -> Views:
    """The views of `repeats` x `distinct` query rows (row i is person i % distinct) on one
    row a person: S2's counts the mean over the repeats (0 where a repeat shares no band),
    S1's pairs united, C's buckets the highest, S2's own-row pairs (`S2 A:k`) between
    different people, the most tokens."""
    out: Views = {}
    for role, (pairs, values) in views.items():
        pairs = np.asarray(pairs, np.intp).reshape(-1, 2)
        if role == "members not blocked":
            out[role] = (pairs, values)
            continue
        mapped = pairs.copy()
        mapped[:, 0] %= distinct
        if role.startswith("S2 A:"):
            mapped[:, 1] %= distinct
            keep = mapped[:, 0] != mapped[:, 1]
            mapped = np.sort(mapped[keep], axis=1)
            values = values[keep]
        how = "mean" if role == "S2" else "max"
        out[role] = _reduce(mapped, values, how, repeats)
    return out


def _reduce(pairs: npt.NDArray[np.intp], values: npt.NDArray[np.float64], how: str,
            repeats: int = 1) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]:  # fmt: skip
    if not len(pairs):
        return pairs.reshape(-1, 2), np.empty(0)
    codes = (pairs[:, 0].astype(np.int64) << 32) | pairs[:, 1].astype(np.int64)
    uniq, inverse = np.unique(codes, return_inverse=True)
    if how == "mean":
        got = np.zeros(len(uniq))
        np.add.at(got, inverse, values)
        got /= repeats
    else:
        got = np.full(len(uniq), -np.inf)
        np.maximum.at(got, inverse, values)
    rows = np.stack([uniq >> 32, uniq & 0xFFFFFFFF], axis=1).astype(np.intp)
    return rows, got


def repeat_links(views: Views, distinct: int, repeats: int) -> dict[str, int]:
    """What lets S2 link a person's repeats: of the people with a non-empty S2 view, those
    whose every repeat's counts (partner row, count) are the first's (`same`), and those whose
    first's counts no other person's first has (`unique`): exact repeats S2 links by equality."""
    pairs, counts = views["S2"]
    seen: list[dict[int, list[tuple[int, int]]]] = [{} for _ in range(repeats)]
    for (i, j), c in zip(pairs.tolist(), counts.tolist(), strict=True):
        seen[i // distinct].setdefault(i % distinct, []).append((j, int(c)))
    firsts = {p: tuple(sorted(v)) for p, v in seen[0].items()}
    same = sum(
        1 for p, v in firsts.items()
        if all(tuple(sorted(seen[r].get(p, []))) == v for r in range(1, repeats))
    )  # fmt: skip
    counted = Counter(firsts.values())
    unique = sum(1 for v in firsts.values() if counted[v] == 1)
    return {"people": distinct, "seen": len(firsts), "same": same, "unique": unique}


def reuploads(partner: Member, uploads: int, churn: float, schema: Any,
              seed: int) -> tuple[list[Member], list[list[int]], Member]:  # fmt: skip
    """The partner's `uploads` successive uploads (the first its records; each later one the
    one before with a share `churn` of its rows re-typed from the first's, a fresh re-typing
    each upload), each upload's rows' ids among the distinct records, and those records (rows,
    people): an unchanged record is one record however many uploads hold it."""
    rows, people = partner
    rng = random.Random(f"reuploads {seed}")
    current = [list(r) for r in rows]
    ids_of: dict[tuple[int, tuple[str, ...]], int] = {}
    distinct: Member = ([], [])
    out, ids = [], []
    for t in range(uploads):
        if t:
            picked = sorted(rng.sample(range(len(rows)), round(churn * len(rows))))
            again = population.noisy_copy([rows[k] for k in picked], kinds(schema),
                                          seed=7919 * seed + t)  # fmt: skip
            for k, row in zip(picked, again, strict=True):
                current[k] = list(row)
        mine = []
        for row, person in zip(current, people, strict=True):
            key = (person, tuple(row))
            if key not in ids_of:
                ids_of[key] = len(distinct[0])
                distinct[0].append(list(row))
                distinct[1].append(person)
            mine.append(ids_of[key])
        out.append(([list(r) for r in current], list(people)))
        ids.append(mine)
    return out, ids, distinct


def merge_uploads(per_upload: Sequence[Views], ids: Sequence[Sequence[int]],
                  by_row: bool = False) -> Views:  # fmt: skip
    """Each upload's views with its partner rows as distinct records' ids, put together (a
    pair seen in several uploads once, its highest value: an unchanged record's count is the
    same each upload; S2's own-row pairs `S2 A:k` of the watch, the most tokens). `by_row`:
    `ids` are rows of one record a row across uploads (a partner that uploads its export again
    in the same order), S2's counts averaged over the uploads as `merge_repeats` averages."""
    parts: dict[str, list[tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]]] = {}
    for views, mine in zip(per_upload, ids, strict=True):
        where = np.asarray(mine, np.intp)
        for role, (pairs, values) in views.items():
            pairs = np.asarray(pairs, np.intp).reshape(-1, 2)
            if role != "members not blocked" and not role.startswith("S2 A:") and len(pairs):
                pairs = np.stack([pairs[:, 0], where[pairs[:, 1]]], axis=1)
            parts.setdefault(role, []).append((pairs, values))
    out: Views = {}
    for role, got in parts.items():
        pairs = np.concatenate([p for p, _ in got]).reshape(-1, 2)
        values = np.concatenate([v for _, v in got])
        if role == "members not blocked":
            out[role] = got[0]
        else:
            how = "mean" if by_row and role == "S2" else "max"
            out[role] = _reduce(pairs, values, how, len(per_upload))
    return out


def candidate_counts(
    mine: Keys, theirs: Keys
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """For each of `mine`'s records: ((records, CLKs) the partner records S1 proposes with it on
    each CLK, blocked (the pairs sharing a band key on that CLK, split by the fallback's rule,
    core/twoblocking.py `fallback_split`: what C counts of a single-record query's parts),
    (records,) those sharing a key on any CLK (S1's candidates, `role_views`' S1 view))."""
    (keys_a, lack_a), (keys_b, lack_b) = mine, theirs
    n_a = len(lack_a)
    batches, every = [], []
    for clk, (a, b) in enumerate(zip(keys_a, keys_b, strict=True)):
        pairs = _shared(a, b)
        every.append(pairs)
        batches.append(PairBatch(0, 1, clk, (pairs >> 32).astype(np.uint32),
                                 (pairs & 0xFFFFFFFF).astype(np.uint32)))  # fmt: skip
    lacking = None if len(keys_a) < 2 else [lack_a, lack_b]
    out = np.zeros((n_a, len(keys_a)), np.int64)
    for part in fallback_split(batches, lacking):
        np.add.at(out[:, part.clk], part.rows_a.astype(np.intp), 1)
    union = np.unique(np.concatenate(every))
    return out, np.bincount((union >> 32).astype(np.intp), minlength=n_a).astype(np.int64)


def per_partner(mine: Keys, theirs: Keys, partners: int) -> npt.NDArray[np.int64]:
    """`candidate_counts` against `partners` partners, `theirs`' records cut into that many
    consecutive uploads, side by side ((records, partners x CLKs)): what C learns of a
    single-record query searched against each partner's upload."""
    keys, lack = theirs
    cuts = np.linspace(0, len(lack), partners + 1).astype(int)
    return np.hstack([
        candidate_counts(mine, (tuple(k[lo:hi] for k in keys), lack[lo:hi]))[0]
        for lo, hi in itertools.pairwise(cuts)
    ])  # fmt: skip


def s1_stream_view(keys: Keys) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.float64]]]:
    """What S1 holds of a stream of single-record queries beyond any partner: each query's band
    keys are one record's, so for every pair (i, j), i < j, of queries it sees on how many
    bands of each CLK their keys are equal (each query a member of its own at S1, whose
    cross-member equalities it joins by design): per CLK, the pairs sharing a band and their
    counts, the within-member view the collision attack reads (collisions.py)."""
    out = []
    for a in keys[0]:
        codes: list[npt.NDArray[np.int64]] = [np.empty(0, np.int64)]
        counts: list[npt.NDArray[np.int64]] = [np.empty(0, np.int64)]
        pending = 0
        for band in range(a.shape[1]):
            order = np.argsort(a[:, band], kind="stable")
            key = a[order, band]
            new = np.r_[True, key[1:] != key[:-1]]
            starts = np.flatnonzero(new)
            sizes = np.diff(np.r_[starts, len(key)])
            for at, size in zip(starts[sizes > 1].tolist(), sizes[sizes > 1].tolist(), strict=True):
                rows = np.sort(order[at : at + size])
                i, j = np.triu_indices(size, k=1)
                codes.append((rows[i].astype(np.int64) << 32) | rows[j].astype(np.int64))
                counts.append(np.ones(len(i), np.int64))
                pending += len(i)
            if pending > 5_000_000:
                codes, counts = _merged(codes, counts)
                pending = 0
        got, sums = _merged(codes, counts)
        pairs = np.stack([got[0] >> 32, got[0] & 0xFFFFFFFF], axis=1).astype(np.intp)
        out.append((pairs.reshape(-1, 2), sums[0].astype(np.float64)))
    return out


Codes = list[npt.NDArray[np.int64]]


def _merged(codes: Codes, counts: Codes) -> tuple[Codes, Codes]:
    uniq, inverse = np.unique(np.concatenate(codes), return_inverse=True)
    total = np.zeros(len(uniq), np.int64)
    np.add.at(total, inverse, np.concatenate(counts))
    return [uniq], [total]


def _shared(a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64]) -> npt.NDArray[np.int64]:
    """The pairs (row of a << 32 | row of b) sharing a key in at least one band, once."""
    codes: list[npt.NDArray[np.int64]] = [np.empty(0, np.int64)]
    side = np.concatenate([np.zeros(len(a), bool), np.ones(len(b), bool)])
    index = np.concatenate([np.arange(len(a)), np.arange(len(b))])
    for band in range(a.shape[1]):
        both = np.concatenate([a[:, band], b[:, band]])
        order = np.argsort(both, kind="stable")
        key, on_b, rows = both[order], side[order], index[order]
        group = np.cumsum(np.r_[True, key[1:] != key[:-1]]) - 1
        has_a = np.zeros(group[-1] + 1, bool)
        has_b = np.zeros(group[-1] + 1, bool)
        has_a[group[~on_b]] = True
        has_b[group[on_b]] = True
        live = (has_a & has_b)[group]
        if not live.any():
            continue
        ga, ra = group[live & ~on_b], rows[live & ~on_b]
        gb, rb = group[live & on_b], rows[live & on_b]  # sorted by group already
        lo = np.searchsorted(gb, ga, "left")
        reps = np.searchsorted(gb, ga, "right") - lo
        left = np.repeat(ra, reps)
        at = np.repeat(lo - np.cumsum(np.r_[0, reps[:-1]]), reps) + np.arange(reps.sum())
        codes.append((left.astype(np.int64) << 32) | rb[at].astype(np.int64))
        if sum(len(c) for c in codes) > 20_000_000:
            codes = [np.unique(np.concatenate(codes))]
    return np.unique(np.concatenate(codes))


def _entropy(values: Sequence[tuple[int, ...]]) -> float:
    counted = Counter(values)
    n = len(values)
    return -sum(c / n * math.log2(c / n) for c in counted.values())


def count_measure(
    observed: npt.NDArray[np.int64], truth: Sequence[int], oracle: npt.NDArray[np.int64],
    oracle_people: Sequence[int], simulated: npt.NDArray[np.float64],
    simulated_people: Sequence[int], seed: int,
) -> dict[str, float]:  # fmt: skip
    """How identifying each query's counts (`observed`, a row a query, its person `truth`) are
    to C: `oracle` each person's counts as its own record would have them (the people
    `oracle_people`: every person the attacker might be looking at), an attacker that knows
    them all (the project secret: a bound): `anonymity`, the median number of people whose
    counts equal the query's, `bound`, the share it names right guessing among them (the
    mean of 1 / k where the truth is among the k), `unique`, the share of queries whose
    counts no other person has; `simulated`, the counts the attacker computes under its own
    keys from its own plaintext (`simulated_people`; their mean over keys), naming the person
    whose counts are nearest (log or square-root scale, the better; ties drawn at random):
    `named`, the share it names right; and the counts' entropy over the queries against log2
    of the people."""
    rng = random.Random(f"count guesses {seed}")
    groups: dict[tuple[int, ...], list[int]] = {}
    for row, person in zip(oracle.tolist(), oracle_people, strict=True):
        groups.setdefault(tuple(row), []).append(person)
    sizes, bound, unique = [], 0.0, 0
    for row, person in zip(observed.tolist(), truth, strict=True):
        same = groups.get(tuple(row), [])
        sizes.append(len(same))
        if person in same:
            bound += 1 / len(same)
            unique += len(same) == 1
    right = 0
    for scale in (np.log1p, np.sqrt):  # the better of two readings (sqrt: a Poisson count's)
        near = scale(simulated.astype(np.float64))
        got = 0
        for row, person in zip(observed.tolist(), truth, strict=True):
            d = ((near - scale(np.asarray(row, np.float64))) ** 2).sum(axis=1)
            best = np.flatnonzero(d <= d.min() + 1e-12)
            got += simulated_people[int(best[rng.randrange(len(best))])] == person
        right = max(right, got)
    n = len(truth)
    return {
        "queries": n,
        "people": len(oracle_people),
        "anonymity": float(np.median(sizes)) if sizes else 0.0,
        "bound": bound / n,
        "unique": unique / n,
        "named": right / n,
        "entropy": _entropy([tuple(r) for r in observed.tolist()]),
        "log2_people": math.log2(max(len(oracle_people), 1)),
    }


__all__ = [
    "band_keys",
    "candidate_counts",
    "count_measure",
    "merge_repeats",
    "merge_uploads",
    "per_partner",
    "repeat_links",
    "repeated",
    "reuploads",
    "s1_stream_view",
]
