"""The standing indexes' LSH tables warmed up before the first query (realtime/indexes.py)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

from blindmatch.matcher.core.fallbackindex import FallbackIndex
from blindmatch.matcher.core.index import MemberIndex, Snapshot, warm_up

log = logging.getLogger("blindmatch.matcher.realtime")


def warm_up_all(
    by_project: Mapping[str, Mapping[str, MemberIndex | FallbackIndex]],
    threshold_of: Callable[[str], float | None],
) -> None:
    """Run each project's tables through `index.warm_up` before the first query.

    An index with a fallback CLK has tables for each half: its first halves warm up
    with the project's plain indexes of their width, its fallback halves apart (a
    look-up mixes indexes of one CLK width only, and a member's fallback halves are in
    two parts: those of the records that have the fields and those that lack them)."""
    started, lookups, on_fallback = time.perf_counter(), 0, 0
    for project, members in by_project.items():
        threshold = threshold_of(project)
        if not threshold:
            continue
        # (part: 0 first or plain, 1 fallback having the fields, 2 lacking them; words
        # per CLK) -> {member: snapshot}
        groups: dict[tuple[int, int], dict[str, Snapshot]] = {}
        for m, index in members.items():
            parts = (
                [index.snapshot]
                if isinstance(index, MemberIndex)
                else [part.snapshot for part in index.parts]
            )
            for kind, snap in enumerate(parts):
                groups.setdefault((kind, snap.main.words.shape[1]), {})[m] = snap
        for (kind, _), snapshots in groups.items():
            ran = warm_up(snapshots, threshold)
            lookups += ran
            on_fallback += ran if kind else 0
    if lookups:
        log.info(
            "warmed the standing indexes' look-up tables with %d look-ups in %.1f s "
            "(%d of them on fallback CLKs' tables)",
            lookups,
            time.perf_counter() - started,
            on_fallback,
        )
