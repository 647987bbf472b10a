"""What S2, S1 and C learn of a stream of two-server real-time queries, attacked.

    .venv/bin/python benchmarks/twoserver_queries.py [--population households|messy]
        [--partner-records 1000] [--queries 1000] [--held 0.5] [--batch 1000] [--seed 1]
        [--known 0 50] [--exhaustive-pairs 16000000] [--check-path 20]

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
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.graph_attack import with_fallback
from benchmarks.twoserver_people import generator_three
from benchmarks.twoserver_querypath import query_cap, query_path_counts
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy import twocheck
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
    return parser


def stream(folder: Path, args: argparse.Namespace, schema: Any) -> list[Member]:
    """(the queries, the partner's upload, the attacker's plaintext), each (rows, people):
    the queried people a `--held` share of the partner's, the rest people it does not hold."""
    n, q = args.partner_records, args.queries
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
    return [queries, upload, exports[2]]


def batched_views(args: argparse.Namespace, schema: Any, secret: bytes,
                  queries: list[list[str]], cpu: dict[str, float]) -> Any:  # fmt: skip
    """`check_members`' RoleViews: each `--batch` of queries its own upload and run against
    the partner's upload (the one check_members made), the views put together, rows of A
    offset by the batch's start."""

    def views(uploads: Any, threshold: float, rule: Any) -> dict[str, Any]:
        t0 = time.process_time()
        parts: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for start in range(0, len(queries), args.batch):
            rows = queries[start : start + args.batch]
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


def main() -> int:
    args = arguments().parse_args()
    if not 1 <= args.batch <= 1000:
        raise SystemExit("--batch: 1 to 1,000 records a query (MAX_QUERY_RECORDS)")
    shipped = load_schema(ROOT / "schemas" / "person-uk.json")
    t0 = time.process_time()
    with tempfile.TemporaryDirectory(prefix="blindmatch-2q-") as tmp:
        members = stream(Path(tmp), args, with_fallback(shipped, False))
    (q_rows, q_people), (b_rows, b_people), _u = members
    held = len(set(q_people) & set(b_people))
    print(
        f"{args.population}, seed {args.seed}: {len(q_rows):,} query records ({held:,} of "
        f"people the partner holds), batches of {args.batch:,}; the partner's upload "
        f"{len(b_rows):,} records; {time.process_time() - t0:.0f} CPU s to make",
        flush=True,
    )
    secret = secrets.token_bytes(32)
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
    source = (
        f"a stream of {len(q_rows):,} two-server queries ({args.population}, seed "
        f"{args.seed}) against a partner's upload of {len(b_rows):,} records"
    )
    report = twocheck.check_members(
        members, shipped, secret, batched_views(args, shipped, secret, q_rows, cpu),
        source=source, known=args.known, third=False,
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
