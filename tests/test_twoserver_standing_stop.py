"""A standing conversion that meets the matcher's stop (rpc/twoserver_conversions.py
`Conversions.close`, rpc/twoserver_standdeal.py, rpc/twoserver_standgive.py): once the stop
began, no piece is dealt. One admitted whose piece 0 was not yet dealt when the stop's wait
for it (CLOSE_SECONDS) ran out and its channels closed ends quietly, cancelled (before, its
piece 0 met the closed channels: its give-up then failed twice, two warnings, and C counted
it failed, a third); one in the background stops before its next piece and is given up at S1
and S2 while the channels are open, cancelled, not failed; a give-up that finds the channels
closed is not sent (S1's and S2's stale sweep drops what they hold), one line at info. With
S1, S2 and C's kept channels on loopback (`combiner_setup`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc import twoserver_conversions
from blindmatch.matcher.rpc import twoserver_standdeal as standdeal
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_conversions import Conversions
from blindmatch.matcher.rpc.twoserver_standahead import Ahead, Partner
from blindmatch.matcher.rpc.twoserver_standgive import give_up
from blindmatch.protos import blindmatch_pb2 as pb
from tests.test_twoserver_blocks import KEY, MEMBER_KEY, RULE, THRESHOLD, entries
from tests.test_twoserver_connected import failed_threads as failed_threads  # the fixture
from tests.test_twoserver_standing import NAMES, Roles
from tests.test_twoserver_standing import roles as roles  # the fixtures
from tests.test_twoserver_standing import shares as shares
from tests.test_twoserver_standing_life import held, until

pytestmark = pytest.mark.server
ROLES = ("s1", "s2")
STOPPED_LINE = "south's upload not converted ahead of its queries: the matcher stopped"


class Matcher:
    """C's side of a matcher over `roles`: its set-up (kept channels, conversions), south's
    CLK widths, and its stop as the matcher's (`close`, then `disconnect`)."""

    def __init__(self, roles: Roles, shares: dict[str, client.SharedUpload]) -> None:
        from blindmatch.matcher.rpc.twoserver_project import combiner_setup

        roles.upload("south", shares["south"])
        self.setup = combiner_setup(*(f"127.0.0.1:{roles.running[r].port}" for r in ROLES),
                                    KEY, MEMBER_KEY)  # fmt: skip
        self.bits = tuple(8 * int(x.shape[1]) for x in shares["south"].s1.shares)
        held = self.setup.servers(["south"], [90], list(self.bits))
        self.conversions: Conversions = held.conversions
        held.close()
        self.stopped = 0

    def stop(self) -> None:
        self.stopped += 1
        self.setup.close()
        self.setup.disconnect()

    def convert_ahead(self, ended: bool = True) -> Ahead:
        """south queued ahead of its queries, and (`ended`) its conversion's end waited for."""
        ahead = Ahead(self.setup.servers, lambda: self.conversions)
        ahead.convert(Partner("south", 90, self.bits, THRESHOLD, Rule(*RULE)))
        assert not ended or ahead.idle(600)  # (a bound on a hang, not a timing)
        return ahead


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


@pytest.mark.parametrize("when", ["admitted", "in piece 0's call"])
def test_a_conversion_admitted_before_the_stop_whose_wait_ran_out_ends_cancelled_quietly(
    when: str, roles: Roles, shares: dict[str, client.SharedUpload],
    caplog: pytest.LogCaptureFixture, failed_threads: list[BaseException],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """south's conversion ahead admitted, then the matcher's stop, whose wait for it ran out
    (CLOSE_SECONDS 0: as a wait past 30 s, queued or paused, would) and which closed the
    channels: just after its admission (piece 0 not dealt: none is), or as piece 0's call
    goes out (it meets the closed channels; the give-up is not sent). One line saying the
    matcher stopped (and, in the call, one saying the give-up was not sent), no warning;
    cancelled, not failed; S1 and S2 hold nothing."""
    monkeypatch.setattr(twoserver_conversions, "CLOSE_SECONDS", 0.0)
    matcher = Matcher(roles, shares)
    conversions = matcher.conversions
    if when == "admitted":
        admit = conversions.admit

        def admitted(*args: Any) -> str:
            why = admit(*args)
            matcher.stop()
            return why

        conversions.admit = admitted  # type: ignore[method-assign]
    else:
        dealt = standdeal._deal

        def stopped_under(remote: Any, conversions: Any, m: pb.BlockDeal, *rest: Any) -> int:
            matcher.stop()
            return dealt(remote, conversions, m, *rest)

        monkeypatch.setattr(standdeal, "_deal", stopped_under)
    caplog.set_level(logging.INFO, logger="blindmatch.matcher.twoserver")
    caplog.clear()  # (the upload's lines)
    ahead = matcher.convert_ahead()
    assert matcher.stopped == 1 and conversions.close(600)  # (its give-up's thread ended)
    assert warnings(caplog) == [] and not any(r.exc_info for r in caplog.records)
    said = [r.getMessage() for r in caplog.records if "south's upload" in r.getMessage()]
    assert STOPPED_LINE in said
    if when == "admitted":
        assert said == [STOPPED_LINE]
    else:  # (the give-up's line, from its own thread)
        (line,) = [m for m in said if m != STOPPED_LINE]
        assert "not told to drop the conversion" in line
        assert "the matcher's stop closed its channels" in line
    counts = (ahead.started, ahead.refused, ahead.failed, ahead.declined, ahead.skipped)
    assert counts == (0, 0, 0, 0, 0)
    assert (conversions.cancelled, conversions.failed, conversions.converted) == (1, 0, 0)
    assert roles.conversions() == [0, 0] and held(roles) == [0, 0] and failed_threads == []


def test_a_background_conversion_under_way_at_the_stop_is_given_up_and_cancelled_not_failed(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
    caplog: pytest.LogCaptureFixture, failed_threads: list[BaseException],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """south's conversion ahead in the background (3 pieces), its piece 1 paused for a query
    being answered; the matcher stops: it ends before piece 1 (not waiting out the pause),
    given up at S1 and S2 over the open channels (both drop it, audited), counted cancelled,
    logged at info (before: a warning, counted failed)."""
    monkeypatch.setattr(twoserver_conversions, "PAUSE_SECONDS", 600.0)
    matcher = Matcher(roles, shares)
    conversions = matcher.conversions
    answering = RemoteServers(f"127.0.0.1:{roles.running['s1'].port}",
                              f"127.0.0.1:{roles.running['s2'].port}", KEY, NAMES, [3, 90],
                              list(matcher.bits))  # fmt: skip
    conversions.asking(answering)  # (as `prepare_standing` does for a query)
    caplog.set_level(logging.INFO, logger="blindmatch.matcher.twoserver")
    caplog.clear()
    try:
        ahead = matcher.convert_ahead(ended=False)
        until(lambda: conversions.paused == 1)  # (piece 0 dealt, the rest in the background)
        assert ahead.started == 1
        matcher.stop()
    finally:
        answering.close()
    assert conversions.idle(0)  # (the stop waited for it)
    assert warnings(caplog) == [] and not any(r.exc_info for r in caplog.records)
    (line,) = [r.getMessage() for r in caplog.records if "ended with the matcher's stop" in
               r.getMessage()]  # fmt: skip
    assert "the matcher is stopping (before piece 1 of 3)" in line
    assert (conversions.cancelled, conversions.failed, conversions.converted) == (1, 0, 0)
    assert held(roles) == [0, 0] and roles.conversions() == [0, 0]
    for role in ROLES:
        (dropped,) = entries(tmp_path, role, "twoserver.standing_dropped")
        assert dropped["done"] == 1 and dropped["reason"] == "the combiner gave it up"
    assert failed_threads == []


def test_a_give_up_on_channels_the_stop_closed_is_not_sent_and_says_so_once_at_info(
    roles: Roles, shares: dict[str, client.SharedUpload], caplog: pytest.LogCaptureFixture,
    failed_threads: list[BaseException],
) -> None:  # fmt: skip
    """`give_up` over the matcher's channels after its stop closed them (its wait for the
    conversion ran out): nothing sent, one line at info naming S2 and S1 and the stale
    sweep (before: a warning for each server, "Cannot invoke RPC on closed channel!")."""
    matcher = Matcher(roles, shares)
    remote = matcher.setup.servers(["south"], [90], list(matcher.bits))
    try:
        matcher.stop()
        assert remote.stopped()
        caplog.set_level(logging.INFO, logger="blindmatch.matcher.twoserver")
        caplog.clear()
        give_up(remote, pb.BlockDeal(member_b="south", standing="c0ffee"))
    finally:
        remote.close()
    assert warnings(caplog) == []
    # Only the lines about this conversion: S1's own sort of south's band keys logs from a
    # role thread to the same logger and may land after the clear (a CI run caught that).
    (line,) = [r.getMessage() for r in caplog.records if "c0ffee" in r.getMessage()]
    assert line.startswith(f"{remote.names[1]} and {remote.names[0]} not told to drop the "
                           "conversion c0ffee of south's upload")  # fmt: skip
    assert "drops it itself once stale" in line and failed_threads == []
