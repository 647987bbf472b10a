"""The matcher's stop as its two-server set-up sees it (rpc/twoserver_project.py
`combiner_setup`: `close`, then `disconnect`; `connect` as a matcher starts again on it).
Between the two (the stop's wait for its background conversion, its watches' ends and their
Forget over the still open channels) the set-up hands out C's stopped conversions: a query's
or watch's servers taken then admit no conversion, and a conversion queued then is not
started, so nothing is dealt that the stop does not wait for (before, `close` put fresh
conversions in place at once: one admitted on them was dealt while the stop went on and met
its closed channels, and what it counted went where no one looks). A matcher started again
on the set-up gets fresh ones. With S1, S2 and C's kept channels on loopback."""

from __future__ import annotations

import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc.twoserver_conversions import STOPPING
from blindmatch.matcher.rpc.twoserver_standahead import STOPPED, Ahead
from tests.test_twoserver_blocks import KEY, MEMBER_KEY, RULE, THRESHOLD
from tests.test_twoserver_connected import failed_threads as failed_threads  # the fixture
from tests.test_twoserver_standing import Roles
from tests.test_twoserver_standing import roles as roles  # the fixtures
from tests.test_twoserver_standing import shares as shares
from tests.test_twoserver_standing_life import held

pytestmark = pytest.mark.server
ROLES = ("s1", "s2")


def _set_up(roles: Roles, shares: dict[str, client.SharedUpload]) -> tuple[object, list[int]]:
    from blindmatch.matcher.rpc.twoserver_project import combiner_setup

    roles.upload("south", shares["south"])
    setup = combiner_setup(*(f"127.0.0.1:{roles.running[r].port}" for r in ROLES),
                           KEY, MEMBER_KEY)  # fmt: skip
    setup.connect()  # (as the matcher's start does: realtime/engine.py)
    return setup, [8 * int(x.shape[1]) for x in shares["south"].s1.shares]


def test_servers_taken_during_the_stop_admit_no_conversion_and_a_restart_gets_fresh_ones(
    roles: Roles, shares: dict[str, client.SharedUpload], failed_threads: list[BaseException]
) -> None:
    """A query's or watch's servers taken after the stop's `close` (a watch's comparison the
    stop has not ended yet): C's conversions as the stop left them, stopped, so admitting a
    conversion answers STOPPING (the part goes by pairs) and what is counted there is seen
    on the set-up's; once started again (`connect`), the set-up's are fresh."""
    setup, bits = _set_up(roles, shares)
    first = setup.servers(["south"], [90], bits)
    before = first.conversions
    first.close()
    setup.close()  # the stop begins: the channels stay open until `disconnect`
    during = setup.servers(["south"], [90], bits)
    try:
        why = during.conversions.admit(("south", 90, tuple(bits), (THRESHOLD,), b""), 1)
        if why == "":
            during.conversions.end()  # (the old code admitted it: ended, so the stop ends)
        assert why == STOPPING
        assert during.conversions is before and during.conversions.stopping()
        assert before.declined == 1  # (counted where the set-up still shows it)
    finally:
        during.close()
    setup.disconnect()
    setup.connect()  # a matcher started again on the set-up
    again = setup.servers(["south"], [90], bits)
    try:
        assert again.conversions is not before and not again.conversions.stopping()
        assert again.conversions.declined == 0
    finally:
        again.close()
    setup.close()
    setup.disconnect()
    assert roles.conversions() == [0, 0] and failed_threads == []


def test_a_conversion_queued_during_the_stop_is_not_started_and_s1_and_s2_hold_nothing(
    roles: Roles, shares: dict[str, client.SharedUpload], failed_threads: list[BaseException]
) -> None:
    """south queued ahead of its queries after the stop's `close` and before its
    `disconnect`: not started (the callers waiting for it told the matcher stopped), S1 and
    S2 convert nothing (before: it was converted whole on conversions no stop looked at, S1
    and S2 kept it past the matcher's stop)."""
    setup, bits = _set_up(roles, shares)
    ahead = setup.when_converted.__self__  # type: ignore[attr-defined]  # (the set-up's)
    assert isinstance(ahead, Ahead)
    setup.close()
    told: list[tuple[bool, str]] = []
    setup.convert_ahead("south", 90, tuple(bits), THRESHOLD, Rule(*RULE))
    ahead.when_made("south", lambda kept, why: told.append((kept, why)))
    assert ahead.idle(600)  # (a bound on a hang, not a timing)
    setup.disconnect()
    assert ahead.started == 0 and told in ([], [(False, STOPPED)])
    assert roles.conversions() == [0, 0] and held(roles) == [0, 0] and failed_threads == []
