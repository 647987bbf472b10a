"""Small pairs of members compared without blocking (matcher/core/exhaustive.py): under S1's
cap every pair of rows goes through the circuit, S1 joins no band key and S2 expands nothing
(so it counts no shared band), and the links are the exhaustive CLK run's; above the cap the
pair is blocked as before. In process, over real gRPC roles on loopback, and resumed after a
failure. (The rest of the suite blocks every pair: tests/conftest.py.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.exports import Export
from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core import exhaustive, tworun, twoserver
from blindmatch.matcher.core.outcomes import Outcome
from blindmatch.matcher.errors import Unavailable
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.storage.twoserver_audit import RoleAudit
from blindmatch.matcher.usecases.runs import match
from tests.support import MESSY_SECRET, in_process_servers
from tests.test_twocomplete import subjects
from tests.test_twoserver import assert_same_links
from tests.test_twoserver_project import World, create, world  # noqa: F401
from tests.test_twoserver_query import members, person_csv, query  # noqa: F401
from tests.test_twoserver_resume import PLAN as RESUME_PLAN
from tests.test_twoserver_resume import Kept, drive, failing, servers

pytestmark = pytest.mark.server
THRESHOLD = 0.8
PLAN = client.BandPlan(bits=20, bands=30)  # keyed blocking that misses pairs
Clks = npt.NDArray[np.uint8]
SIZES = (150, 120, 60)
UNBLOCKED = 10**9  # S1's cap above every pair of members here


@pytest.fixture(scope="module")
def small(messy_members: tuple[list[Clks], int]) -> tuple[list[Clks], int]:
    """The messy members' first records: 150, 120 and 60 (18,000, 9,000 and 7,200 pairs)."""
    datasets, fallback_bits = messy_members
    return [d[:n] for d, n in zip(datasets, SIZES, strict=True)], fallback_bits


def uploads_of(small: tuple[list[Clks], int]) -> list[client.SharedUpload]:
    datasets, fallback_bits = small
    return [client.shared_upload(d, MESSY_SECRET, PLAN, fallback_bits) for d in datasets]


def in_process(
    uploads: list[client.SharedUpload], cap: int, **combiner: object
) -> tuple[tworun.TwoServerResult, tworun.InProcess]:
    s1, s2 = in_process_servers(uploads)
    s1.exhaustive = cap
    pops = [u.combiner.popcounts for u in uploads]
    servers = tworun.InProcess(s1, s2)
    got = tworun.drive(servers, twoserver.Combiner(pops, THRESHOLD, **combiner))  # type: ignore[arg-type]
    return got, servers


def pairs_of(got: tworun.TwoServerResult) -> dict[tuple[int, int], int]:
    out: dict[tuple[int, int], int] = {}
    for p in got.proposed:
        out[p.member_a, p.member_b] = out.get((p.member_a, p.member_b), 0) + p.pairs
    return out


def test_unblocked_members_link_as_the_exhaustive_clk_run(small: tuple[list[Clks], int]) -> None:
    datasets, fallback_bits = small
    uploads = uploads_of(small)
    want = match(datasets, THRESHOLD, workers=1, blocking="exhaustive",
                 fallback_bits=fallback_bits)  # fmt: skip
    oracle, servers = in_process(uploads, UNBLOCKED, reveal="dice")
    assert len(want.links) > 50
    assert_same_links(oracle.links, want.links)  # C's Dice on every pair: the CLK run's
    assert pairs_of(oracle) == {(0, 1): 150 * 120, (0, 2): 150 * 60, (1, 2): 120 * 60}
    assert servers.blocking["expand (S2)"] == 0.0  # S2 opened no token
    # With link bits C learns the same pairs' buckets; blocked, keyed blocking misses pairs.
    bits, _ = in_process(uploads, UNBLOCKED)
    blocked, _ = in_process(uploads, 0, reveal="dice")
    assert bits.comparisons == oracle.comparisons == sum(a * b for a, b in ((150, 120), (150, 60),
                                                                            (120, 60)))  # fmt: skip
    assert blocked.comparisons < oracle.comparisons / 2
    assert len(blocked.links) <= len(want.links)
    cuts = np.asarray(twoserver.Combiner(None, THRESHOLD).cutoffs)
    found = {(int(r), int(p)): float(s) for r, p, s, d in zip(
        bits.links.row, bits.links.partner_row, bits.links.score, bits.links.dset, strict=True)
        if d == 0}  # fmt: skip
    dice = {(int(r), int(p)): float(s) for r, p, s, d in zip(
        want.links.row, want.links.partner_row, want.links.score, want.links.dset, strict=True)
        if d == 0}  # fmt: skip
    same = set(found) & set(dice)
    assert len(same) >= 0.98 * len(dice)  # bucket ties can be solved the other way round
    assert all(found[k] == cuts[np.searchsorted(cuts, dice[k], side="right") - 1] for k in same)


def test_the_cap_blocks_the_pairs_of_members_above_it(small: tuple[list[Clks], int]) -> None:
    assert exhaustive.small_pairs(SIZES, 150 * 60) == {(0, 2), (1, 2)}
    assert exhaustive.small_pairs(SIZES, 150 * 60, {(0, 1), (0, 2)}) == {(0, 2)}
    assert exhaustive.small_pairs(SIZES, 0) == set()
    uploads = uploads_of(small)
    got, servers = in_process(uploads, 150 * 60, reveal="dice")
    blocked, _ = in_process(uploads, 0, reveal="dice")
    pairs = pairs_of(got)
    assert (pairs[0, 2], pairs[1, 2]) == (150 * 60, 120 * 60)  # every pair, both CLKs
    assert pairs[0, 1] == pairs_of(blocked)[0, 1] < 150 * 120  # blocked as before
    assert servers.blocking["expand (S2)"] > 0.0
    with pytest.raises(ValueError, match="exhaustive pairs"):
        twoserver.BlockingServer([u.s1.bands for u in uploads], [u.s1.shares for u in uploads],
                                 b"", exhaustive=-1)  # fmt: skip


def test_every_pair_is_split_by_the_fallbacks_rule() -> None:
    lacking = [np.array([False, True, False]), np.array([False, True])]
    record, fallback = exhaustive.explicit(exhaustive.every_pair(0, 1, (3, 2), lacking))
    assert list(zip(record.rows_a.tolist(), record.rows_b.tolist(), strict=True)) == [
        (0, 0), (2, 0)]  # fmt: skip
    assert len(fallback) == 4 and record.clk == twoserver.RECORD
    (only,) = exhaustive.every_pair(0, 1, (3, 2), None)
    assert len(only) == 6 and only.clk == twoserver.RECORD


def test_over_grpc_s2_opens_nothing_of_an_unblocked_run(
    tmp_path: Path, small: tuple[list[Clks], int]
) -> None:
    uploads = uploads_of(small)
    key, member_key = "the parties' key", "the members' key"
    s2 = create_role("s2", "127.0.0.1:0", key, member_key, data_dir=tmp_path / "s2")
    # north x west (9,000 pairs) over the cap (7,200: south x west), under the smaller-member
    # cap (west's 60 records under SMALL_MEMBER): both unblocked, as under a cap of 9,000.
    s1 = create_role("s1", "127.0.0.1:0", key, member_key, s2=f"127.0.0.1:{s2.port}",
                     data_dir=tmp_path / "s1", exhaustive=120 * 60,
                     small_member=150 * 60)  # fmt: skip
    c = create_role("combiner", "127.0.0.1:0", key, member_key, s1=f"127.0.0.1:{s1.port}",
                    s2=f"127.0.0.1:{s2.port}", data_dir=tmp_path / "combiner")  # fmt: skip
    names = ["north", "south", "west"]
    try:
        for name, up in zip(names, uploads, strict=True):
            for role, port in (("s1", s1.port), ("s2", s2.port), ("combiner", c.port)):
                with RoleClient(role, f"127.0.0.1:{port}", member_key) as rc:
                    rc.upload(name, up)
        with RoleClient("combiner", f"127.0.0.1:{c.port}", key) as rc:
            got = rc.run(THRESHOLD, names)
    finally:
        for running in (c, s1, s2):
            running.stop(grace=None)
    want, local = in_process(uploads, 150 * 60)
    for name in ("dset", "row", "partner", "partner_row", "score"):
        assert np.array_equal(getattr(got, name), getattr(want.links, name)), name
    assert got.comparisons == want.comparisons
    entries: dict[str, list[tuple[str, dict[str, object]]]] = {}
    for role in ("s1", "s2"):
        kept = RoleAudit(tmp_path / role, role)
        assert kept.log.verify().ok
        entries[role] = [(e.action, dict(e.detail)) for e in kept.log.entries()]
        kept.close()
    (run,) = [d for action, d in entries["s1"] if action == "twoserver.run"]
    assert run["unblocked"] == [["north", "west"], ["south", "west"]]
    # S2 expanded north x south alone: its pairs, none of the unblocked pairs of members.
    (expanded,) = [d for action, d in entries["s2"] if action == "twoserver.expand"]
    north_south = local.s2.expand(local.s1.join(2, {(0, 1)}), 2)
    assert expanded["pairs"] == sum(len(p) for p in north_south) < 150 * 120


@pytest.fixture(scope="module")
def resume_members() -> dict[str, client.SharedUpload]:
    """tests/test_twoserver_resume.py's members."""
    return {n: client.shared_upload(d, MESSY_SECRET, RESUME_PLAN)
            for n, d in zip("ABC", subjects(), strict=True)}  # fmt: skip


def test_an_unblocked_run_failing_part_way_is_resumed(
    resume_members: dict[str, client.SharedUpload],
) -> None:
    """tests/test_twoserver_resume.py's members (extras, completion), unblocked: a run
    failing at a reach batch before S1 is asked keeps every pair of members' outcome and a run
    reusing them gives the links of one that never failed, asking no pair twice."""
    from benchmarks.twoserver_rerun import Budgets, links_of

    names = ["A", "B", "C"]
    everyone = servers(resume_members, Budgets())
    everyone.s1.exhaustive = UNBLOCKED
    want = drive(everyone, {})
    assert want.comparisons == sum(a * b for a, b in ((153, 153),) * 3)  # every pair
    budget, kept = Budgets(), Kept()
    first = failing(resume_members, budget, "evaluate_reach")
    first.s1.exhaustive = UNBLOCKED
    with pytest.raises(Unavailable):
        drive(first, {}, kept)
    assert len(kept.outcomes) == 3 and not kept.open
    again = servers(resume_members, budget)  # the same budget: a pair asked twice raises
    again.s1.exhaustive = UNBLOCKED
    reuse: dict[tuple[int, int], Outcome] = kept.reusable()
    got = drive(again, reuse, kept)
    assert links_of(got, names) == links_of(want, names)
    assert got.comparisons == 0 and got.groups == want.groups


def test_the_encode_warning_names_s1s_default_cap() -> None:
    from blindmatch.client.encoding import sharing as shared
    from blindmatch.client.encoding.sharing import UNBLOCKED_PAIRS, small_member_warning

    assert UNBLOCKED_PAIRS == exhaustive.SHIPPED_PAIRS  # the client imports no matcher code
    assert shared.UNBLOCKED_SMALL_PAIRS == exhaustive.SHIPPED_SMALL_PAIRS
    assert shared.SMALL_MEMBER == exhaustive.SMALL_MEMBER
    said = small_member_warning(1_000)
    assert said is not None and "a member of up to 64,000 records without blocking" in said
    assert "with a larger member it is blocked" in said and small_member_warning(4_000) is None
    # It quotes the blocked case that remains (a small member against a larger one), not the
    # equal-size members' 1.7-4.7%, a case no longer blocked.
    assert "blocked against members of 6,000-20,000" in said and "4.7%" not in said


def test_s1_asks_s2_to_expand_only_the_pairs_of_members_it_blocks() -> None:
    asked: list[set[tuple[int, int]] | None] = []

    def block(pairs: set[tuple[int, int]] | None) -> list[twoserver.PairBatch]:
        asked.append(pairs)
        rows = np.zeros(1, np.uint32)
        every = [(0, 1), (0, 2), (1, 2)] if pairs is None else sorted(pairs)
        return [twoserver.PairBatch(a, b, twoserver.RECORD, rows, rows) for a, b in every]

    got = exhaustive.propose(SIZES, 150 * 60, None, None, block)
    assert asked == [{(0, 1)}]  # blocked north x south alone; the rest every pair
    assert [(p.member_a, p.member_b, len(p)) for p in got] == [
        (0, 1, 1), (0, 2, 150 * 60), (1, 2, 120 * 60)]  # fmt: skip
    asked.clear()
    exhaustive.propose(SIZES, 0, None, None, block)
    exhaustive.propose(SIZES, 0, set(), None, block)  # a rerun reusing every pair of members
    assert asked == [None, set()]  # as without a cap
    asked.clear()
    exhaustive.propose(SIZES, 10**9, None, None, block)
    assert asked == []  # nothing blocked: S2 asked nothing


@pytest.fixture
def unblocking(monkeypatch: pytest.MonkeyPatch) -> None:
    """S1's default cap as shipped (the suite's is 0: tests/conftest.py)."""
    monkeypatch.setattr(exhaustive, "DEFAULT_PAIRS", exhaustive.SHIPPED_PAIRS)


def test_a_query_is_whole_against_a_small_partner_and_blocked_against_a_large_one() -> None:
    """A query's (or watch's) run (core/exhaustive.py `run_cap`): compared whole where the
    partner's upload times QUERY_STREAM (a query's most records) is at most S1's cap (16,000
    records under the shipped cap: the queries an upload answers add up at S2 to a run with
    it, benchmarks/twoserver_queries.py), blocked against a larger upload, and without the
    members' records; a run of members keeps S1's cap."""
    cap = exhaustive.SHIPPED_PAIRS
    query = ["p/north/t", "p/south@q/q"]
    assert cap == exhaustive.QUERY_STREAM * 16_000
    for records in ([16_000, 1_000], [10_000, 1], [300, 2], [1, 1]):
        got = exhaustive.run_cap(query, cap, records)
        assert exhaustive.small_pairs(records, got) == {(0, 1)}, records
    assert exhaustive.run_cap(query, cap, [16_001, 1]) == 0
    assert exhaustive.run_cap(query, cap) == 0  # records unknown: blocked
    assert exhaustive.run_cap(query, 0, [300, 2]) == 0  # S1 blocks every pair
    assert exhaustive.run_cap(["p/north/t", "p/south/t"], cap, [300, 2]) == cap
    # S1 needs a query's band keys exactly where it blocks it (`keys_needed`, which S1's
    # Propose asks of a query sent without them), and so for a run of members over the cap.
    for records in ([16_000, 10_000], [300, 2]):
        assert not exhaustive.keys_needed(query, cap, records)
    assert exhaustive.keys_needed(query, cap, [16_001, 1])
    assert exhaustive.keys_needed(query, cap) and exhaustive.keys_needed(query, 0, [300, 2])
    assert exhaustive.keys_needed(["p/a/t", "p/b/t"], cap, [4_001, 4_000])
    assert not exhaustive.keys_needed(["p/a/t", "p/b/t"], cap, [4_000, 4_000])


def test_a_query_against_a_small_partner_is_not_blocked_over_grpc(
    unblocking: None,
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A query's two records against south's upload: with S1's shipped cap every pair is
    compared, none blocked (S1's audit names the pair unblocked), and the query finds
    its people as a blocked one does (tests/test_twoserver_query.py)."""
    south = members["south"][0]
    people = person_csv(south, sorted(south.truth)[:2], world.folder / "planted.csv")
    two = create(world, "shares", "two-server")
    for name in ("north", "south"):
        encoded = str(members[name][1])
        assert world.cli("upload", encoded, "--project", "shares", token=two.tokens[name]) == 0
    got = query(world, "shares", two.tokens["north"], people, south, capsys)
    assert [sorted(m["partner"] for m in r["matches"]) for r in got["results"]] == [["south"]] * 2
    kept = RoleAudit(world.folder / "s1-data", "s1")
    runs = [dict(e.detail) for e in kept.log.entries() if e.action == "twoserver.run"]
    kept.close()
    (query_run,) = runs
    assert len(query_run["unblocked"]) == 1
    assert int(str(query_run["pairs"])) == 2 * len(south.truth)  # the cross product


def test_the_cap_is_s1s_alone_and_not_negative(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from blindmatch.cli.app import main

    common = ["--listen", "127.0.0.1:0", "--key-file", str(tmp_path / "k"),
              "--member-key-file", str(tmp_path / "m")]  # fmt: skip
    assert main(["two-server", "role", "--role", "s2", *common, "--exhaustive-pairs", "9"]) == 2
    assert "--exhaustive-pairs 9: S1's" in capsys.readouterr().err
    assert main(["two-server", "role", "--role", "s1", "--s2", "127.0.0.1:1", *common,
                 "--exhaustive-pairs", "-1"]) == 2  # fmt: skip
    assert "--exhaustive-pairs -1" in capsys.readouterr().err


def test_s1_started_under_the_default_cap_warns_what_it_then_blocks() -> None:
    """`two-server role --role s1 --exhaustive-pairs N` under the default prints, after its
    listening line, which pairs and queries it then blocks and what S2's counts gave where
    they were blocked; at the default or above it says nothing more."""
    said = exhaustive.lowered_cap_warning(4_000_000)
    assert said is not None and "--exhaustive-pairs 4,000,000 is under" in said
    assert "pairs of members over 4,000,000 pairs" in said
    assert "under 4,000 records: over 64,000,000" in said  # the smaller-member cap still
    assert "queries against uploads over 64,000 records" in said and "8.7%" in said
    assert "every pair of members and every query" in str(exhaustive.lowered_cap_warning(0))
    assert exhaustive.lowered_cap_warning(exhaustive.SHIPPED_PAIRS) is None
    # the smaller-member cap lowered alone: small members and queries blocked sooner
    small = str(exhaustive.lowered_cap_warning(exhaustive.SHIPPED_PAIRS, 20_000_000))
    assert "--small-member-pairs 20,000,000 is under the default 64,000,000" in small
    assert "--exhaustive-pairs" not in small and "over 20,000 records" in small
    small = str(exhaustive.lowered_cap_warning(exhaustive.SHIPPED_PAIRS, 0))
    assert "under 4,000 records: over 16,000,000" in small and "over 16,000 records" in small
