"""The real-time look-up: exact scores, LSH recall against exhaustive search, changes seen."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.rtrecall import graded
from benchmarks.synthclks import CLK_BITS, Population
from blindmatch.client import MatcherClient
from blindmatch.client.errors import RejectedError
from blindmatch.matcher.core import hugepages, kernel
from blindmatch.matcher.core._anonlink import dice_coefficient_accelerated
from blindmatch.matcher.core.index import MemberIndex, Segment, as_words, search, search_snapshots
from blindmatch.matcher.core.lshindex import (
    LshTable,
    TablePlan,
    band_keys,
    plan_tables,
    search_many,
    sketch_cut,
    sketch_positions,
)
from blindmatch.matcher.core.segment import search_batch
from blindmatch.matcher.server import create_server
from tests.support import Matcher, partner_indexes

FINGERPRINT = bytes(range(32))


def anonlink_hits(clks: np.ndarray, query: np.ndarray, threshold: float) -> dict[int, float]:
    """anonlink's pairs for one query (the query as its `a`): row -> score."""
    sims, (_, rows) = dice_coefficient_accelerated(
        [[query.tobytes()], [r.tobytes() for r in clks]], threshold
    )
    return {int(r): float(s) for r, s in zip(rows, sims, strict=True)}


def anonlink_hits_each(
    clks: np.ndarray, queries: np.ndarray, threshold: float
) -> list[dict[int, float]]:
    """`anonlink_hits` of each query, from one anonlink call with the queries as its `a`:
    the same pairs and scores (anonlink scores each pair on its own), without converting the
    indexed CLKs to bytes again for every query (2.3 s for 60 queries of 20,000, now 0.03 s)."""
    sims, (qs, rows) = dice_coefficient_accelerated(
        [[q.tobytes() for q in queries], [r.tobytes() for r in clks]], threshold
    )
    hits: list[dict[int, float]] = [{} for _ in queries]
    for q, r, s in zip(qs, rows, sims, strict=True):
        hits[int(q)][int(r)] = float(s)
    return hits


@pytest.fixture(scope="module")
def people() -> tuple[np.ndarray, np.ndarray]:
    """60,000 synthetic person CLKs (indexed) and 600 queries: typos, graded noise, strangers."""
    n, q = 60_000, 200
    rng = np.random.default_rng(11)
    pop = Population(n + q, 11)
    indexed = pop.encode(np.arange(n), rng, np.zeros(n, dtype=bool))
    queries = np.concatenate(
        [
            pop.encode(rng.integers(0, n, q), rng, np.ones(q, dtype=bool)),
            graded(rng, indexed[rng.integers(0, n, q)], 0.12, 0.32),
            pop.encode(np.arange(n, n + q), rng, np.zeros(q, dtype=bool)),
        ]
    )
    return indexed, queries


@pytest.mark.slow
def test_the_scan_gives_anonlinks_rows_and_scores(people: tuple[np.ndarray, np.ndarray]) -> None:
    indexed, queries = people
    clks = indexed[:3000]
    segment = Segment.build(as_words(clks, CLK_BITS), [str(i) for i in range(len(clks))])
    order = np.argsort(np.bitwise_count(clks).sum(axis=1), kind="stable")
    for threshold in (0.6, 0.8, 0.95):
        theirs = anonlink_hits_each(clks, queries[::25], threshold)
        for q, want in zip(queries[::25], theirs, strict=True):
            rows, sims = search(
                segment.words, segment.popcounts, as_words(q, CLK_BITS)[0], threshold
            )
            ours = {int(order[r]): s for r, s in zip(rows.tolist(), sims.tolist(), strict=True)}
            assert ours == want


def test_lsh_finds_what_the_exhaustive_scan_finds(people: tuple[np.ndarray, np.ndarray]) -> None:
    indexed, queries = people
    segment = Segment.build(
        as_words(indexed, CLK_BITS), [str(i) for i in range(len(indexed))], threshold=0.8
    )
    assert segment.lsh is not None
    pairs = missed = looked = 0
    for q in as_words(queries, CLK_BITS):
        rows, sims = search(segment.words, segment.popcounts, q, 0.8)
        lrows, lsims, seen = segment.lsh.search(segment.words, segment.popcounts, q, 0.8)
        want = dict(zip(rows.tolist(), sims.tolist(), strict=True))
        got = dict(zip(lrows.tolist(), lsims.tolist(), strict=True))
        assert len(got) == len(lrows)  # each row once
        assert all(want[r] == s for r, s in got.items())  # exact: same rows, same floats
        pairs += len(want)
        missed += len(set(want) - set(got))
        looked += seen
    assert pairs > 300  # the typo and graded queries give a real test
    assert 1 - missed / pairs >= 0.995
    assert looked / len(queries) < len(indexed) / 10  # and it is not a scan in disguise


@pytest.mark.slow
def test_lsh_scores_are_anonlinks(people: tuple[np.ndarray, np.ndarray]) -> None:
    indexed, queries = people
    clks = indexed[:20_000]
    words = as_words(clks, CLK_BITS)
    popcounts = np.bitwise_count(words).sum(axis=1, dtype=np.int32)
    lsh_plan = plan_tables(len(words), CLK_BITS, float(np.quantile(popcounts, 0.99)), 0.54, 0.8)
    assert lsh_plan is not None
    table = LshTable.build(words, lsh_plan, 0.8)
    for q, theirs in zip(queries[::10], anonlink_hits_each(clks, queries[::10], 0.8), strict=True):
        rows, sims, _ = table.search(words, popcounts, as_words(q, CLK_BITS)[0], 0.8)
        assert {int(r): s for r, s in zip(rows, sims.tolist(), strict=True)}.items() <= (
            theirs.items()
        )


def test_a_query_with_thousands_of_candidates_finds_each_once(
    people: tuple[np.ndarray, np.ndarray],
) -> None:
    """10,000 copies of one person among 20,000: far more rows under the query's keys than
    a look-up's buffers start with, so they grow mid-query; every copy comes back once."""
    indexed, _ = people
    clks = indexed[:20_000].copy()
    clks[::2] = indexed[0]
    words = as_words(clks, CLK_BITS)
    popcounts = np.bitwise_count(words).sum(axis=1, dtype=np.int32)
    table = LshTable.build(words, small_plan(words), 0.8)
    copies = {int(r) for r in np.flatnonzero((words == words[0]).all(axis=1))}
    for _ in range(2):  # the second time on the grown buffers
        rows, sims, looked = table.search(words, popcounts, words[0], 0.8)
        assert sorted(rows.tolist()) == sorted(set(rows.tolist()))
        assert copies <= set(rows.tolist())
        assert all(
            s == 1.0 for r, s in zip(rows.tolist(), sims.tolist(), strict=True) if r in copies
        )
        assert looked >= table.plan.bands * len(copies)  # each copy under every band's key


def small_plan(words: np.ndarray) -> TablePlan:
    """A plan for a few thousand synthetic CLKs at threshold 0.8."""
    lsh_plan = plan_tables(len(words), CLK_BITS, 420.0, 0.54, 0.8)
    assert lsh_plan is not None
    return lsh_plan


def test_the_numpy_lsh_fallback_agrees_with_the_native_one(
    people: tuple[np.ndarray, np.ndarray],
) -> None:
    if not kernel.NATIVE:
        pytest.skip("the native kernel is not built")
    indexed, queries = people
    words = as_words(indexed[:5000], CLK_BITS)
    popcounts = np.bitwise_count(words).sum(axis=1, dtype=np.int32)
    full = small_plan(words)
    for radius, hits in ((0, 1), (1, 1), (2, 1), (0, 2), (1, 2), (1, 3), (2, 3)):
        lsh_plan = TablePlan(full.positions[:6, :12], radius, 0.0, 0.0, hits)
        table = LshTable.build(words, lsh_plan, 0.7)
        for q in as_words(queries[::40], CLK_BITS):
            rows, sims, looked, read = table.search_counted(words, popcounts, q, 0.7)
            cut = int(table.cuts[int(np.bitwise_count(q).sum())])
            nrows, nsims, nlooked, nread = table._search_numpy(words, popcounts, q, 0.7, cut)
            assert dict(zip(rows.tolist(), sims.tolist(), strict=True)) == dict(
                zip(nrows.tolist(), nsims.tolist(), strict=True)
            )
            assert (looked, read) == (nlooked, nread)


def colliding(words: np.ndarray, q: np.ndarray, lsh_plan: TablePlan) -> np.ndarray:
    """Per row: in how many bands its key is within the plan's radius of the query's."""
    keys = band_keys(words, lsh_plan).astype(np.int64)
    own = band_keys(q[None, :], lsh_plan).astype(np.int64)
    differ = np.bitwise_count(keys ^ own)  # (bands, rows)
    return (differ <= lsh_plan.radius).sum(axis=0)


@pytest.mark.skipif(not kernel.NATIVE, reason="the native kernel is not built")
@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 600),
    st.integers(1, 12),
    st.integers(4, 10),
    st.integers(0, 2),
    st.integers(1, 3),
    st.floats(0.5, 0.95),
    st.integers(0, 2**32 - 1),
)
def test_collision_counting_finds_exactly_the_rows_met_in_enough_bands(
    n: int, bands: int, r: int, radius: int, hits: int, threshold: float, seed: int
) -> None:
    # With `hits` above 1 a row is looked at only when its key is within the radius of the
    # query's in at least `hits` bands (counted in two bit planes, cleared between calls):
    # the look-up, sketch screen off, returns exactly the rows the scan finds at the
    # threshold among those, with anonlink's scores, each once, on a first call and again.
    rng = np.random.default_rng(seed)
    base = rng.random(1024) < 0.4
    bits = np.where(rng.random((n, 1024)) < rng.uniform(0, 0.3, (n, 1)), ~base, base)
    clks = np.packbits(bits, axis=1, bitorder="little")
    words = as_words(clks, 1024)
    positions = np.stack([rng.choice(1024, r, replace=False) for _ in range(bands)])
    lsh_plan = TablePlan(positions, radius, 0.0, 0.0, hits)
    table = LshTable.build(words, lsh_plan, threshold)
    query = as_words(np.packbits(base ^ (rng.random(1024) < 0.05), bitorder="little"), 1024)[0]
    met = colliding(words, query, lsh_plan) >= hits
    want = {r: v for r, v in anonlink_hits(clks, query, threshold).items() if met[r]}
    for _ in range(2):
        sims, rows, looked, read = kernel._kernel.lsh_query(
            table.prepared, query.tobytes(), threshold, 256
        )
        found = np.frombuffer(rows, dtype=np.uint32).tolist()
        assert len(found) == len(set(found))
        assert dict(zip(found, np.frombuffer(sims).tolist(), strict=True)) == want
        assert read == int(met.sum())
        assert looked == int(colliding(words, query, lsh_plan).sum())


def test_a_plan_asks_for_one_to_three_shared_bands() -> None:
    with pytest.raises(ValueError, match="hits"):
        TablePlan(np.zeros((2, 8), np.int32), 0, 0.0, 0.0, 4)


def test_one_call_searches_every_partner_as_one_search_each_would(
    people: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blindmatch.matcher.core.segment.MIN_ROWS", 500)
    monkeypatch.setattr("blindmatch.matcher.core.index.COMPACT_MIN", 50)
    indexed, queries = people
    indexes = partner_indexes(indexed, {"east": 0, "north": 2000, "south": 4000}, 3000)
    small = MemberIndex.load(CLK_BITS, ["w0"], as_words(indexed[:1], CLK_BITS), threshold=0.8)
    # A partner with recent changes (a delta and dead main rows) and one without tables.
    indexes["north"].apply(["new"], as_words(queries[-1], CLK_BITS), ["north2500"])
    snapshots = {**{n: i.snapshot for n, i in indexes.items()}, "west": small.snapshot}
    assert all(i.snapshot.main.lsh is not None for i in indexes.values())
    assert small.snapshot.main.lsh is None
    if kernel.NATIVE:
        tables = [i.snapshot.main.lsh for i in indexes.values()]
        assert search_many(tables, as_words(queries[0], CLK_BITS)[0], 0.8) is not None
    hits = 0
    for q in as_words(np.concatenate([queries[::20], indexed[2400:2600:20]]), CLK_BITS):
        for threshold in (0.8, 0.9, 0.7):  # 0.7: below the tables' threshold, so scanned
            together = search_snapshots(snapshots, q, threshold)
            assert together == {n: snap.search(q, threshold) for n, snap in snapshots.items()}
            hits += sum(len(f) for f in together.values())
    assert hits > 20  # the queries do find records, in several partners
    assert (
        "north2500"
        not in search_snapshots(snapshots, as_words(indexed[2500], CLK_BITS)[0], 0.8)["north"]
    )
    assert search_snapshots(snapshots, as_words(queries[-1], CLK_BITS)[0], 0.8)["north"] == [
        ("new", 1.0)
    ]


def test_changes_are_seen_by_the_next_query_with_lsh_tables(
    people: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blindmatch.matcher.core.segment.MIN_ROWS", 500)
    monkeypatch.setattr("blindmatch.matcher.core.index.COMPACT_MIN", 50)
    indexed, queries = people
    n = 4000
    refs = [f"r{i}" for i in range(n)]
    index = MemberIndex.load(CLK_BITS, refs, as_words(indexed[:n], CLK_BITS), threshold=0.8)
    assert index.snapshot.main.lsh is not None

    def found(clk: np.ndarray) -> dict[str, float]:
        return dict(index.snapshot.search(as_words(clk, CLK_BITS)[0], 0.8))

    stranger = queries[-1]
    assert "new" not in found(stranger)
    index.apply(["new"], as_words(stranger, CLK_BITS), [])  # add
    assert found(stranger)["new"] == 1.0
    index.apply(["r7"], as_words(stranger, CLK_BITS), [])  # replace a main row
    assert set(found(stranger)) >= {"new", "r7"}
    assert "r7" not in found(indexed[7])
    index.apply([], as_words(stranger[:0], CLK_BITS), ["new", "r8"])  # remove
    assert "new" not in found(stranger)
    assert "r8" not in found(indexed[8])
    assert found(indexed[9])["r9"] == 1.0
    # Enough changes to compact: the main segment and its tables are rebuilt, in the
    # background; the changes are seen before and after the merged segment is in.
    moved = [f"r{i}" for i in range(100, 200)]
    index.apply(moved, as_words(indexed[1000:1100], CLK_BITS), [])
    for merged in (False, True):
        if merged:
            assert index.wait_merged(timeout=60)
            assert len(index.snapshot.delta) == 0 and index.snapshot.main.lsh is not None
        assert found(indexed[1050])["r150"] == 1.0
        assert "r150" not in found(indexed[150])
        assert set(found(stranger)) >= {"r7"} and "new" not in found(stranger)
        assert len(index) == n - 1  # +new, r7 replaced, -new -r8, 100 replaced


def test_a_large_index_is_queried_through_lsh_over_grpc(
    matcher: Matcher, people: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("blindmatch.matcher.core.segment.MIN_ROWS", 1000)
    indexed, queries = people
    with matcher.operator() as op:
        project = op.create_project("big", ["north", "west"])
        op.set_query_limits("big", per_minute=10**6, per_day=10**6)
    n = 3000
    with MatcherClient(matcher.target, project.tokens["north"]) as north:
        puts = [(f"r{i}", indexed[i].tobytes()) for i in range(n)]
        north.change_index("big", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
    index = matcher.server.realtime.indexes.get("big", "north")
    assert index.snapshot.main.lsh is not None
    with (
        MatcherClient(matcher.target, project.tokens["west"]) as west,
        MatcherClient(matcher.target, project.tokens["north"]) as north,
    ):

        def partners(clk: np.ndarray) -> list[str]:
            answer = west.query(
                "big", clk.tobytes(), clk_bits=CLK_BITS, fingerprint=FINGERPRINT, purpose="t"
            )
            return [m.partner for m in answer.results[0]]

        assert partners(indexed[5]) == ["north"]
        stranger = queries[-1]
        assert partners(stranger) == []
        north.change_index("big", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                           puts=[("fresh", stranger.tobytes())])  # fmt: skip
        assert partners(stranger) == ["north"]
        north.change_index("big", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, removes=["r5"])
        assert partners(indexed[5]) == []


@pytest.mark.server
def test_a_restarted_matcher_warms_its_tables_without_querying(
    tmp_path: Path,
    people: tuple[np.ndarray, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr("blindmatch.matcher.core.segment.MIN_ROWS", 1000)
    indexed, _ = people
    data_dir = tmp_path / "data"
    server = create_server("127.0.0.1:0", data_dir, "admin")
    target = f"127.0.0.1:{server.port}"
    with MatcherClient(target, "admin") as op:
        project = op.create_project("warm", ["north", "south", "west"])
    for k, member in enumerate(("north", "south")):
        with MatcherClient(target, project.tokens[member]) as client:
            puts = [(f"r{i}", indexed[i].tobytes()) for i in range(k * 3000, k * 3000 + 3000)]
            client.change_index("warm", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, puts=puts)
    server.stop(grace=None)

    caplog.set_level("INFO", logger="blindmatch.matcher.realtime")
    server = create_server("127.0.0.1:0", data_dir, "admin")
    target = f"127.0.0.1:{server.port}"
    try:
        assert "warmed the standing indexes' look-up tables with 2000 look-ups" in caplog.text
        with MatcherClient(target, "admin") as op:  # the warm-up is not anyone's query
            assert all(v.queries == 0 and v.records == 0 for v in op.query_report("warm"))
            assert not [e for e in op.audit("warm") if str(e["action"]).startswith("query")]
        with MatcherClient(target, project.tokens["west"]) as west:
            answer = west.query("warm", indexed[3005].tobytes(), clk_bits=CLK_BITS,
                                fingerprint=FINGERPRINT, purpose="t")  # fmt: skip
            assert [m.partner for m in answer.results[0]] == ["south"]
    finally:
        server.stop(grace=None)


def test_a_limit_change_applies_to_the_next_query(
    matcher: Matcher, people: tuple[np.ndarray, np.ndarray]
) -> None:
    # Limits are cached for the query path; a change must reach the very next query.
    indexed, _ = people
    with matcher.operator() as op:
        project = op.create_project("lim", ["north", "west"])
    with MatcherClient(matcher.target, project.tokens["west"]) as west:

        def ask() -> None:
            west.query("lim", indexed[0].tobytes(), clk_bits=CLK_BITS,
                       fingerprint=FINGERPRINT, purpose="t")  # fmt: skip

        ask()
        ask()
        with matcher.operator() as op:
            op.set_query_limits("lim", member="west", per_day=2)
        with pytest.raises(RejectedError, match="query quota"):
            ask()
        with matcher.operator() as op:
            op.set_query_limits("lim", member="west", per_day=5)
        ask()


def test_the_sketch_screen_keeps_every_match_and_skips_most_rows(
    people: tuple[np.ndarray, np.ndarray],
) -> None:
    indexed, queries = people
    words = as_words(indexed, CLK_BITS)
    popcounts = np.bitwise_count(words).sum(axis=1, dtype=np.int32)
    lsh_plan = plan_tables(len(words), CLK_BITS, float(np.quantile(popcounts, 0.99)), 0.54, 0.8)
    assert lsh_plan is not None
    screened = LshTable.build(words, lsh_plan, 0.8)
    unscreened = LshTable.build(words, lsh_plan, 0.0)  # cuts of 0.0 let every row through
    read = read_all = found = 0
    for q in as_words(queries, CLK_BITS):
        rows, sims, looked, n = screened.search_counted(words, popcounts, q, 0.8)
        rows0, sims0, looked0, n0 = unscreened.search_counted(words, popcounts, q, 0.8)
        assert dict(zip(rows.tolist(), sims.tolist(), strict=True)) == dict(
            zip(rows0.tolist(), sims0.tolist(), strict=True)
        )
        assert looked == looked0
        read, read_all, found = read + n, read_all + n0, found + len(rows)
    assert found > 300
    assert read < read_all / 4  # most candidate CLKs are never read


def test_a_pair_at_the_threshold_passes_the_sketch_screen() -> None:
    # Pairs as far apart as Dice 0.8 allows (both popcounts 400: 160 bits differ), the
    # differing bits placed at random: the screen may drop at most SKETCH_MISS of them.
    rng = np.random.default_rng(5)
    positions = sketch_positions(CLK_BITS)
    cut = sketch_cut(400, 0.8, CLK_BITS)
    trials = 20_000
    differ = np.zeros((trials, CLK_BITS), dtype=bool)
    for row in differ:
        row[rng.choice(CLK_BITS, 160, replace=False)] = True
    dropped = int((differ[:, positions].sum(axis=1) > cut).sum())
    assert dropped <= 5  # expected: at most trials * SKETCH_MISS = 2
    assert sketch_cut(400, 0.9, CLK_BITS) <= cut <= sketch_cut(400, 0.7, CLK_BITS)


def test_huge_page_arrays_are_ordinary_arrays() -> None:
    small = hugepages.empty((10, 4), np.uint64)
    big = hugepages.empty((300_000, 16), np.uint64)
    for array, shape in ((small, (10, 4)), (big, (300_000, 16))):
        assert array.shape == shape and array.dtype == np.uint64
        assert array.flags.c_contiguous and array.flags.writeable
    assert big.ctypes.data % hugepages.HUGE_PAGE == 0
    big[-1, -1] = 7
    assert int(big.sum()) == 7  # the rest of a fresh mapping reads as zero


def huge_kib(address: int) -> int | None:
    """AnonHugePages (KiB) of this process's mapping holding `address`, from smaps."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(x, 16) for x in head.split("-"))
            inside = lo <= address < hi
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1])
    return None


def test_huge_page_arrays_get_huge_pages_where_the_kernel_offers_them() -> None:
    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not mode.exists() or "[never]" in mode.read_text():
        pytest.skip("transparent huge pages are switched off here")
    array = hugepages.empty((4 << 20,), np.uint64)  # 32 MiB
    array[::512] = 1  # touch every 4 KiB page
    assert (huge_kib(array.ctypes.data) or 0) > 0


def test_the_native_look_up_refuses_buffers_that_do_not_fit(
    people: tuple[np.ndarray, np.ndarray],
) -> None:
    if not kernel.NATIVE:
        pytest.skip("the native kernel is not built")
    indexed, _ = people
    words = as_words(indexed[:2000], CLK_BITS)
    lsh_plan = small_plan(words)
    table = LshTable.build(words, lsh_plan, 0.8)
    native = kernel._kernel
    args = [
        words, words.shape[1], lsh_plan.positions, lsh_plan.bits_per_band, table.offsets,
        table.rows, lsh_plan.radius, table.sketch_positions, table.sketches, table.cuts,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="offsets or rows"):
        native.lsh_prepare(*args[:4], table.offsets[:, :-1].copy(), *args[5:])
    with pytest.raises(ValueError, match="sketches or cuts"):
        native.lsh_prepare(*args[:9], table.cuts[:-1].copy())
    with pytest.raises(ValueError, match="query: one CLK"):
        native.lsh_query(table.prepared, words[0].tobytes()[:-8], 0.8, -1)
    with pytest.raises(ValueError, match="the rows the tables were built over"):
        table.search(words[:10], np.zeros(10, np.int32), words[0], 0.8)


@pytest.mark.skipif(not kernel.NATIVE, reason="the native kernel is not built")
@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 300),
    st.sampled_from([1, 2, 8, 16]),
    st.floats(0.05, 0.95),
    st.floats(0.5, 1.0),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_a_segment_scanned_in_the_native_pass_finds_what_anonlink_finds(
    n: int, w: int, density: float, threshold: float, near: bool, seed: int
) -> None:
    # A segment without tables (a small index, a delta) is scanned in the same native call
    # as the look-ups (`Segment.scanner`, `lsh_query_batch`): every row anonlink scores at
    # or above the threshold, with anonlink's score, and no other.
    rng = np.random.default_rng(seed)
    bits = rng.random((n + 1, w * 64)) < density
    if near and n:  # a query close to an indexed row, so that some pairs pass
        bits[n] = bits[0] ^ (rng.random(w * 64) < 0.03)
    bits[n, 0] = True  # a query with no bits set matches nothing by definition
    clks = np.packbits(bits, axis=1, bitorder="little")
    seg = Segment.build(as_words(clks[:n], w * 64), [f"r{i}" for i in range(n)])
    query = as_words(clks[n], w * 64)[0]
    if n == 0:
        assert seg.scanner is None
        return
    [[(sims, rows, looked, read)]] = kernel._kernel.lsh_query_batch(
        [((seg.scanner,), query.tobytes(), threshold, (-1,))]
    )
    found = np.frombuffer(rows, dtype=np.uint32).tolist()
    ours = dict(zip((seg.refs[r] for r in found), np.frombuffer(sims).tolist(), strict=True))
    want = {seg.refs[r]: s for r, s in anonlink_hits(seg.words, query, threshold).items()}
    assert ours == want
    assert len(found) <= looked == read <= n


def test_a_batch_pass_answers_as_each_snapshot_searched_alone(
    people: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    # segment.search_batch (the matcher's passes): tabled main segments, a main segment
    # too small for tables, deltas and dead rows, asks at thresholds above and below the
    # tables', all in one call; the same answers as Snapshot.search one by one.
    monkeypatch.setattr("blindmatch.matcher.core.segment.MIN_ROWS", 500)
    monkeypatch.setattr("blindmatch.matcher.core.index.COMPACT_MIN", 50)
    indexed, queries = people
    indexes = partner_indexes(indexed, {"east": 0, "north": 2000}, 3000)
    small = MemberIndex.load(CLK_BITS, ["w0", "w1"], as_words(indexed[:2], CLK_BITS))
    indexes["north"].apply(["new"], as_words(queries[-1], CLK_BITS), ["north2500"])
    small.apply(["w2"], as_words(queries[-2], CLK_BITS), ["w1"])
    snapshots = {**{n: i.snapshot for n, i in indexes.items()}, "west": small.snapshot}
    assert len(snapshots["north"].delta) == 1 and snapshots["north"].delta.scanner is not None
    assert small.snapshot.main.lsh is None and small.snapshot.main.scanner is not None
    asks = (
        [
            (
                snapshots,
                as_words(np.concatenate([queries[::40], indexed[2400:2600:40]]), CLK_BITS),
                t,
            )
            for t in (0.8, 0.9, 0.7)  # 0.7: below the tables' threshold, so scanned
        ]
        + [
            (snapshots, as_words(queries[-2:], CLK_BITS), 0.8),
            ({}, as_words(queries[:1], CLK_BITS), 0.8),
        ]
    )
    answers = search_batch(asks)
    hits = 0
    for (snaps, qs, t), answer in zip(asks, answers, strict=True):
        assert answer == [{n: s.search(q, t) for n, s in snaps.items()} for q in qs]
        hits += sum(len(f) for a in answer for f in a.values())
    assert hits > 20
    assert answers[3][0]["west"] == [("w2", 1.0)] and answers[3][1]["north"] == [("new", 1.0)]


def test_a_pass_over_partners_holding_the_same_records_answers_as_each_alone(
    people: tuple[np.ndarray, np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Partners holding the same records get the same plan (rtplan plans from the rows), and
    # a pass looks a query up in all their indexes in one native job: the hits are still
    # each index's own (what sharing a query's work across partners must keep).
    monkeypatch.setattr("blindmatch.matcher.core.segment.MIN_ROWS", 500)
    indexed, queries = people
    words = as_words(indexed[:6000], CLK_BITS)
    indexes = {
        n: MemberIndex.load(CLK_BITS, [f"{n}{i}" for i in range(6000)], words, threshold=0.8)
        for n in ("north", "south", "east")
    }
    snapshots = {n: i.snapshot for n, i in indexes.items()}
    plans = [s.main.lsh.plan.positions for s in snapshots.values() if s.main.lsh is not None]
    assert len(plans) == 3 and all(np.array_equal(plans[0], p) for p in plans)
    asks = [
        (snapshots, as_words(np.concatenate([queries[::10], indexed[:6000:300]]), CLK_BITS), 0.8)
    ]
    [together] = search_batch(asks)
    alone = {n: search_batch([({n: s}, asks[0][1], 0.8)])[0] for n, s in snapshots.items()}
    assert together == [{n: alone[n][k][n] for n in snapshots} for k in range(len(together))]
    assert sum(len(h) for answer in together for h in answer.values()) > 3 * 20
