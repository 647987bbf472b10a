"""Concurrent queries' look-ups combined into one pass (matcher/realtime/lookups.py)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from benchmarks.synthclks import CLK_BITS, Population
from blindmatch.matcher.core import segment
from blindmatch.matcher.core.index import as_words, search_snapshots
from blindmatch.matcher.errors import ResourceExhausted
from blindmatch.matcher.realtime import lookups as lookups_module
from blindmatch.matcher.realtime.lookups import Lookups
from tests.support import partner_indexes


@pytest.fixture(scope="module")
def clks() -> np.ndarray:
    rng = np.random.default_rng(3)
    return Population(6_000, 3).encode(np.arange(6_000), rng, np.zeros(6_000, dtype=bool))


def first_then_the_rest(lookups: Lookups, threads: list[threading.Thread]) -> None:
    """Start the first thread, and the others once its pass is running (so they queue behind
    it); wait for all."""
    threads[0].start()
    while not lookups._running:
        time.sleep(0.001)
    for t in threads[1:]:
        t.start()
    for t in threads:
        t.join(timeout=60)


def held_first_batch(monkeypatch: pytest.MonkeyPatch, lookups: Lookups, queued: int) -> None:
    """Hold the first batch until `queued` more queries wait behind it, so what arrives
    together is known (the look-ups themselves are the real ones)."""
    real = segment.search_batch
    first = threading.Event()

    def search_batch(asks):  # type: ignore[no-untyped-def]
        if not first.is_set():
            first.set()
            deadline = time.monotonic() + 30
            while len(lookups._waiting) < queued and time.monotonic() < deadline:
                time.sleep(0.001)
        return real(asks)

    monkeypatch.setattr(lookups_module, "search_batch", search_batch)


def test_queries_that_arrive_together_are_answered_in_one_pass(
    clks: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segment, "MIN_ROWS", 1000)
    snapshots = {
        name: index.snapshot
        for name, index in partner_indexes(clks, {"north": 0, "south": 1500}, 3000).items()
    }
    assert all(s.main.lsh is not None for s in snapshots.values())
    lookups = Lookups()
    held_first_batch(monkeypatch, lookups, queued=11)
    rows = [10, 20, 1600, 1700, 2900, 4000, 5999, 30, 1510, 2999, 3000, 100]
    answers: dict[int, list[dict[str, list[tuple[str, float]]]]] = {}

    def ask(row: int) -> None:
        answers[row] = lookups.search(snapshots, as_words(clks[row : row + 1], CLK_BITS), 0.8)

    threads = [threading.Thread(target=ask, args=(r,)) for r in rows]
    first_then_the_rest(lookups, threads)
    # The first ran alone; the eleven that arrived meanwhile, together in one more pass.
    assert (lookups.batches, lookups.asks) == (2, 12)
    for row in rows:
        alone = search_snapshots(snapshots, as_words(clks[row : row + 1], CLK_BITS)[0], 0.8)
        assert answers[row] == [alone]
    assert answers[1600][0]["north"][0] == ("north1600", 1.0)
    assert answers[1600][0]["south"][0] == ("south1600", 1.0)


def test_a_bad_query_in_a_batch_fails_alone(
    clks: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(segment, "MIN_ROWS", 1000)
    snapshots = {"north": partner_indexes(clks, {"north": 0}, 3000)["north"].snapshot}
    lookups = Lookups()
    held_first_batch(monkeypatch, lookups, queued=3)
    good = as_words(clks[5:6], CLK_BITS)
    bad = np.zeros((1, 8), dtype=np.uint64)  # 512 bits against 1024-bit indexes
    results: dict[str, object] = {}

    def ask(name: str, query: np.ndarray) -> None:
        try:
            results[name] = lookups.search(snapshots, query, 0.8)
        except Exception as exc:
            results[name] = exc

    threads = [
        threading.Thread(target=ask, args=(name, q))
        for name, q in (("first", good), ("good1", good), ("bad", bad), ("good2", good))
    ]
    first_then_the_rest(lookups, threads)
    assert isinstance(results["bad"], ValueError)
    for name in ("first", "good1", "good2"):
        answer = results[name]
        assert isinstance(answer, list) and answer[0]["north"][0] == ("north5", 1.0)


def test_a_pass_finishes_and_commits_its_queries_in_one_write(
    clks: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Queries answered through `answer`: each gets its own reply, made from its own hits,
    and the records of every query of a pass go to `commit` in one call, none lost, before
    any of them returns."""
    monkeypatch.setattr(segment, "MIN_ROWS", 1000)
    snapshots = {"north": partner_indexes(clks, {"north": 0}, 3000)["north"].snapshot}
    commits: list[list[object]] = []
    committed: set[object] = set()
    lookups = Lookups(
        commit=lambda records: (commits.append(list(records)), committed.update(records))
    )
    held_first_batch(monkeypatch, lookups, queued=7)
    rows = [5, 10, 20, 30, 40, 50, 60, 70]
    replies: dict[int, object] = {}

    def ask(row: int) -> None:
        def finish(found):  # type: ignore[no-untyped-def]
            return [ref for ref, _ in found[0]["north"]], f"record {row}"

        reply = lookups.answer(snapshots, as_words(clks[row : row + 1], CLK_BITS), 0.8, finish)
        assert f"record {row}" in committed  # durable before the reply is returned
        replies[row] = reply

    threads = [threading.Thread(target=ask, args=(r,)) for r in rows]
    first_then_the_rest(lookups, threads)
    for row in rows:
        assert replies[row][0] == f"north{row}"  # type: ignore[index]
    # The first pass alone, then the seven that arrived meanwhile: two writes in all.
    assert commits[0] == ["record 5"] and len(commits) == 2
    assert sorted(r for batch in commits for r in batch) == sorted(f"record {r}" for r in rows)


def test_a_failed_commit_fails_every_query_of_its_pass(
    clks: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No query is answered without its record: when the pass's one write fails, every
    query of the pass raises it; a query whose own `finish` failed raises its own error
    and its record is not asked for; the next pass is not affected."""
    monkeypatch.setattr(segment, "MIN_ROWS", 1000)
    snapshots = {"north": partner_indexes(clks, {"north": 0}, 3000)["north"].snapshot}
    writes: list[list[object]] = []

    def commit(records):  # type: ignore[no-untyped-def]
        writes.append(list(records))
        if len(writes) == 2:  # the pass of the queries that waited behind the first
            raise ResourceExhausted("the disk is full")

    lookups = Lookups(commit=commit)
    held_first_batch(monkeypatch, lookups, queued=4)
    results: dict[str, object] = {}

    def ask(name: str) -> None:
        def finish(found):  # type: ignore[no-untyped-def]
            if name == "broken":
                raise ValueError("could not make this reply")
            return "answered", name

        try:
            results[name] = lookups.answer(snapshots, as_words(clks[5:6], CLK_BITS), 0.8, finish)
        except Exception as exc:
            results[name] = exc

    names = ["first", "a", "b", "broken", "c"]
    threads = [threading.Thread(target=ask, args=(n,)) for n in names]
    first_then_the_rest(lookups, threads)
    assert results["first"] == "answered"
    for name in ("a", "b", "c"):
        assert isinstance(results[name], ResourceExhausted), results[name]
    assert isinstance(results["broken"], ValueError)
    assert writes[0] == ["first"] and sorted(writes[1]) == ["a", "b", "c"]  # type: ignore[type-var]
    # The matcher goes on: the next query is answered and written.
    assert (
        lookups.answer(snapshots, as_words(clks[5:6], CLK_BITS), 0.8, lambda f: ("ok", "d")) == "ok"
    )
    assert writes[-1] == ["d"]
