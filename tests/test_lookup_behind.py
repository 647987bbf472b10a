"""Look-up servers known to have missed a change, or not to answer: one resting (it missed a
search's or a Reload's deadline) is marked behind at the next change it should take,
without waiting for it (rpc/lookup_client.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks.erasure_start import Hung
from benchmarks.synthclks import CLK_BITS
from blindmatch.matcher.domain import Encoding
from blindmatch.matcher.realtime.shards import ShardChange
from blindmatch.matcher.rpc import lookup_wire
from blindmatch.matcher.rpc.lookup_client import LookupServers
from tests.support import free_port

pytestmark = pytest.mark.server

FINGERPRINT = b"lookup-server test fingerprint!!"


def test_a_change_to_a_resting_server_is_not_waited_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The matcher's side alone: a hung look-up server (`Hung`) misses a search's deadline
    and rests (its shards searched in the matcher's copy). A change to its shard is not
    sent to it (before: sent, and waited for up to its deadline under the index writer
    lock, holding every member's change): it is behind at once, and the query after is
    still answered from the matcher's copy; the probe asks it to read its shards again, as
    any server behind."""
    monkeypatch.setattr(lookup_wire, "SEARCH_SECONDS", 0.5)
    monkeypatch.setattr(lookup_wire, "FORWARD_FLOOR_SECONDS", 0.3)  # (before: waited this)
    monkeypatch.setattr(lookup_wire, "BACKOFF_SECONDS", 0.05)  # probed, and not answered
    monkeypatch.setattr(lookup_wire, "RELOAD_SECONDS", 0.2)  # in time
    port = free_port()
    hole = Hung(port)
    remote = LookupServers([f"127.0.0.1:{port}"], "bm_lookup_" + "k" * 43)
    asked = np.zeros((2, CLK_BITS // 64), dtype=np.uint64)
    mine = [{"south": [("south-1", 0.9)]}, {"south": []}]
    change = ShardChange("trial", "south", Encoding(CLK_BITS, FINGERPRINT), 0.8,
                         [("south-2", b"x" * (CLK_BITS // 8))])  # fmt: skip
    try:
        assert remote.search("trial", ["south"], asked, 0.8, local=lambda: mine) == mine
        assert remote._resting and not remote.behind()
        remote.forward(change)
        assert "Apply" not in hole.methods  # not sent: it rests
        assert remote.behind() == [remote._name(0)]
        assert remote.search("trial", ["south"], asked, 0.8, local=lambda: mine) == mine
        assert hole.methods.count("Search") == 1
        deadline = time.monotonic() + 30
        while "Reload" not in hole.methods:  # the probe asks it to read its shards again
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert remote.behind() == [remote._name(0)]  # (until it has said yes)
    finally:
        hole.close()
        remote.close()
