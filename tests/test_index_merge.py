"""Merging a standing index's delta in the background: the change that starts a merge is
acknowledged at once, queries meanwhile see every change, and the changes made during the
merge survive it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest

from benchmarks.synthclks import CLK_BITS, Population
from blindmatch.client import MatcherClient
from blindmatch.matcher.core import index as index_module
from blindmatch.matcher.core import segment as segment_module
from blindmatch.matcher.core.index import MemberIndex, Segment, as_words
from blindmatch.protos.wire import clk_digest
from tests.support import Matcher

N = 3000
SPARE = 1000  # people beyond the first N, for the tests' puts

FINGERPRINT = bytes(range(32))


@pytest.fixture(scope="module")
def clks() -> np.ndarray:
    """The file's people, made once (read-only: no test writes to them)."""
    rng = np.random.default_rng(5)
    people = Population(N + SPARE, 5).encode(np.arange(N + SPARE), rng, np.zeros(N + SPARE, bool))
    words = as_words(people, CLK_BITS)
    words.flags.writeable = False
    return words


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Merges wait for this event before building: the test decides when they finish."""
    monkeypatch.setattr(segment_module, "MIN_ROWS", 500)  # so the merged segment gets tables
    monkeypatch.setattr(index_module, "COMPACT_MIN", 50)
    opened = threading.Event()
    build = Segment.build.__func__

    def gated(cls: type[Segment], *args: object, **kwargs: object) -> Segment:
        if threading.current_thread().name == "blindmatch-merge":
            assert opened.wait(60)
        return build(cls, *args, **kwargs)

    monkeypatch.setattr(Segment, "build", classmethod(gated))
    yield opened
    opened.set()


def hits(index: MemberIndex, clk: np.ndarray) -> dict[str, float]:
    return dict(index.snapshot.search(clk, 0.8))


def assert_holds(index: MemberIndex, truth: dict[str, np.ndarray]) -> None:
    """Each record is found under its ref (and its CLK is what was put), nothing else is."""
    assert len(index) == len(truth) and sorted(index.refs()) == sorted(truth)
    for ref, clk in truth.items():
        assert hits(index, clk).get(ref) == 1.0
        assert (index.clk(ref) == clk).all()


def test_a_merge_keeps_the_changes_made_while_it_ran(
    clks: np.ndarray, gate: threading.Event
) -> None:
    truth = {f"r{i}": clks[i] for i in range(N)}
    index = MemberIndex.load(CLK_BITS, list(truth), clks[:N], threshold=0.8)
    first_tables = index.snapshot.main.lsh
    assert first_tables is not None

    puts = {f"p{i}": clks[N + i] for i in range(60)}  # over the merge point (50)
    index.apply(list(puts), np.stack(list(puts.values())), [])
    truth.update(puts)
    assert index.merging  # acknowledged, and merging in the background
    assert_holds(index, truth)

    # While it runs: replace and remove rows of the old main and of the delta being
    # merged, and add new ones.
    late = {"r1": clks[N + 100], "p0": clks[N + 101], "late": clks[N + 102]}
    index.apply(list(late), np.stack(list(late.values())), ["r2", "p1"])
    truth.update(late)
    del truth["r2"], truth["p1"]
    assert_holds(index, truth)
    assert "r2" not in hits(index, clks[2]) and "r1" not in hits(index, clks[1])

    gate.set()
    assert index.wait_merged(timeout=60)
    snap = index.snapshot
    assert snap.main.lsh is not None and snap.main.lsh is not first_tables
    assert len(snap.main) == N + 60  # the rows as they stood when the merge began
    assert sorted(snap.delta.refs) == ["late", "p0", "r1"]  # what changed meanwhile
    assert len(snap.dead) == 4  # r1, r2, p0, p1 as the merge saw them
    assert_holds(index, truth)
    assert "r2" not in hits(index, clks[2]) and "p1" not in hits(index, clks[N + 1])


def test_a_change_far_behind_waits_for_the_merge(clks: np.ndarray, gate: threading.Event) -> None:
    truth = {f"r{i}": clks[i] for i in range(N)}
    index = MemberIndex.load(CLK_BITS, list(truth), clks[:N], threshold=0.8)
    index.apply(["p0"], clks[N : N + 1], [])
    index.apply([f"p{i}" for i in range(1, 60)], clks[N + 1 : N + 60], [])
    assert index.merging
    # 8 x the merge point more: merged before the change returns, after the running merge.
    bulk = {f"b{i}": clks[i] for i in range(450)}
    done = threading.Thread(
        target=index.apply, args=(list(bulk), np.stack(list(bulk.values())), [])
    )
    done.start()
    done.join(0.5)
    assert done.is_alive()  # held back by the running merge
    gate.set()
    done.join(60)
    assert not done.is_alive() and not index.merging
    truth.update({f"p{i}": clks[N + i] for i in range(60)} | bulk)
    assert len(index.snapshot.delta) == 0 and len(index.snapshot.main) == len(truth)
    assert_holds(index, truth)


def test_a_failed_merge_loses_nothing_and_the_next_change_retries(
    clks: np.ndarray, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(index_module, "COMPACT_MIN", 50)
    build = Segment.build.__func__
    failures = [MemoryError("no room")]

    def failing_once(cls: type[Segment], *args: object, **kwargs: object) -> Segment:
        if threading.current_thread().name == "blindmatch-merge" and failures:
            raise failures.pop()
        return build(cls, *args, **kwargs)

    monkeypatch.setattr(Segment, "build", classmethod(failing_once))
    truth = {f"r{i}": clks[i] for i in range(N)}
    index = MemberIndex.load(CLK_BITS, list(truth), clks[:N])
    puts = {f"p{i}": clks[N + i] for i in range(60)}
    index.apply(list(puts), np.stack(list(puts.values())), [])
    truth.update(puts)
    assert index.wait_merged(timeout=60)
    assert "merging an index's delta failed" in caplog.text
    assert len(index.snapshot.delta) == 60  # still there, still searched
    assert_holds(index, truth)
    index.apply(["q"], clks[N + 200 : N + 201], [])  # the next change merges
    truth["q"] = clks[N + 200]
    assert index.wait_merged(timeout=60)
    assert len(index.snapshot.delta) == 0 and len(index.snapshot.main) == N + 61
    assert_holds(index, truth)


def test_over_grpc_every_change_is_seen_while_merges_run_behind_it(
    matcher: Matcher, clks: np.ndarray, gate: threading.Event
) -> None:
    """Every change below crosses the merge point. The first merge is held until four more
    changes have come in; after that merges start and finish as they will. Each change is
    visible to the next query throughout, and when the merges are done the index lists
    exactly what was put."""
    with matcher.operator() as op:
        tokens = op.create_project("m", ["north", "west"]).tokens
        op.set_query_limits("m", per_minute=10**6, per_day=10**6)
    rng = np.random.default_rng(8)
    truth = {f"r{i}": clks[i] for i in range(N)}
    spare = iter(range(N, N + SPARE))
    with (
        MatcherClient(matcher.target, tokens["north"]) as north,
        MatcherClient(matcher.target, tokens["west"]) as west,
    ):

        def change(puts: dict[str, np.ndarray], removes: list[str]) -> None:
            north.change_index("m", clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                               puts=[(r, c.tobytes()) for r, c in puts.items()],
                               removes=removes)  # fmt: skip

        def held(clk: np.ndarray) -> bool:
            answer = west.query("m", clk.tobytes(), clk_bits=CLK_BITS, fingerprint=FINGERPRINT,
                                purpose="merge test")  # fmt: skip
            return [m.partner for m in answer.results[0]] == ["north"]

        change(truth, [])
        index = matcher.server.realtime.indexes.get("m", "north")
        for step in range(12):
            refs = sorted(truth)
            replaced = [refs[i] for i in rng.choice(len(refs), 40, replace=False)]
            removed = [r for r in refs[step::97] if r not in replaced][:10]
            puts = {r: clks[next(spare)] for r in replaced} | {
                f"n{step}-{k}": clks[next(spare)] for k in range(20)
            }
            gone = [truth[r] for r in removed + replaced[:3]]
            change(puts, removed)
            assert index.merging or step > 4
            if step == 4:
                gate.set()
            truth.update(puts)
            for r in removed:
                del truth[r]
            assert all(held(truth[r]) for r in (replaced[0], f"n{step}-0", f"n{step}-19"))
            assert not any(held(c) for c in gone)  # removed, or replaced by someone else
        assert index.wait_merged(timeout=60)
        assert len(index.snapshot.main) > N  # merged at least once
        assert north.list_index("m") == {r: clk_digest(c.tobytes()) for r, c in truth.items()}
        assert all(held(truth[r]) for r in sorted(truth)[::50])
