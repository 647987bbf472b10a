"""A change to an index with a fallback CLK is atomic for the queries that read it.

`FallbackIndex` keeps three parts (the first CLKs; the fallback CLKs of the records that
have the left-out fields, and of those that lack them). A change used to be applied to them
one after another: one failing part-way (out of memory while building a part's next
snapshot) left the first part changed and the others not, and a query, which reads without
the writer's lock, could see that until the matcher read the index again from index.sqlite
(realtime/indexes.py). Now every part's next snapshot is built before any is swapped in, and
a query reads one view of all three (core/fallbackindex.py `FallbackIndex.apply`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from blindmatch.matcher.core import index as index_module
from blindmatch.matcher.core.fallbackindex import FallbackIndex, search_indexes
from blindmatch.matcher.core.segment import Segment

BITS, FALLBACK = 2048, 1024


def records(n: int, seed: int) -> np.ndarray:
    """Random 2,048-bit CLKs whose fallback half is about half as full as the first: they
    have the fallback's fields (`fallback.lacking` says no), but every tenth, which lacks
    them (a fallback half as full as its first)."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**64, size=(n, BITS // 64), dtype=np.uint64)
    half = rng.integers(0, 2**64, size=(n, FALLBACK // 64), dtype=np.uint64)
    words[:, FALLBACK // 64 :] &= half
    words[::10, FALLBACK // 64 :] = words[::10, : FALLBACK // 64]
    return words


def hits(index: FallbackIndex, query: np.ndarray) -> list[str]:
    return [ref for ref, _ in search_indexes({"m": index.snapshot}, query, 0.9)["m"]]


def test_a_change_failing_part_way_leaves_what_queries_read_as_it_was(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The second part's build fails (injected MemoryError) after the first part's has
    succeeded: the change fails, and a query finds the index exactly as before (before: the
    first part held the change, so a query found the records put and missed the one
    removed, although the change had failed)."""
    words = records(200, seed=5)
    refs = [f"r{i}" for i in range(200)]
    index = FallbackIndex.load(BITS, FALLBACK, refs[:150], words[:150])
    assert index.lacking and set(index.lacking) < set(refs[:150])
    put = list(range(151, 160))  # (150: lacks the fields; these have them, but 160's)
    assert hits(index, words[1]) == ["r1"] and hits(index, words[151]) == []
    builds: list[int] = []

    class Failing:  # Segment, its second build failing (the second part's next snapshot)
        @staticmethod
        def build(words: np.ndarray, refs: Sequence[str], **kwargs: Any) -> Segment:
            builds.append(len(refs))
            if len(builds) == 2:
                raise MemoryError("injected")
            return Segment.build(words, refs, **kwargs)

        empty = staticmethod(Segment.empty)

    monkeypatch.setattr(index_module, "Segment", Failing)
    with pytest.raises(MemoryError):
        index.apply([refs[i] for i in put], words[put], ["r1"])
    assert len(builds) == 2  # the first part's was built
    assert hits(index, words[1]) == ["r1"]  # not removed
    assert all(hits(index, words[i]) == [] for i in put)  # not put
    assert sorted(index.refs()) == sorted(refs[:150]) and len(index) == 150
    monkeypatch.setattr(index_module, "Segment", Segment)
    index.apply([refs[i] for i in put], words[put], ["r1"])  # (the same change, now whole)
    assert hits(index, words[1]) == []
    assert all(hits(index, words[i]) == [refs[i]] for i in put)
    assert hits(index, words[160]) == []
    assert len(index) == 150 - 1 + len(put)
