"""A standing partner converted again while S1 and S2 still hold a conversion of it
(rpc/twoserver_standcache.py `Standings.piece`; docs/protocol.md "A conversion given up"): S1
and S2 on loopback, C's RemoteServers, the fixtures of tests/test_twoserver_standing.py
(south's 90 records converted in 3 pieces). The new conversion's piece 0 drops the old one at
each server as before, now logged and audited `twoserver.standing_dropped` naming both
conversions and why (leftovers: before, it went without a word, so a combiner converting one
upload twice left no trace in either server's log)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import grpc
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core import tickets
from blindmatch.matcher.rpc.twoserver_standdeal import Conversions
from tests.test_twoserver_blocks import KEY, MEMBER_KEY, RULE, entries
from tests.test_twoserver_standing import NAMES, Roles, ask
from tests.test_twoserver_standing import roles as roles  # the fixtures
from tests.test_twoserver_standing import shares as shares

pytestmark = pytest.mark.server
ROLES = ("s1", "s2")


def held_ids(roles: Roles, role: str) -> list[str]:
    """The conversion ids `role` holds."""
    return list(roles.running[role].service.standing._held)


def test_a_partner_converted_again_drops_the_old_conversion_logged_and_audited_at_both(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """South converted whole by one combiner, then again by a combiner restarted (it holds
    no conversion: its query goes by pairs and converts south anew). Each server drops the
    first conversion at the second's piece 0, logs one info line naming south, both
    conversions and the reason, and audits it (done 3 of 3, bytes freed); the next query
    goes standing against the second, its answer the same."""
    roles.upload("south", shares["south"])
    first, _ = ask(roles, shares["query"], shares["south"], Conversions())
    old = {r: held_ids(roles, r) for r in ROLES}
    assert all(len(ids) == 1 for ids in old.values()) and roles.conversions() == [1, 1]
    conversions = Conversions()  # C restarted
    with caplog.at_level(logging.INFO, logger="blindmatch.matcher.twoserver"):
        assert ask(roles, shares["query"], shares["south"], conversions)[0] == first
    assert roles.conversions() == [2, 2] and conversions.converted == 1
    for role in ROLES:
        (was,), (now,) = old[role], held_ids(roles, role)
        assert was != now and roles.running[role].service.standing.dropped == 1
        (dropped,) = entries(tmp_path, role, "twoserver.standing_dropped")
        assert dropped["members"] == NAMES and dropped["standing"] == was
        assert dropped["done"] == dropped["pieces"] == 3 and int(dropped["bytes"]) > 0  # type: ignore[call-overload]
        why = f"conversion {now} started: a new conversion of the same upload"
        assert dropped["reason"] == why
        lines = [r.getMessage() for r in caplog.records if was in r.getMessage()]
        assert len(lines) == 2 and all("south" in x and why in x for x in lines)  # S1's, S2's
    assert ask(roles, shares["query"], shares["south"], conversions)[0] == first
    assert conversions.queried == 1  # standing, against the second conversion


def test_a_partner_whose_upload_is_replaced_or_forgotten_drops_its_conversion_logged_and_audited(
    tmp_path: Path, roles: Roles, shares: dict[str, client.SharedUpload],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """South converted whole, then uploaded again: each server dropped the conversion of the
    replaced upload without a word (leftovers2; the upload itself is audited). Now one info
    line and a `twoserver.standing_dropped` entry each, saying why; the same for a partner
    whose upload a Forget drops (an erasure or expiry), over the combiner's RPC."""
    from blindmatch.matcher.rpc.twoserver_project import forget_at

    roles.upload("south", shares["south"])
    ask(roles, shares["query"], shares["south"], Conversions())
    old = {r: held_ids(roles, r) for r in ROLES}
    with caplog.at_level(logging.INFO, logger="blindmatch.matcher.twoserver"):
        roles.upload("south", shares["later"])
    why = "its upload replaced by a new upload of south"
    for role in ROLES:
        assert held_ids(roles, role) == []
        (dropped,) = entries(tmp_path, role, "twoserver.standing_dropped")
        assert dropped["standing"] == old[role][0] and dropped["reason"] == why
        assert dropped["members"] == NAMES and dropped["pieces"] == 3
    lines = [r.getMessage() for r in caplog.records if why in r.getMessage()]
    assert len(lines) == 2 and all("dropped standing partner south" in x for x in lines)
    # A partner's upload forgotten (the project member erased), through the combiner's call.
    caplog.clear()
    # (the query a member of p's too: S1 and S2 compare one project's uploads only, twoattack)
    erased, asking = "p/east/00ff00ff", "p/north/00aa00aa"
    for role, running in roles.running.items():  # under the tickets the matcher signs
        for name, sent in ((erased, shares["south"]), (asking, shares["query"])):
            ticket = tickets.issue(MEMBER_KEY, name, time.time() + 600)
            with RoleClient(role, f"127.0.0.1:{running.port}", ticket) as rc:
                rc.upload(name, sent, RULE)
    ask(roles, shares["query"], shares["south"], Conversions(), False, erased, asking=asking)
    old = {r: held_ids(roles, r) for r in ROLES}
    with caplog.at_level(logging.INFO, logger="blindmatch.matcher.twoserver"):
        for role in ROLES:
            target = f"127.0.0.1:{roles.running[role].port}"
            with grpc.insecure_channel(target) as kept:
                forgot = forget_at(target, role.upper(), KEY, "p", "east", kept)
            assert forgot.dropped == 1 and not forgot.error
    why = "its upload forgotten (Forget of p/east/: an erasure or expiry)"
    for role in ROLES:
        assert held_ids(roles, role) == []
        dropped = entries(tmp_path, role, "twoserver.standing_dropped")[-1]
        assert dropped["standing"] == old[role][0] and dropped["reason"] == why
        assert dropped["members"] == [asking, erased]
    assert len([r for r in caplog.records if why in r.getMessage()]) == 2
