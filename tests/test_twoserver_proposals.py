"""S1 holds at most MAX_PROPOSALS proposals (runs and queries) at once (matcher/rpc/
twoserver_proposals.py): one more, while every one is in flight, is refused RESOURCE_EXHAUSTED
marked retryable, saying how many are in flight and to retry, and the runs in flight go on; a
proposal unused for IDLE_SECONDS is ended to make room, and a batch of it that comes later is
refused saying it was ended and why. Real S1 and S2 on loopback, the limit set to 2."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher import errors
from blindmatch.matcher.core import linkbit, tworun
from blindmatch.matcher.core.compare import merge
from blindmatch.matcher.core.twoserver import Combiner, Proposed
from blindmatch.matcher.rpc import twoserver_proposals
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_proposals import IDLE_SECONDS
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from tests.support import Clock

pytestmark = pytest.mark.server
MEMBER_KEY = "the members' key"
PEOPLE = 20
THRESHOLD = 0.8


@dataclass
class World:
    key: str
    s1: RunningRole
    s2: RunningRole
    clock: Clock

    def propose(self, *members: str) -> Run:
        servers = RemoteServers(f"127.0.0.1:{self.s1.port}", f"127.0.0.1:{self.s2.port}",
                                self.key, members, [PEOPLE] * len(members), [1024])  # fmt: skip
        combiner = Combiner(None, THRESHOLD, clks=1)
        try:
            parts = servers.propose(combiner.lacking(), combiner.cutoffs, combiner.rule)
        except BaseException:
            servers.close()
            raise
        return Run(servers, combiner, parts)


@dataclass
class Run:
    servers: RemoteServers
    combiner: Combiner
    parts: list[Proposed]

    def links(self) -> int:
        """Every part's batches evaluated: the links C learns."""
        try:
            t = linkbit.Transcript()
            found = [tworun.proposed_links(self.servers, self.combiner, i, p, t, {})
                     for i, p in enumerate(self.parts)]  # fmt: skip
            return len(merge(found).rec0)
        finally:
            self.servers.close()


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setattr(twoserver_proposals, "MAX_PROPOSALS", 2)
    key, clock = secrets.token_urlsafe(16), Clock()
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}", clock=clock)
    # Four members holding the same people: every pair of them links each person.
    clks = np.random.default_rng(7).integers(0, 256, (PEOPLE, 128), dtype=np.uint8)
    up = client.shared_upload(clks, b"secret", client.BandPlan(bits=20, bands=20))
    try:
        for member in ("north", "south", "west", "east"):
            for role, running in (("s1", s1), ("s2", s2)):
                with RoleClient(role, f"127.0.0.1:{running.port}", MEMBER_KEY) as c:
                    c.upload(member, up)
        yield World(key, s1, s2, clock)
    finally:
        s1.stop(grace=None)
        s2.stop(grace=None)


def test_one_more_proposal_than_s1_holds_is_refused_retryable_and_the_runs_go_on(
    world: World,
) -> None:
    first, second = world.propose("north", "south"), world.propose("west", "east")
    with pytest.raises(errors.Busy) as busy:  # RESOURCE_EXHAUSTED, marked retryable
        world.propose("north", "west")
    assert isinstance(busy.value, errors.ResourceExhausted) and busy.value.retryable
    assert "S1 holds 2 proposals in flight" in str(busy.value)
    assert "retry when one ends" in str(busy.value)
    # Neither run in flight was ended by it: each links its 20 people.
    assert first.links() == PEOPLE
    assert second.links() == PEOPLE
    # A second run over a run's members replaces its proposal: not refused.
    world.propose("north", "south").servers.close()


def test_a_proposal_idle_past_its_time_makes_room_and_its_late_batch_says_why(
    world: World,
) -> None:
    first, second = world.propose("north", "south"), world.propose("west", "east")
    world.clock.advance(IDLE_SECONDS + 1)
    assert first.links() == PEOPLE  # used now: in flight again
    third = world.propose("north", "west")  # room: the second, idle, ended
    assert third.links() == PEOPLE
    with pytest.raises(errors.FailedPrecondition) as ended:
        second.links()
    message = str(ended.value)
    assert "S1 ended run" in message and "['west', 'east']" in message
    assert f"unused for {IDLE_SECONDS + 1:.0f} s" in message
    assert "limit of 2 proposals" in message and "run again" in message
    # Both in flight again (the first and the third): one more is refused.
    with pytest.raises(errors.Busy):
        world.propose("south", "east")
