"""What S2 sees of two-server queries (benchmarks/twoserver_queries.py, docs/privacy-design.md
"A stream of two-server queries, attacked"): single-record queries through the query path
(`twoquery.query_links` over S1 and S2 in this process, S1's cap from `exhaustive.run_cap`)
open, pair for pair, the counts of shared bands that `twoviews.role_views` gives S2 for the
same records against the same upload, so the benchmark's view is the roles'; and under S1's
shipped cap a query against a small upload opens nothing."""

from __future__ import annotations

import secrets
from pathlib import Path

from benchmarks.graph_attack import with_fallback
from benchmarks.twoserver_people import generator_three
from benchmarks.twoserver_querypath import query_cap, query_path_counts
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy import twocheck
from blindmatch.matcher.core import exhaustive
from blindmatch.matcher.core.twoviews import role_views
from tests.support import ROOT


def test_the_query_path_opens_what_role_views_gives_s2(tmp_path: Path) -> None:
    schema = load_schema(ROOT / "schemas" / "person-uk.json")
    (q_rows, _q), (b_rows, _b), _u = generator_three(
        tmp_path, "households", 1, 120, with_fallback(schema, False)
    )
    secret = secrets.token_bytes(32)
    partner = twocheck._upload(schema, b_rows, secret, NONE)
    asked = q_rows[:4]
    path = query_path_counts(schema, asked, partner, secret, 0)  # S1 blocks every pair
    mine = twocheck._upload(schema, asked, secret, NONE)
    pairs, counts = role_views([mine, partner], 0.8, schema.rule, exhaustive=0, clear=True)["S2"]
    view = {(int(i), int(j)): int(c) for (i, j), c in zip(pairs.tolist(), counts.tolist(),
                                                            strict=True)}  # fmt: skip
    assert path and path == view
    # The same records under S1's shipped cap: the upload is small, nothing is opened.
    cap = query_cap(exhaustive.SHIPPED_PAIRS, 1, len(b_rows))
    assert cap > 0
    assert query_path_counts(schema, asked, partner, secret, exhaustive.SHIPPED_PAIRS) == {}
