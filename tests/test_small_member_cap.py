"""S1's smaller-member cap (matcher/core/exhaustive.py `admits`, `two-server role
--small-member-pairs`): a pair of members whose smaller one has under SMALL_MEMBER records is
compared without blocking up to a second, larger cap of pairs, so that a small member is not
blocked against a large one (where S2's counts re-identified it: docs/privacy-design.md
"Small against large"); a query likewise against a larger upload. 0 under either cap as
before: `--exhaustive-pairs 0` still blocks every pair."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.matcher.core import exhaustive, tworun, twoserver
from tests.support import in_process_servers
from tests.test_twoserver_exhaustive import pairs_of, small, uploads_of  # noqa: F401

Clks = npt.NDArray[np.uint8]
CAP, SMALL = exhaustive.SHIPPED_PAIRS, exhaustive.SHIPPED_SMALL_PAIRS


def test_a_small_member_is_unblocked_against_a_partner_up_to_the_second_cap() -> None:
    assert exhaustive.SMALL_MEMBER == 4_000 and SMALL == 64_000_000
    admits = exhaustive.admits
    assert not admits(500, 33_000, CAP) and admits(500, 33_000, CAP, SMALL)
    assert admits(500, 128_000, CAP, SMALL) and not admits(500, 128_001, CAP, SMALL)
    assert admits(3_999, 16_000, CAP, SMALL)
    assert not admits(4_000, 16_000, CAP, SMALL)  # not a small member: the cap alone
    assert admits(4_000, 4_000, CAP, SMALL)  # within the cap, as before
    assert not admits(500, 100, 0, SMALL)  # 0 blocks every pair, whatever the second cap
    assert exhaustive.small_pairs([500, 33_000, 40_000], CAP, None, SMALL) == {(0, 1), (0, 2)}
    assert exhaustive.small_pairs([500, 33_000, 40_000], CAP) == set()


def test_a_query_is_whole_against_an_upload_up_to_the_second_cap() -> None:
    query = ["p/north/t", "p/south@q/q"]
    for partner in (16_001, 20_000, 64_000):
        got = exhaustive.run_cap(query, CAP, [partner, 200], SMALL)
        assert exhaustive.small_pairs([partner, 200], got) == {(0, 1)}, partner
        assert exhaustive.run_cap(query, CAP, [partner, 200]) == 0  # without it: blocked
    assert exhaustive.run_cap(query, CAP, [64_001, 200], SMALL) == 0
    assert exhaustive.run_cap(query, 0, [300, 2], SMALL) == 0  # S1 blocks every pair


def test_a_query_sends_no_band_keys_against_an_upload_the_second_cap_unblocks() -> None:
    """S1 asks a query for its band keys (`keys_needed`) only where it blocks it, under both
    caps: against an upload of 20,000 records the second cap compares it whole."""
    query = ["p/north/t", "p/south@q/q"]
    assert not exhaustive.keys_needed(query, CAP, [20_000, 1], SMALL)
    assert exhaustive.keys_needed(query, CAP, [20_000, 1])  # without it: blocked, keys asked
    assert exhaustive.keys_needed(query, CAP, [64_001, 200], SMALL)


def test_a_small_query_is_whole_against_an_upload_over_the_bound_within_its_own_pairs() -> None:
    """Issue 18 (b): a query of few records is compared whole against an upload over
    max(cap, small) / QUERY_STREAM records where its own records times the upload's are at
    most QUERY_WHOLE_PAIRS, so it sends S1 no band keys; over that, still blocked."""
    query = ["p/north/t", "p/south@q/q"]
    most = exhaustive.QUERY_WHOLE_PAIRS
    assert most > SMALL // exhaustive.QUERY_STREAM  # past the bound the caps give
    for records in ([most, 1], [64_001, 1]):
        got = exhaustive.run_cap(query, CAP, records, SMALL)
        assert exhaustive.small_pairs(records, got) == {(0, 1)}, records
        assert not exhaustive.keys_needed(query, CAP, records, SMALL), records
    for records in ([most + 1, 1], [most, 2]):
        assert exhaustive.run_cap(query, CAP, records, SMALL) == 0, records
        assert exhaustive.keys_needed(query, CAP, records, SMALL), records
    # Without the smaller-member cap, or with S1 blocking every pair, blocked as before.
    assert exhaustive.keys_needed(query, CAP, [64_001, 1])
    assert exhaustive.keys_needed(query, 0, [64_001, 1], SMALL)


def test_in_process_the_second_cap_unblocks_the_small_members_pairs(
    small: tuple[list[Clks], int],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """150, 120 and 60 records under a cap of 7,200 (south x west alone) and a second cap of
    9,000, the small member 100 records here: north x west (9,000) unblocked too, north x
    south (18,000) over both, blocked; S2 expanded that pair alone."""
    monkeypatch.setattr(exhaustive, "SMALL_MEMBER", 100)
    uploads = uploads_of(small)
    s1_cap, second = 120 * 60, 150 * 60
    got, servers = in_process_capped(uploads, s1_cap, second)
    blocked, _ = in_process_capped(uploads, 0, second)
    pairs = pairs_of(got)
    assert (pairs[0, 2], pairs[1, 2]) == (150 * 60, 120 * 60)
    assert pairs[0, 1] == pairs_of(blocked)[0, 1] < 150 * 120  # blocked as before
    assert servers.blocking["expand (S2)"] > 0.0


def in_process_capped(
    uploads: list[client.SharedUpload], cap: int, second: int
) -> tuple[tworun.TwoServerResult, tworun.InProcess]:
    """tests/test_twoserver_exhaustive.py's `in_process` (C's Dice), under both caps."""
    s1, s2 = in_process_servers(uploads)
    s1.exhaustive, s1.small_member = cap, second
    pops = [u.combiner.popcounts for u in uploads]
    servers = tworun.InProcess(s1, s2)
    return tworun.drive(servers, twoserver.Combiner(pops, 0.8, reveal="dice")), servers


def test_the_second_cap_is_s1s_alone_and_not_negative(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from blindmatch.cli.app import main

    common = ["--listen", "127.0.0.1:0", "--key-file", str(tmp_path / "k"),
              "--member-key-file", str(tmp_path / "m")]  # fmt: skip
    assert main(["two-server", "role", "--role", "s2", *common, "--small-member-pairs", "9"]) == 2
    assert "--small-member-pairs 9: S1's" in capsys.readouterr().err
    assert main(["two-server", "role", "--role", "s1", "--s2", "127.0.0.1:1", *common,
                 "--small-member-pairs", "-1"]) == 2  # fmt: skip
    assert "--small-member-pairs -1" in capsys.readouterr().err
