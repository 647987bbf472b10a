"""A two-server watch S1 is busy for (its proposals all in flight: RESOURCE_EXHAUSTED marked
retryable) is compared again later, not waited for on the comparing thread
(matcher/realtime/twowatch.py `later`): another watch's notifications of the same upload
are not held back by it, the busy watch is told once S1 has room, and after BUSY_WAITS of
S1 busy all the while the watch ends, Busy. A real matcher, S1 and S2 on loopback; S1's
answer to the busy watch's comparisons is a stand-in's (Busy while `busy_for` names it), and
the waits are the test's to end (no sleeping: what is asserted is what was told, not when)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from benchmarks.exports import Export
from blindmatch.client.errors import BusyError
from blindmatch.matcher import errors
from blindmatch.matcher.realtime import twoquery
from blindmatch.matcher.realtime.twowatch import BUSY_WAITS
from tests.test_twoserver_project import World, create, world  # noqa: F401
from tests.test_twoserver_watch import Watching, members, until  # noqa: F401

pytestmark = pytest.mark.server


def test_a_busy_watch_is_compared_again_later_and_holds_back_no_other_watch(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
) -> None:
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    for name in ("north", "west"):  # each watcher's own upload first
        assert world.cli("upload", str(members[name][1]), "--project", "shares",
                         token=two.tokens[name]) == 0  # fmt: skip
    watches = world.server.realtime.two_watches
    # S1 is busy for north's watch's comparisons while `busy_for` names north.
    busy_for = {"north"}

    def s1(setup: Any, threshold: float, name: str, records: int, p: Any,
           standing: bool = False) -> Any:  # fmt: skip
        if any(f"/{m}@" in name for m in busy_for):
            raise errors.Busy("S1 (stand-in): its proposals are all in flight")
        return twoquery.search_partner(setup, threshold, name, records, p, standing)

    waiting: list[tuple[float, Callable[[], None]]] = []  # (seconds, then): not yet ended
    watches.search = s1
    watches.later = lambda seconds, then: waiting.append((seconds, then))

    def end_wait() -> float:
        seconds, then = waiting.pop(0)
        then()
        return seconds

    south_folder = members["south"][1]
    # With their band keys at once (S1 blocks every pair in the suite: keyless, each would
    # be opened again at its first comparison; tests/test_twoserver_watch_keys.py).
    north = Watching(world, two.tokens["north"], south_folder, [0, 1], band_keys=True)
    west = Watching(world, two.tokens["west"], south_folder, [0, 1], band_keys=True)
    try:
        compared = watches.compared
        assert world.cli("upload", str(south_folder), "--project", "shares",
                         token=two.tokens["south"]) == 0  # fmt: skip
        # West is told of both its records while north's comparison waits to be asked again
        # (the comparing thread did not wait for it).
        until(lambda: len(west.events) == 2 or west.error is not None)
        until(lambda: len(waiting) == 1)
        assert west.error is None and {e.partner for e in west.events} == {"south"}
        assert north.events == [] and north.error is None and not north.watch.ended
        # S1 has room again: north's comparison asked again, north told of both records.
        busy_for.clear()
        assert end_wait() == BUSY_WAITS[0]
        until(lambda: len(north.events) == 2 or north.error is not None)
        assert north.error is None and sorted(e.index or 0 for e in north.events) == [0, 1]
        assert watches.compared == compared + 1 and len(west.events) == 2
        # S1 busy all the while for west's next upload: asked again after each of
        # BUSY_WAITS, then north's watch ends, Busy; west's watch goes on.
        busy_for.add("north")
        assert world.cli("upload", str(members["west"][1]), "--project", "shares",
                         token=two.tokens["west"]) == 0  # fmt: skip
        waited = []
        for _ in BUSY_WAITS:
            until(lambda: len(waiting) == 1)
            waited.append(end_wait())
        assert waited == list(BUSY_WAITS)
        until(lambda: north.error is not None)
        assert isinstance(north.error, BusyError)
        assert "its proposals are all in flight" in str(north.error)
        assert waiting == [] and len(north.events) == 2
        assert west.error is None and not west.watch.ended
    finally:
        west.close()
        north.close()
