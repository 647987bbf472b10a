"""What S2 sees of two-server queries (benchmarks/twoserver_queries.py, docs/privacy-design.md
"A stream of two-server queries, attacked"): single-record queries through the query path
(`twoquery.query_links` over S1 and S2 in this process, S1's cap from `exhaustive.run_cap`)
open, pair for pair, the counts of shared bands that `twoviews.role_views` gives S2 for the
same records against the same upload, so the benchmark's view is the roles'; and under S1's
shipped cap a query against a small upload opens nothing. What C is told of each query (the
pairs S1 proposed, per CLK) is the benchmark's count (benchmarks/twoserver_querymodes.py
`candidate_counts`), and the cross product unblocked; a query asked again, or compared with
the partner's records uploaded again, shows S2 the same counts; and S1 holds, of single-record
queries, on how many bands every two agree (docs/privacy-design.md
"Repeated queries, a watch's re-uploads and C's counts, attacked")."""

from __future__ import annotations

import secrets
from pathlib import Path

import numpy as np

from benchmarks import twoserver_querymodes as modes
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
    told: list[dict[int, int]] = []
    path = query_path_counts(schema, asked, partner, secret, 0, told)  # S1 blocks every pair
    mine = twocheck._upload(schema, asked, secret, NONE)
    pairs, counts = role_views([mine, partner], 0.8, schema.rule, exhaustive=0, clear=True)["S2"]
    view = {(int(i), int(j)): int(c) for (i, j), c in zip(pairs.tolist(), counts.tolist(),
                                                            strict=True)}  # fmt: skip
    assert path and path == view
    # C's count of each query's proposed pairs, per CLK: the benchmark's, from the band keys.
    proposed, _ = modes.candidate_counts(modes.band_keys(schema, asked, secret),
                                         modes.band_keys(schema, b_rows, secret))  # fmt: skip
    assert [[t.get(k, 0) for k in range(proposed.shape[1])] for t in told] == proposed.tolist()
    assert proposed.sum() > 0
    # The same records under S1's shipped cap: the upload is small, nothing is opened.
    cap = query_cap(exhaustive.SHIPPED_PAIRS, 1, len(b_rows))
    assert cap > 0
    told = []
    assert query_path_counts(schema, asked, partner, secret, exhaustive.SHIPPED_PAIRS, told) == {}
    assert [sum(t.values()) for t in told] == [len(b_rows)] * len(asked)  # the cross product


def test_a_query_asked_again_shows_s2_the_same_counts(tmp_path: Path) -> None:
    """Nothing fresh in S2's counts to average away: the same records queried again (fresh
    shares, seal keys and pair key), against the partner's records uploaded again, give S2 the
    same counts of shared bands, pair for pair; and the benchmark's merge of repeats is then
    the single query's view."""
    schema = load_schema(ROOT / "schemas" / "person-uk.json")
    (q_rows, _q), (b_rows, _b), _u = generator_three(
        tmp_path, "households", 2, 100, with_fallback(schema, False)
    )
    secret = secrets.token_bytes(32)
    asked = q_rows[:3]

    def s2() -> dict[tuple[int, int], int]:
        uploads = [twocheck._upload(schema, rows, secret, NONE) for rows in (asked, b_rows)]
        pairs, counts = role_views(uploads, 0.8, schema.rule, exhaustive=0, clear=True)["S2"]
        return {(int(i), int(j)): int(c) for (i, j), c in zip(pairs.tolist(), counts.tolist(),
                                                                strict=True)}  # fmt: skip

    first = s2()
    assert first and s2() == first
    both = {key: (np.array([[i, j] for i, j in first] + [[i + 3, j] for i, j in first]),
                  np.array(list(first.values()) * 2, float)) for key in ("S2",)}  # fmt: skip
    pairs, counts = modes.merge_repeats(both, 3, 2)["S2"]
    assert dict(zip(map(tuple, pairs.tolist()), counts.tolist(), strict=True)) == first
    # S1's view of single-record queries (`--s1-stream`): each query's sealed band keys, one a
    # band, are its one record's, so S1 counts the bands on which two queries' keys agree.
    single = [twocheck._upload(schema, [row], secret, NONE) for row in asked]
    seen = modes.s1_stream_view(modes.band_keys(schema, asked, secret))
    for clk, (pairs, counts) in enumerate(seen):
        view = dict(zip(map(tuple, pairs.tolist()), counts.tolist(), strict=True))
        for i in range(3):
            for j in range(i + 1, 3):
                a, b = (single[k].s1.bands[clk] for k in (i, j))
                assert list(a.counts) == list(b.counts) == [1] * a.bands  # one key a band
                assert view.get((i, j), 0) == int((a.keys == b.keys).sum())
