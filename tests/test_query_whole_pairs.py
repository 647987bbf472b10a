"""S1's per-query cap, `two-server role --query-whole-pairs N` (matcher/core/exhaustive.py
`run_cap`; `QUERY_WHOLE_PAIRS`, 1,040,000, as shipped since bigq: the records S1's and S2's
default `--standing-bytes` keep converted without [M_B]): a query whose records times its
partners' are at most N pairs is compared whole against a partner of any size, so the client
sends S1 none of its band keys; over N (past the caps' bound) it is blocked, and S1 refuses its
records sent without keys (`band_keys_needed`), as it always has. 0: the caps' bound alone."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.exports import Export
from blindmatch.cli import twoserver_caps
from blindmatch.cli.app import main
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.matcher.core import exhaustive, linkbit
from blindmatch.matcher.rpc import twoserver_standcache as standcache
from blindmatch.protos import blindmatch_pb2 as pb
from tests import twoserver_world
from tests.test_twoserver_project import create
from tests.test_twoserver_query import ask, held_by, members, person_csv, query  # noqa: F401
from tests.test_twoserver_standing_start import audited

pytestmark = pytest.mark.server

CAP, SMALL = exhaustive.SHIPPED_PAIRS, exhaustive.SHIPPED_SMALL_PAIRS
QUERY = ["p/north/t", "p/south@q/q"]


def test_the_per_query_cap_is_s1s_to_set_raised_lowered_or_0() -> None:
    # A one-record query against 1,040,001 records: blocked under the shipped 1,040,000 ...
    assert exhaustive.keys_needed(QUERY, CAP, [1_040_001, 1], SMALL)
    # ... compared whole with the cap raised to 2,000,000, not past it.
    assert exhaustive.run_cap(QUERY, CAP, [2_000_000, 1], SMALL, 2_000_000) > 0
    assert not exhaustive.keys_needed(QUERY, CAP, [2_000_000, 1], SMALL, 2_000_000)
    assert exhaustive.keys_needed(QUERY, CAP, [2_000_001, 1], SMALL, 2_000_000)
    # Lowered: a one-record query against 70,000 records blocked (whole as shipped).
    assert not exhaustive.keys_needed(QUERY, CAP, [70_000, 1], SMALL)
    assert exhaustive.keys_needed(QUERY, CAP, [70_000, 1], SMALL, 60_000)
    # 0: the caps' bound alone (64,000 records under the shipped caps).
    assert exhaustive.keys_needed(QUERY, CAP, [64_001, 1], SMALL, 0)
    assert not exhaustive.keys_needed(QUERY, CAP, [64_000, 1], SMALL, 0)
    # Nothing while the smaller-member cap or the cap is 0.
    assert exhaustive.keys_needed(QUERY, CAP, [16_001, 1], 0, 10**9)
    assert exhaustive.keys_needed(QUERY, 0, [2, 1], SMALL, 10**9)
    assert exhaustive.query_whole_or_default(None) == 1_040_000
    with pytest.raises(ValueError, match="query whole pairs: -1"):
        exhaustive.query_whole_or_default(-1)


def test_s1_says_at_its_start_what_a_per_query_cap_other_than_the_default_means() -> None:
    assert exhaustive.query_whole_warning(exhaustive.QUERY_WHOLE_PAIRS) is None
    raised = str(exhaustive.query_whole_warning(2_000_000))
    assert "--query-whole-pairs 2,000,000 is over the default 1,040,000" in raised
    assert "23-69 us of CPU a pair" in raised and "46.0-138.0 s of CPU a query" in raised
    assert "4,128 bytes a record" in raised and "8.3 GB for a one-record query's" in raised
    lowered = str(exhaustive.query_whole_warning(1_000))
    assert "under the default 1,040,000" in lowered and "over 1,000 pairs" in lowered
    assert "upload over 64,000 records" in lowered and "1.8-3.6%" in lowered
    assert "does nothing while --small-member-pairs is 0" in str(
        exhaustive.query_whole_warning(5, CAP, 0)
    )
    # The caps' own warning names the per-query cap it then applies.
    assert "(or 200,000 / the query's records" in str(
        exhaustive.lowered_cap_warning(4_000_000, SMALL, 200_000)
    )
    assert "the query's records" not in str(exhaustive.lowered_cap_warning(4_000_000, SMALL, 0))


def test_the_default_is_the_partner_the_default_standing_bytes_keep_without_its_mask() -> None:
    """bigq: a one-record query sends S1 no band keys against any partner S1 and S2 keep
    converted in their default `--standing-bytes` (without [M_B], 4,128 bytes a record at two
    1,024-bit CLKs: 1,040,447 records in 4 GiB); 320,000 before (a partner they keep with
    [M_B]), so a one-record query against 1,000,000 records sent its keys."""
    widths, most = (1024, 1024), standcache.MOST_BYTES
    whole = exhaustive.QUERY_WHOLE_PAIRS
    assert (
        standcache.kept_bytes(whole, widths, most)
        <= most
        < standcache.kept_bytes(whole + 1_000, widths, most)
    )
    assert not standcache.keeps_mask(whole, widths, most)  # kept without [M_B]
    assert standcache.kept_bytes(whole, widths, most) == (
        whole * exhaustive.STANDING_RECORD_BYTES + linkbit.SEED_BYTES
    )
    assert not exhaustive.keys_needed(QUERY, CAP, [1_000_000, 1], SMALL)
    assert exhaustive.keys_needed(QUERY, CAP, [1_000_000, 2], SMALL)  # two records: blocked


def test_the_flag_is_s1s_alone_and_not_negative(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--listen", "127.0.0.1:0", "--key-file", str(tmp_path / "k"),
              "--member-key-file", str(tmp_path / "m")]  # fmt: skip
    for role in (["--role", "s2"], ["--role", "combiner", "--s1", "a:1", "--s2", "a:2"]):
        assert main(["two-server", "role", *role, *common, "--query-whole-pairs", "9"]) == 2
        assert "--query-whole-pairs 9: S1's" in capsys.readouterr().err
        assert main(["two-server", "role", *role, *common, "--query-band-keys", "allow"]) == 2
        assert "--query-band-keys allow: S1's" in capsys.readouterr().err
    assert main(["two-server", "role", "--role", "s1", "--s2", "127.0.0.1:1", *common,
                 "--query-whole-pairs", "-1"]) == 2  # fmt: skip
    assert "--query-whole-pairs -1: S1's cap, a number of pairs: 0 or more" in (
        capsys.readouterr().err
    )


def test_a_cap_or_band_keys_flag_given_another_role_says_whose_it_is_and_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was `Error: --query-band-keys allow: S1's`, a sentence cut short (freshwalk)."""
    common = ["--listen", "127.0.0.1:0", "--key-file", str(tmp_path / "k"),
              "--member-key-file", str(tmp_path / "m")]  # fmt: skip
    assert main(["two-server", "role", "--role", "s2", *common, "--query-band-keys", "allow"]) == 2
    assert capsys.readouterr().err.strip() == (
        "Error: --query-band-keys allow: S1's option alone; this role is s2, which asks for no "
        "band keys: leave it out"
    )
    assert main(["two-server", "role", "--role", "s2", *common, "--small-member-pairs", "9"]) == 2
    assert capsys.readouterr().err.strip() == (
        "Error: --small-member-pairs 9: S1's option alone; this role is s2, which proposes no "
        "pairs: leave it out"
    )


def test_refused_under_exhaustive_pairs_0_the_bound_named_is_no_query_compared_whole() -> None:
    """S1 at `--exhaustive-pairs 0` blocks every query (`run_cap`), so its refusal of a
    one-record query against 8 records named a bound of "up to 64,000 records" (the
    --small-member-pairs one that 0 switches off) and said to raise both caps (freshwalk)."""
    assert exhaustive.keys_needed(QUERY, 0, [8, 1], SMALL)
    said = exhaustive.keys_refused(1, 8, exhaustive.QUERY_WHOLE_PAIRS, 0, SMALL)
    assert "64,000" not in said
    assert "over S1's unblocked bound (--exhaustive-pairs 0: every query blocked)" in said
    assert "Ask S1's operator to raise --exhaustive-pairs, or to start S1 with" in said
    # the caps' bound where only --small-member-pairs is 0, as before
    said = exhaustive.keys_refused(1, 20_000, exhaustive.QUERY_WHOLE_PAIRS, CAP, 0)
    assert "--small-member-pairs 0: a query against up to 16,000 records)" in said


def test_query_band_keys_is_refuse_or_allow_and_allow_is_warned_of(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """(S1's alone: refused on S2 and the combiner above.)"""
    with pytest.raises(SystemExit):
        main(["two-server", "role", "--role", "s1", "--query-band-keys", "maybe"])
    assert "invalid choice: 'maybe'" in capsys.readouterr().err
    shown = argparse.Namespace(role="s1", exhaustive_pairs=None, small_member_pairs=None,
                               query_whole_pairs=None, query_band_keys="allow")  # fmt: skip
    assert "Warning: --query-band-keys allow:" in str(twoserver_caps.cap_warning(shown))
    shown.query_band_keys = None  # refuse, the default: nothing said
    assert twoserver_caps.cap_warning(shown) is None
    assert twoserver_caps.query_band_keys(shown) is None  # S1's default: refuse
    with pytest.raises(ValueError, match="refuse, allow, not 'maybe'"):
        exhaustive.band_keys_or_default("maybe")


@pytest.fixture
def capped(
    tmp_path: Path,
    members: dict[str, tuple[Export, Path]],  # noqa: F811
) -> Iterator[twoserver_world.World]:
    """S1 whose caps' bound is 100 records (100,000 pairs each), its per-query cap south's
    records: a query of one record is whole against south's upload, of two is not; started
    with `--query-band-keys allow` (the keys of a query over it asked for)."""
    with capped_world(tmp_path, members, "allow") as world:
        yield world


@contextmanager
def capped_world(
    tmp_path: Path,
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    band_keys: str,
) -> Iterator[twoserver_world.World]:
    """`capped`'s world, S1's `--query-band-keys` `band_keys`."""
    south = read_encoded(members["south"][1]).record_count
    assert south > 100
    with twoserver_world.started(tmp_path, 100_000, 100_000, south,
                                 query_band_keys=band_keys) as world:  # fmt: skip
        yield world


def uploaded_spied(
    world: twoserver_world.World,
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[dict[str, str], list[tuple[int, bool]]]:
    """north's and south's uploads to a two-server project (the members' tokens), and what S1
    receives of each query's records after: (band key bytes, all parts withheld)."""
    two = create(world, "shares", "two-server")
    for name in ("north", "south"):
        encoded = str(members[name][1])
        assert world.cli("upload", encoded, "--project", "shares", token=two.tokens[name]) == 0
    s1 = world.roles["s1"].service
    received: list[tuple[int, bool]] = []  # S1's query uploads: band key bytes, withheld
    upload = s1.upload

    def seen(parts: Iterator[pb.SharedPart], vouched: str = "") -> pb.SharedReceipt:
        got = list(parts)
        keys = sum(len(p.band_counts) + len(p.band_keys) + len(p.sealed) for p in got)
        received.append((keys, all(p.band_keys_withheld for p in got)))
        return upload(iter(got), vouched)

    monkeypatch.setattr(s1, "upload", seen)
    return two.tokens, received


def test_over_grpc_s1s_per_query_cap_decides_whether_a_query_sends_its_band_keys(
    capped: twoserver_world.World,
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = capped
    south = members["south"][0]
    tokens, received = uploaded_spied(world, members, monkeypatch)
    s1 = world.roles["s1"].service
    assert s1.query_whole == read_encoded(members["south"][1]).record_count
    ids = sorted(south.truth)
    # One record x south's = the per-query cap: whole, past the caps' bound of 100 records;
    # not one band key sent.
    one = person_csv(south, ids[:1], world.folder / "one.csv")
    assert held_by(query(world, "shares", tokens["north"], one, south, capsys)) == [["south"]]
    assert received == [(0, True)]
    # Two records: twice that, over it, blocked (whole under the shipped 1,040,000), so S1
    # refuses the records without keys and the client sends them again with them.
    received.clear()
    pair = person_csv(south, ids[:2], world.folder / "two.csv")
    answer = query(world, "shares", tokens["north"], pair, south, capsys)
    assert held_by(answer) == [["south"], ["south"]]
    assert received[0] == (0, True) and received[1][0] > 0 and not received[1][1]
    assert len(received) == 2


def test_under_s1s_default_a_query_over_its_per_query_cap_is_refused_and_no_band_keys_sent(
    tmp_path: Path,
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 18: S1's `--query-band-keys refuse` (its default) refuses a query over its
    per-query cap, asking for no band keys: the member is told why (FAILED_PRECONDITION, the
    exit status of a refusal), S1 received the records without keys once and audited its
    refusal `band_keys_refused`. A query within the cap is answered as before."""
    south = members["south"][0]
    with capped_world(tmp_path, members, "refuse") as world:
        tokens, received = uploaded_spied(world, members, monkeypatch)
        ids = sorted(south.truth)
        one = person_csv(south, ids[:1], world.folder / "one.csv")
        answer = query(world, "shares", tokens["north"], one, south, capsys)
        assert held_by(answer) == [["south"]] and received == [(0, True)]
        received.clear()
        pair = person_csv(south, ids[:2], world.folder / "two.csv")
        capsys.readouterr()
        code = ask(world, "shares", tokens["north"], pair, south)
        said = capsys.readouterr().err
        refused = audited(world.folder / "s1-data", "s1", "twoserver.refused")
    assert code == 3, said
    records = read_encoded(members["south"][1]).record_count
    assert (f"this query of 2 records against south ({records:,} records) is over S1's "
            f"--query-whole-pairs {records:,}: compared whole it would cost more than S1 "
            "allows") in said  # fmt: skip
    assert "start S1 with --query-band-keys allow" in said and "FAILED_PRECONDITION" in said
    assert "band_keys_needed" not in said
    assert received == [(0, True)]  # once, without keys: never asked for them
    assert [str(d["reason"]).split(":")[0] for d in refused] == ["band_keys_refused"]


def test_a_query_s1s_caps_refuse_is_on_the_query_report_as_s1s_refusal_not_bad_input(
    tmp_path: Path,
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A query S1 refuses over its caps under `--query-band-keys refuse`: the operator's
    query report flags it on the member's row as S1's refusal (before: "1 requests refused
    for a bad token or bad input (FAILED_PRECONDITION 1)", stored under the status alone, so
    no later report could tell it from the member's bad input)."""
    south = members["south"][0]
    with capped_world(tmp_path, members, "refuse") as world:
        tokens, _ = uploaded_spied(world, members, monkeypatch)
        pair = person_csv(south, sorted(south.truth)[:2], world.folder / "two.csv")
        assert ask(world, "shares", tokens["north"], pair, south) == 3
        with world.operator() as op:
            rows = {v.member: v for v in op.query_report("shares", hours=24)}
    assert rows["north"].flags == [
        "1 query refused by S1 over its caps, taking no band keys (its --query-band-keys "
        "refuse: S1's operator's setting, not the member's input)"
    ]
    assert (rows["north"].queries, rows["north"].refused) == (0, 0)
    assert rows["south"].flags == [] and rows["west"].flags == []


def test_the_members_client_sends_no_band_keys_s1_asks_for_without_allow_band_keys(
    capped: twoserver_world.World,
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 18, the member's side: S1 started with `--query-band-keys allow` asks for the
    band keys of a query over its per-query cap, but S1's operator sets that; the member's
    client holds them back unless `query --allow-band-keys`: refused (exit 3), saying why and
    what to do, S1 received the records once, without keys. With the flag it is answered as
    before, the keys sent the second time."""
    world = capped
    south = members["south"][0]
    tokens, received = uploaded_spied(world, members, monkeypatch)
    pair = person_csv(south, sorted(south.truth)[:2], world.folder / "two.csv")
    capsys.readouterr()
    code = ask(world, "shares", tokens["north"], pair, south, keys=False)
    said = capsys.readouterr().err
    assert code == 3, said
    assert ("this query of 2 records against south is over S1's bound: S1 asks for the "
            "query's band keys, which would show S1 which of south's records share a keyed "
            "band with them") in said  # fmt: skip
    assert "docs/privacy-design.md" in said and "Nothing was sent with keys." in said
    assert ("Rerun with --allow-band-keys to send them, or ask S1's operator to raise "
            "--standing-bytes and --query-whole-pairs.") in said  # fmt: skip
    assert received == [(0, True)]  # once, without keys
    refused = audited(world.folder / "s1-data", "s1", "twoserver.refused")
    assert [str(d["reason"]).split(":")[0] for d in refused] == ["band_keys_needed"]
    received.clear()
    answer = query(world, "shares", tokens["north"], pair, south, capsys)  # --allow-band-keys
    assert held_by(answer) == [["south"], ["south"]]
    assert received[0] == (0, True) and received[1][0] > 0 and len(received) == 2


def test_s1_as_shipped_refuses_band_keys_and_the_client_holds_them_back() -> None:
    """The defaults a fresh process gets (tests/conftest.py sets the suite's in-process S1 to
    allow, since the suite blocks every pair): S1 refuses a query's band keys, and a member's
    `query` and `watch` send none without --allow-band-keys."""
    shipped = subprocess.run(
        [sys.executable, "-c", "from blindmatch.matcher.core import exhaustive as e; "
         "from blindmatch.cli.app import build_parser as b; p = b(); "
         "a = ['--project', 'x', '--schema', 's', '--secret-file', 'k', '--purpose', 'p']; "
         "q = p.parse_args(['query', *a]); w = p.parse_args(['watch', *a]); "
         "print(e.DEFAULT_QUERY_BAND_KEYS, q.allow_band_keys, w.allow_band_keys)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert shipped.stdout.split() == ["refuse", "False", "False"]
