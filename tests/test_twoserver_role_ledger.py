"""What S1 and S2 keep and log for their operators, with real roles and a real matcher on
loopback (docs/operations.md "Two servers and a combiner", "Backing up S1 and S2"): a watch
counted again against a role's query limit after its first count left the window stays
counted across the role's restart (storage/role_store.py `count_query`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from benchmarks.exports import Export
from blindmatch.matcher.rpc.twoserver_service import create_role
from tests.test_twoserver_project import MEMBER_KEY, World, create, world  # noqa: F401
from tests.test_twoserver_watch import Watching, members, until  # noqa: F401

pytestmark = pytest.mark.server

DAY = 86400.0


def restart(world: World, role: str) -> None:  # noqa: F811
    """Stop `role` and start it again on its data dir (another port: nothing calls it)."""
    world.roles[role].stop(grace=None)
    extra = {"s2": f"127.0.0.1:{world.roles['s2'].port}"} if role == "s1" else {}
    world.roles[role] = create_role(role, "127.0.0.1:0", "a key", MEMBER_KEY,
                                    data_dir=world.folder / f"{role}-data", **extra)  # fmt: skip


def test_a_watch_counted_again_after_the_window_stays_counted_across_a_restart(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
) -> None:
    """S1 counts a long-open watch's records again at its first comparison after their count
    left the window (core/querylimit.py); that count, not the first, is the one on disk."""
    south_folder = members["south"][1]
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    s1 = world.roles["s1"].service
    assert s1.queries is not None
    realtime = world.server.realtime
    watch = Watching(world, two.tokens["north"], south_folder, [0, 1])
    try:
        s1.queries.clock = lambda: time.time() - 1.5 * DAY  # the first count, a day and a half ago
        for n in (1, 2):  # south uploads; the second time, the first count has left the day
            compared = realtime.two_watches.compared
            assert world.cli("upload", str(south_folder), "--project", "shares",
                             token=two.tokens["south"]) == 0  # fmt: skip
            until(lambda: realtime.two_watches.compared == compared + 1)  # noqa: B023
            until(lambda: len(watch.events) == 2 * n)  # noqa: B023
            s1.queries.clock = time.time
        assert watch.error is None
        name = next(n for n in s1.held if "@" in n)
    finally:
        watch.close()
    assert s1.queries.counter.used("shares", "north", time.time()) == (2, 2)
    restart(world, "s1")
    queries = world.roles["s1"].service.queries
    assert queries is not None and queries.counter.counted(name)
    assert queries.counter.used("shares", "north", time.time()) == (2, 2)
