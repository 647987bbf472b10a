"""What S2, S1 and C learn of a stream of two-server real-time queries, attacked.

    .venv/bin/python benchmarks/twoserver_queries.py [--population households|messy]
        [--partner-records 1000] [--queries 1000] [--held 0.5] [--batch 1000] [--seed 1]
        [--known 0 50] [--exhaustive-pairs 16000000] [--check-path 20] [--fixed-keys]
        [--repeats 1 [--retype]] [--uploads 1 [--churn 0.05] [--by-row]]
        [--count-measure [--count-partners 1]] [--s1-stream [--watches [--watch-keys]]]
        [--clk-baseline]

A two-server query's records were always blocked against each partner's current upload
(docs/realtime.md "Queries in a two-server project"), and still are against an upload over
S1's cap / QUERY_STREAM records (matcher/core/exhaustive.py `run_cap`; 16,000 under the
shipped cap; `--exhaustive-pairs 0`: every query blocked, as before). Blocked, S1 joins the
query's sealed band keys with the partner's, S2 opens each matched pair of tokens, so for
every query record S2 counts the bands it shares with each partner record that shares one
(the count a run's members show S2), S1 learns the candidate pairs and C each candidate's
link bit and a link's rows and bucket. The
partner's upload stays the same from query to query (its rows are S2's tokens' rows), so
over a stream of queries S2 holds, for every record queried, its counts against the same
partner records: the bipartite view of a run between the queries and the partner.

The stream here: `--queries` Q records, the people of `--population` (benchmarks/households.py
or messy.py, the first organisation's export of them), a share `--held` of them among the
partner's people (at most all of them), the rest not; the partner's upload is the second
organisation's export of its `--partner-records` N people; the attacker's plaintext is the
third organisation's export of every one of them (the partner's and the queried). The queries
are sent `--batch` records at a time (MAX_QUERY_RECORDS, 1,000, at most; a query's own join:
what S2 sees of one query's own rows, `S2 A:k`, is within a batch), each batch's views built
by the run's own roles (matcher/core/twoviews.py `role_views` on the batch's upload and the
partner's, two members, S1's cap as `run_cap` sets it for the query's run under S1's
`--exhaustive-pairs`) and put together; then `privacy-check --mode two-server`'s attacks
(client/tools/privacy/twocheck.py `check_members`, `third=False`: trilateration on C's, S1's
and S2's view, S2's counts under each of its four readings, and the collision attack on what
S2 sees of the queries' own rows), blind and with `--known` pairs of queried records. Column
A is the share of query records re-identified (those not known), B the partner's.

`--check-path K` first checks the view against the query path itself: K single-record queries,
each through matcher/realtime/twoquery.py `query_links` over S1 and S2 in this process with
S1's cap from `run_cap` (a query's name, its one record and the partner's), S2's openings
recorded; their counts must equal the rows of `role_views`' S2 view for the same records (it
exits 1 if not; both are empty where the query is not blocked).

`--repeats R` (each person asked R times, `--retype` re-typed each time), `--uploads K` (the
queries a standing watch compared with K successive uploads of the partner, `--churn` of its
records re-typed each time), `--count-measure` (what C's count of each single-record
query's proposed pairs says of it) and `--s1-stream` (S1's view of single-record queries: on
how many bands every two agree, the collision attack; with `--watches`, of single-record
watches, which since 2026-12-05 send S1 their band keys only where it blocks them against the
partner, as queries (`MatcherClient.watch`'s `band_keys` default; `--watch-keys`: always,
as before)) are the views beyond one
stream (benchmarks/twoserver_querymodes.py); `--fixed-keys`: the project's secret and the
attacker's key from `--seed` (`twocheck.seeded_keys`), so that a mode's run and its baseline
(`--repeats 1`, `--uploads 1`) differ only in the mode. `--clk-baseline` (with `--s1-stream`):
then the graph-matching attack on the queried records' CLKs as a CLK project uploads them
(benchmarks/clk_baseline.py), the same secret and known pairs: the baseline in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import clk_baseline
from benchmarks import twoserver_querymodes as modes
from benchmarks.graph_attack import with_fallback
from benchmarks.twoserver_people import generator_three
from benchmarks.twoserver_querypath import query_cap, query_path_counts, query_sends_keys
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.remote.twoserver import upload_parts
from blindmatch.client.tools.privacy import twoattacks, twocheck
from blindmatch.client.tools.privacy.graphcheck import upload_views
from blindmatch.matcher.core import exhaustive
from blindmatch.matcher.core.twoviews import role_views

ROOT = Path(__file__).resolve().parent.parent
Member = tuple[list[list[str]], list[int]]


def arguments() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--population", choices=("households", "messy"), default="households")
    parser.add_argument("--partner-records", type=int, default=1000, metavar="N",
                        help="the partner's upload: N people")  # fmt: skip
    parser.add_argument("--queries", type=int, default=1000, metavar="Q",
                        help="query records in the stream (one person each)")  # fmt: skip
    parser.add_argument("--held", type=float, default=0.5,
                        help="the share of the queried people the partner holds (at most all "
                        "of its people; the rest held by no one else)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=1000,
                        help="records a query (1 to 1,000): each batch its own join")  # fmt: skip
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--known", type=int, nargs="+", default=[0, 50])
    parser.add_argument(
        "--exhaustive-pairs", type=int, default=exhaustive.SHIPPED_PAIRS, metavar="PAIRS",
        help="S1's cap: a query is compared without blocking against a partner of at most "
        "PAIRS / QUERY_STREAM records (core/exhaustive.py run_cap); 0: every query blocked, "
        "as before",
    )  # fmt: skip
    parser.add_argument(
        "--check-path", type=int, default=0, metavar="K",
        help="first check the view against K single-record queries through twoquery.py's "
        "query_links (0: no check)",
    )  # fmt: skip
    parser.add_argument("--fixed-keys", action="store_true",
                        help="the project's secret and the attacker's key from --seed "
                        "(a mode's run and its baseline then differ only in the mode)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=1, metavar="R",
                        help="each queried person asked R times, each a query of its own "
                        "(--queries Q: Q/R people); the views merged a person a row")  # fmt: skip
    parser.add_argument("--retype", action="store_true",
                        help="with --repeats: each repeat another organisation's re-typing "
                        "of the record (else the same record)")  # fmt: skip
    parser.add_argument("--uploads", type=int, default=1, metavar="K",
                        help="the queries a standing watch (one batch, at most 1,000) "
                        "compared with K successive uploads of the partner")  # fmt: skip
    parser.add_argument("--churn", type=float, default=0.05,
                        help="with --uploads: the share of the partner's records re-typed "
                        "in each upload after the first")  # fmt: skip
    parser.add_argument("--by-row", action="store_true",
                        help="with --uploads: the partner uploads its records in the same order "
                        "each time, and S2's counts of a row are averaged over the uploads "
                        "(else each distinct record a row of its own)")  # fmt: skip
    parser.add_argument("--count-measure", action="store_true",
                        help="measure what C's count of each single-record query's proposed "
                        "pairs says of the queried person (no attack run)")  # fmt: skip
    parser.add_argument("--s1-stream", action="store_true",
                        help="attack what S1 holds of the queries as single-record queries: "
                        "on how many bands each pair of them has equal keys (the collision "
                        "attack; no other attack run)")  # fmt: skip
    parser.add_argument("--watches", action="store_true",
                        help="with --s1-stream: the records as single-record watches, which "
                        "send S1 their band keys where S1 blocks them against the partner, "
                        "as queries (MatcherClient.watch: "
                        "opened again with them)")  # fmt: skip
    parser.add_argument("--watch-keys", action="store_true",
                        help="with --watches: each opened with its band keys whatever the "
                        "partner's size (MatcherClient.watch's band_keys=True; before 2026-12-05 "
                        "every watch)")  # fmt: skip
    parser.add_argument("--clk-baseline", action="store_true",
                        help="with --s1-stream: also the graph-matching attack on the queried "
                        "records' CLKs as a CLK project uploads them (the baseline)")  # fmt: skip
    parser.add_argument("--count-partners", type=int, default=1, metavar="P",
                        help="with --count-measure: the partner's records as P partners' "
                        "uploads, C told each one's count")  # fmt: skip
    return parser


def stream(folder: Path, args: argparse.Namespace, schema: Any, full: list[Member] | None = None,
           ) -> list[Member]:  # fmt: skip
    """(the queries, the partner's upload, the attacker's plaintext), each (rows, people):
    the queried people a `--held` share of the partner's, the rest people it does not hold;
    `--repeats R`: Q/R people, each once (`modes.repeated` asks them again). `full`: given,
    the first organisation's export of every person is appended to it."""
    n, q = args.partner_records, args.queries // args.repeats
    held = min(round(args.held * q), n)
    total = n + (q - held)
    exports = generator_three(folder, args.population, args.seed, total, schema)
    people = sorted(set(exports[0][1]))
    rng = random.Random(f"queries {args.seed}")
    rng.shuffle(people)
    partner, other = set(people[:n]), people[n:]
    asked = rng.sample(sorted(partner), held) + other[: q - held]
    rng.shuffle(asked)
    row_of = {p: k for k, p in enumerate(exports[0][1])}
    queries = ([exports[0][0][row_of[p]] for p in asked], asked)
    b_rows, b_people = exports[1]
    keep = [k for k, p in enumerate(b_people) if p in partner]
    upload = ([b_rows[k] for k in keep], [b_people[k] for k in keep])
    if full is not None:
        full.append(exports[0])
    return [queries, upload, exports[2]]


def batched_views(args: argparse.Namespace, schema: Any, secret: bytes, queries: list[list[str]],
                  cpu: dict[str, float], span: int = 0) -> Any:  # fmt: skip
    """`check_members`' RoleViews: each `--batch` of queries its own upload and run against
    the partner's upload (the one check_members made), the views put together, rows of A
    offset by the batch's start. `span`: batches start afresh every `span` rows (a repeat's
    queries are queries of their own; 0: one span)."""
    span = span or len(queries)

    def views(uploads: Any, threshold: float, rule: Any) -> dict[str, Any]:
        t0 = time.process_time()
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        starts = [s + k for s in range(0, len(queries), span)
                  for k in range(0, min(span, len(queries) - s), args.batch)]  # fmt: skip
        for start in starts:
            end = min(start + args.batch, (start // span + 1) * span, len(queries))
            rows = queries[start:end]
            mine = twocheck._upload(schema, rows, secret, NONE)
            cap = query_cap(args.exhaustive_pairs, len(rows), len(uploads[1].s1.shares[0]))
            got = role_views([mine, uploads[1]], threshold, rule, exhaustive=cap,
                             clear=True)  # fmt: skip
            for role, (pairs, values) in got.items():
                shift = np.array([start, start if role.startswith("S2 A:") else 0], np.intp)
                parts.setdefault(role, []).append((pairs + shift, values))
        cpu["roles"] = time.process_time() - t0
        return {role: (np.concatenate([p for p, _ in got]).reshape(-1, 2),
                       np.concatenate([v for _, v in got]))
                for role, got in parts.items()}  # fmt: skip

    return views


def mode_views(args: argparse.Namespace, schema: Any, secret: bytes, members: list[Member],
               cpu: dict[str, float]) -> tuple[Any, list[Member], str]:  # fmt: skip
    """The RoleViews to attack, the members they are of, and what they are: one stream's
    (`batched_views`), its repeats' merged a person a row (`--repeats`), or a watch's against
    the partner's successive uploads on their distinct records (`--uploads`)."""
    (q_rows, _q), (b_rows, _b), _u = members
    source = (f"a stream of {len(q_rows):,} two-server queries ({args.population}, seed "
              f"{args.seed}) against a partner's upload of {len(b_rows):,} records")  # fmt: skip
    if args.repeats > 1:
        distinct, r = len(q_rows), args.repeats
        asked = modes.repeated(members[0], r, args.retype, schema, args.seed)
        inner = batched_views(args, schema, secret, asked[0], cpu, span=distinct)

        def merged(uploads: Any, threshold: float, rule: Any) -> dict[str, Any]:
            got = inner(uploads, threshold, rule)
            said = modes.repeat_links(got, distinct, r)
            print(f"S2's counts: of the {said['people']:,} people, {said['seen']:,} with a "
                  f"count, {said['same']:,} of them with every repeat's counts the first's, "
                  f"{said['unique']:,} with counts no other person has", flush=True)  # fmt: skip
            return modes.merge_repeats(got, distinct, r)

        how = "re-typed" if args.retype else "the same record"
        return merged, members, (f"{distinct:,} people each queried {r} times ({how}; "
                                 f"{len(asked[0]):,} queries) merged a person a row: "
                                 + source.split(" ", 6)[6])  # fmt: skip
    if args.uploads > 1:
        if len(q_rows) > 1000:
            raise SystemExit("--uploads: a watch's records, 1 to 1,000 (--queries)")
        ups, ids, distinct_b = modes.reuploads(members[1], args.uploads, args.churn, schema,
                                               args.seed)  # fmt: skip

        def watched(uploads: Any, threshold: float, rule: Any) -> dict[str, Any]:
            t0 = time.process_time()
            watch = twocheck._upload(schema, q_rows, secret, NONE)
            per = []
            for rows, _people in ups:
                cap = query_cap(args.exhaustive_pairs, len(q_rows), len(rows))
                upload = twocheck._upload(schema, rows, secret, NONE)
                per.append(role_views([watch, upload], threshold, rule, exhaustive=cap,
                                      clear=True))  # fmt: skip
            cpu["roles"] = time.process_time() - t0
            if args.by_row:
                return modes.merge_uploads(per, [list(range(len(b_rows)))] * len(per), True)
            return modes.merge_uploads(per, ids)

        rows_b = members[1] if args.by_row else distinct_b
        return (
            watched,
            [members[0], rows_b, members[2]],
            (
                f"a watch of {len(q_rows):,} records ({args.population}, seed {args.seed}) "
                f"against {args.uploads} uploads of a partner's {len(b_rows):,} records "
                f"({args.churn:.0%} re-typed each time: {len(distinct_b[0]):,} distinct records"
                f"{'; a row a record, its counts averaged' if args.by_row else ''})"
            ),
        )
    return batched_views(args, schema, secret, q_rows, cpu), members, source


COUNT_KEYS = 3  # `--count-measure`: the attacker's keys it simulates each person's counts under


def count_run(args: argparse.Namespace, schema: Any, secret: bytes, attacker: bytes | None,
              members: list[Member], everyone: Member) -> int:  # fmt: skip
    """`--count-measure`: C's count of each single-record query's proposed pairs against the
    partner, per CLK, measured as information (`modes.count_measure`)."""
    (q_rows, q_people), (b_rows, b_people), (u_rows, u_people) = members
    t0 = time.process_time()
    if query_cap(args.exhaustive_pairs, 1, len(b_rows)):
        print(f"not blocked: C learns {len(b_rows):,} pairs a query record against this "
              "partner (the cross product: the partner's size, every query's the same): "
              "0 bits")  # fmt: skip
        return 0
    theirs = modes.band_keys(schema, b_rows, secret)
    observed, union = modes.candidate_counts(modes.band_keys(schema, q_rows, secret), theirs)
    k = min(50, len(q_rows))  # S1's own candidates for the first k queries: the same counts
    got = role_views([twocheck._upload(schema, q_rows[:k], secret, NONE),
                      twocheck._upload(schema, b_rows, secret, NONE)], 0.8, schema.rule,
                     exhaustive=0, clear=True)["S1"][0]  # fmt: skip
    s1 = np.bincount(got[:, 0], minlength=k)
    same = bool((s1 == union[:k]).all())
    said = "equal" if same else "DIFFER FROM"
    print(f"S1's candidates of the first {k} queries (role_views) {said} "
          "those counted here from the band keys", flush=True)  # fmt: skip
    if not same:
        return 1
    parts = args.count_partners
    if parts > 1:  # the partner's records as that many partners' uploads, C told of each
        observed = modes.per_partner(modes.band_keys(schema, q_rows, secret), theirs, parts)
    wanted = set(u_people)
    pick = [i for i, p in enumerate(everyone[1]) if p in wanted]
    oracle = modes.per_partner(
        modes.band_keys(schema, [everyone[0][i] for i in pick], secret), theirs, parts
    )
    key = attacker if attacker is not None else secrets.token_bytes(32)
    # the attacker's plaintext of the partner's people, in the partner's order (its cuts)
    where = {p: k for k, p in enumerate(u_people)}
    in_b = np.array([where[p] for p in b_people])
    simulated = np.zeros((len(u_rows), observed.shape[1]))
    for k in range(COUNT_KEYS):  # the mean over keys of its own: each person's expected counts
        own, lack = modes.band_keys(schema, u_rows, hashlib.sha256(key + bytes([k])).digest())
        got_k = modes.per_partner((own, lack), (tuple(x[in_b] for x in own), lack[in_b]), parts)
        simulated += got_k / COUNT_KEYS
    got_m = modes.count_measure(observed, q_people, oracle, [everyone[1][i] for i in pick],
                                simulated, u_people, args.seed)  # fmt: skip
    per = observed.sum(axis=1)
    print(
        f"C's count of a single-record query's proposed pairs (per CLK: record, fallback) "
        f"against {parts} partner(s) of {len(b_rows):,} records in all, {len(q_rows):,} "
        "queries: median "
        f"{np.median(per):.0f} pairs (min {per.min()}, max {per.max()}); entropy "
        f"{got_m['entropy']:.2f} bits of log2({got_m['people']:,} people) = "
        f"{got_m['log2_people']:.2f}; knowing every person's counts (the bound): median "
        f"{got_m['anonymity']:.0f} people share a query's, unique {got_m['unique']:.2%}, "
        f"named right {got_m['bound']:.2%}; simulated under {COUNT_KEYS} keys of its own, "
        f"nearest mean named right {got_m['named']:.2%}; {time.process_time() - t0:.0f} CPU s",
        flush=True,
    )
    return 0


def s1_stream_run(args: argparse.Namespace, schema: Any, secret: bytes, attacker: bytes | None,
                  members: list[Member]) -> int:  # fmt: skip
    """`--s1-stream`: the collision attack (`twoattacks.own_pairs`, on S2's own-row view) on
    S1's view of the queries as single-record queries (`modes.s1_stream_view`), blind and with
    `--known`."""
    (q_rows, q_people), (b_rows, _b), (u_rows, u_people) = members
    t0 = time.process_time()
    # The band keys S1 receives: none where it compares a query whole against the partner
    # (the client sends them only once S1 refuses the query without: `query_sends_keys`); a
    # watch's likewise (opened without them, it is opened again with them where S1 blocks it
    # against an upload) unless opened with them (`--watch-keys`, MatcherClient.watch's band_keys).
    blocked = query_sends_keys(args.exhaustive_pairs, 1, len(b_rows))
    sends = blocked or (args.watches and (args.watch_keys or watch_sends_keys()))
    kind, kinds = ("watch", "watches") if args.watches else ("query", "queries")
    first = upload_parts(
        "project/north@q/q", "s1", twocheck._upload(schema, q_rows[:1], secret, NONE), keys=sends
    )
    sent = sum(len(p.band_keys) + len(p.sealed) for p in first)
    print(f"a single-record {kind} against the partner's {len(b_rows):,} records under S1's cap "
          f"of {args.exhaustive_pairs:,} pairs: {'blocked' if blocked else 'not blocked'}, S1 "
          f"receives {sent:,} bytes of its band keys")  # fmt: skip
    keys = modes.band_keys(schema, q_rows, secret)
    within = (modes.s1_stream_view(keys) if sends else
              [(np.empty((0, 2), np.intp), np.empty(0)) for _ in keys[0]])  # fmt: skip
    key = attacker if attacker is not None else secrets.token_bytes(32)
    own = upload_views(schema, u_rows, key, NONE)
    where = {p: k for k, p in enumerate(u_people)}
    truth = np.array([where.get(p, -1) for p in q_people], np.intp)
    results = twoattacks.own_pairs(within, own, truth, q_people, u_people,
                                  sharing.plan_of(schema), args.known)  # fmt: skip
    print(f"S1's view of {len(q_rows):,} single-record {kinds}: pairs sharing a band key, per "
          f"CLK: {', '.join(f'{len(p):,}' for p, _c in within)}")  # fmt: skip
    for r in results:
        print(f"  S1 {r.attack:<22} {r.record_share:>7.2%}  ({r.records_reidentified} of "
              f"{r.records}; {r.claims or 0} claims)")  # fmt: skip
    print(f"{time.process_time() - t0:.0f} CPU s", flush=True)
    if args.clk_baseline:
        clk_baseline.report(schema, (q_rows, q_people), (u_rows, u_people), secret, args.known,
                            attacker)  # fmt: skip
    return 0


def watch_sends_keys() -> bool:
    """Whether `MatcherClient.watch` sends S1 a two-server watch's band keys when it opens
    (its `band_keys` default: False since 2026-12-05)."""
    from blindmatch.client.remote.client import MatcherClient

    return bool(inspect.signature(MatcherClient.watch).parameters["band_keys"].default)


def main() -> int:
    args = arguments().parse_args()
    if not 1 <= args.batch <= 1000:
        raise SystemExit("--batch: 1 to 1,000 records a query (MAX_QUERY_RECORDS)")
    if args.repeats < 1 or args.uploads < 1 or not 0 <= args.churn <= 1:
        raise SystemExit("--repeats and --uploads: 1 or more; --churn: 0 to 1")
    if args.watches and not args.s1_stream:
        raise SystemExit("--watches: with --s1-stream")
    if args.clk_baseline and not args.s1_stream:
        raise SystemExit("--clk-baseline: with --s1-stream")
    if args.watch_keys and not args.watches:
        raise SystemExit("--watch-keys: with --watches")
    shipped = load_schema(ROOT / "schemas" / "person-uk.json")
    t0 = time.process_time()
    full: list[Member] = []
    with tempfile.TemporaryDirectory(prefix="blindmatch-2q-") as tmp:
        members = stream(Path(tmp), args, with_fallback(shipped, False), full)
    (q_rows, q_people), (b_rows, b_people), _u = members
    held = len(set(q_people) & set(b_people))
    print(
        f"{args.population}, seed {args.seed}: {len(q_rows):,} query records ({held:,} of "
        f"people the partner holds), batches of {args.batch:,}; the partner's upload "
        f"{len(b_rows):,} records; {time.process_time() - t0:.0f} CPU s to make",
        flush=True,
    )
    secret, attacker = (twocheck.seeded_keys(args.seed) if args.fixed_keys
                        else (secrets.token_bytes(32), None))  # fmt: skip
    if args.count_measure:
        return count_run(args, shipped, secret, attacker, members, full[0])
    if args.s1_stream:
        return s1_stream_run(args, shipped, secret, attacker, members)
    if args.check_path:
        k = min(args.check_path, len(q_rows))
        upload_b = twocheck._upload(shipped, b_rows, secret, NONE)
        path = query_path_counts(shipped, q_rows[:k], upload_b, secret, args.exhaustive_pairs)
        mine = twocheck._upload(shipped, q_rows[:k], secret, NONE)
        cap = query_cap(args.exhaustive_pairs, 1, len(b_rows))
        pairs, counts = role_views([mine, upload_b], 0.8, shipped.rule, exhaustive=cap,
                                   clear=True)["S2"]  # fmt: skip
        view = {(int(i), int(j)): int(c) for (i, j), c in zip(pairs.tolist(), counts.tolist(),
                                                                strict=True)}  # fmt: skip
        same = path == view
        print(
            f"query path: {k} single-record queries through query_links, S2 opened "
            f"{sum(path.values()):,} pairs of tokens on {len(path):,} pairs; role_views' S2 "
            f"view of the same records {'the same' if same else 'DIFFERS'}",
            flush=True,
        )
        if not same:
            return 1
    # The twocheck refusal under 500 records is the CLI's guard for a member's sample; a
    # stream of fewer queries is measured here as it is (a record is 1/Q of a share).
    twocheck.MIN_SAMPLE = min(twocheck.MIN_SAMPLE, len(q_rows))
    cpu: dict[str, float] = {}
    t1 = time.process_time()
    views, checked, source = mode_views(args, shipped, secret, members, cpu)
    report = twocheck.check_members(
        checked, shipped, secret, views, source=source, known=args.known, third=False,
        attacker_key=attacker,
    )  # fmt: skip
    print(report.render())
    print(
        f"the roles {cpu.get('roles', 0.0):.0f} CPU s, the whole check "
        f"{time.process_time() - t1:.0f} CPU s",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
