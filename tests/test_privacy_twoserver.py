"""`privacy-check --mode two-server`: what each role of a two-server project learns, attacked.

On the same simulated people a matcher holding CLKs re-identifies nearly every record, while
the combiner's and S1's views stay under the bar; the check reports each role's figures,
writes them into privacy-check.json, and gives NO VERDICT on a sample too small to mean
anything, as the CLK check does.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from blindmatch.cli import main
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy import population
from blindmatch.client.tools.privacy.attacks import AttackResult
from blindmatch.client.tools.privacy.graphcheck import graph_attacks
from blindmatch.client.tools.privacy.twocheck import (
    MIN_SAMPLE,
    NOT_BLOCKED,
    UNBLOCKED_VIEW,
    TwoServerReport,
    check_members,
    synthetic_members,
)
from blindmatch.client.tools.privacy.twomembers import Member
from blindmatch.matcher.core import exhaustive
from blindmatch.matcher.core.twoviews import role_views
from tests.support import FIELD_LEVEL_SCHEMA, PERSON_SCHEMA, STRONG_SECRET

SCHEMA = load_schema(PERSON_SCHEMA)
ATTACKS = ["trilateration (blind)", "trilateration (10 known)", "trilateration (50 known)"]


@pytest.fixture(scope="module")
def seeded_check(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One `privacy-check --mode two-server --seed 1` at the smallest sample (the people a run
    without --seed checks, under keys from the seed): what it printed and its folder. The two
    tests below read it (a run is about 11 s of CPU; docs/architecture.md "Tests and their run
    time")."""
    out = tmp_path_factory.mktemp("seeded") / "check"
    printed = io.StringIO()
    # tests/conftest.py's S1 blocks every pair for each test, after a module's fixtures.
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
        patch.setattr(exhaustive, "DEFAULT_PAIRS", 0)
        patch.setattr(exhaustive, "DEFAULT_SMALL_PAIRS", 0)
        code = main(["privacy-check", "--mode", "two-server", "--sample", str(MIN_SAMPLE),
                     "--seed", "1", "--out", str(out)])  # fmt: skip
    assert code == 0  # without --strict, whatever the verdict
    return printed.getvalue(), out


def test_each_roles_figures_are_printed_and_written_with_the_verdict(
    seeded_check: tuple[str, Path],
) -> None:
    printed, out = seeded_check
    for role in ("C", "C*", "S1", "S2"):
        for attack in ATTACKS:
            assert f"  {role:<4} {attack}" in printed, printed
    data = json.loads((out / "privacy-check.json").read_text())
    # S2's counts are attacked under four readings, as the agreement over 0.5, 1, 2 and 4 x
    # each CLK's 1,600 bands (both CLKs': against 6,400, 3,200, 1,600 and 800 bands), and
    # each row keeps the reading that re-identified most, named in the row and the JSON: a
    # check reading them one way passed a band plan whose counts leak read another.
    s2_rows = [line for line in printed.splitlines() if line.startswith("  S2   trilateration")]
    assert len(s2_rows) == 3
    readings = data["s2_readings"]
    assert sorted(readings) == sorted(ATTACKS)
    for attack, got in readings.items():
        assert set(got["shares"]) == {"0.5", "1", "2", "4"}, got
        kept = got["shares"][f"{got['kept']:g}"]
        assert data["roles"]["S2"][attack] == kept == max(got["shares"].values()), got
        (row,) = [r for r in s2_rows if f"  S2   {attack} " in r]
        assert f"read against {3200 / got['kept']:,.0f} bands, the worst of 4 readings" in row
        each = ", ".join(f"x{k} {v:.2%}" for k, v in got["shares"].items())
        assert f"  S2 {attack}, by reading of the counts: {each}" in printed
    assert data["mode"] == "two-server"
    # C*: C's view with S1's quota of reach pairs a dishonest C asks, each a 1 (as if it
    # guessed each record's near neighbour right: docs/privacy-design.md)
    assert set(data["roles"]) == {"C", "C*", "S1", "S2"}
    assert sorted(data["roles"]["C"]) == sorted(data["roles"]["C*"]) == sorted(ATTACKS)
    assert sorted(data["roles"]["C"]) == sorted(data["roles"]["S1"]) == sorted(ATTACKS)
    # S2 also sees A's own rows linked by a token of B it opened twice: the collision attack.
    assert sorted(data["roles"]["S2"]) == sorted(
        [*ATTACKS, *(a.replace("trilateration", "collisions") for a in ATTACKS)]
    )
    shares = [s for v in data["roles"].values() for s in v.values()]
    # The verdict is the CLK check's rule over every role's figures.
    assert data["passed"] is all(s < 0.01 for s in shares)
    assert data["verdict"].startswith("PASS" if data["passed"] else "LEAKS")
    assert data["verdict"] in printed
    # The combiner holds the links and their buckets, S1 the candidates: under the bar.
    assert all(s < 0.01 for role in ("C", "S1") for s in data["roles"][role].values()), data
    assert (out / "privacy-check.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_seed_repeats_a_run_keys_and_all(tmp_path: Path, seeded_check: tuple[str, Path]) -> None:
    # --seed fixes the synthetic people and the keys, the project's and the attacker's (fresh
    # each run without it, as a real project's and attacker's are): two runs with the same
    # seed write the same figures, pair counts and claims included.
    got = [json.loads((seeded_check[1] / "privacy-check.json").read_text())]
    out = tmp_path / "second"
    code = main(["privacy-check", "--mode", "two-server", "--sample", str(MIN_SAMPLE),
                 "--seed", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    got.append(json.loads((out / "privacy-check.json").read_text()))
    assert got[0] == got[1]
    assert got[0]["source"] == f"synthetic data ({MIN_SAMPLE} people, seed 1, keys from the seed)"
    assert any(r["claims"] for r in got[0]["results"])  # the attacks made claims to repeat


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Member]]:
    """`synthetic_members` at seed 1 and the smallest sample (the people `--seed 1` checks),
    read once for the module: the tests below only read them (check_members and the graph
    attack copy what they change)."""
    made = synthetic_members(tmp_path_factory.mktemp("members"), 1, MIN_SAMPLE, SCHEMA)
    kept = copy.deepcopy(made)
    yield made
    assert made == kept, "a test changed the shared members"


def test_the_same_people_fall_to_a_matcher_holding_their_clks(members: list[Member]) -> None:
    # The CLK-mode view of the test above's member A (the same seed and size): graph matching
    # with 10 known pairs re-identifies most of it.
    (a_rows, a_people), _b, (u_rows, u_people) = members
    (found,) = graph_attacks(SCHEMA, a_rows, u_rows, a_people, u_people, b"\x07" * 32, NONE,
                             known=(10,))  # fmt: skip
    assert found.record_share > 0.5, found


def export_args(tmp_path: Path, seed: int, rows: int) -> list[str]:
    """A member's export of `rows` synthetic people and a secret file: privacy-check's DATA
    arguments (DATA, --mapping, --secret-file)."""
    export = population.write_single(tmp_path / "data", seed, rows)
    secret = tmp_path / "linkage.secret"
    secret.write_text(STRONG_SECRET)
    return [str(export.csv), "--mapping", str(export.mapping), "--secret-file", str(secret)]


def _result(role: str, attack: str, right: int) -> AttackResult:
    return AttackResult(attack, role, "(record)", "a view", 1000, right, 1000, right, right)


def test_the_verdict_names_the_role_whose_view_leaks() -> None:
    results = [_result("C", "trilateration (blind)", 2), _result("S2", ATTACKS[2], 9)]
    report = TwoServerReport("data", 1000, "none", results, [])
    assert report.passed and report.verdict().startswith("PASS"), report.verdict()
    report.results.append(_result("S2", ATTACKS[1], 10))  # 1.0%: the bar is "under 1%"
    assert not report.passed
    assert report.verdict().startswith("LEAKS: trilateration (10 known) on S2's view"), (
        report.verdict()
    )
    assert report.to_dict()["roles"] == {
        "C": {"trilateration (blind)": 0.002},
        "S2": {ATTACKS[2]: 0.009, ATTACKS[1]: 0.01},
    }


def test_the_worst_view_is_the_one_that_reidentifies_most_of_member_as_records() -> None:
    """As the CLK check (report.py, srvcarry): the worst attack is the one that names the most
    of A's records, of all of them, and its verdict keeps both figures. With 50 known pairs
    S2's attack was right on 940 of the 950 records it tried (98.9%, 94.0% of all 1,000), the
    blind one on C's view on 945 of 1,000; the verdict said only `(940 of 950)`."""
    known = AttackResult(ATTACKS[2], "S2", "(record)", "a view", 950, 940, 950, 940, 940)
    blind = AttackResult(ATTACKS[0], "C", "(record)", "a view", 1000, 945, 1000, 945, 945)
    report = TwoServerReport("data", 1000, "none", [known, blind], [])
    assert report.worst is blind
    assert report.verdict() == (
        "LEAKS: trilateration (blind) on C's view re-identified 94.5% of records (945 of "
        "1000); the limit is 1% (docs/privacy-design.md)"
    )
    only_known = TwoServerReport("data", 1000, "none", [known], [])
    assert only_known.verdict() == (
        "LEAKS: trilateration (50 known) on S2's view re-identified 98.9% of records (940 of "
        "950, 94.0% of all 1,000); the limit is 1% (docs/privacy-design.md)"
    )
    # privacy-check.json: each result's share of all of A's records, as the CLK check's
    results = report.to_dict()["results"]
    assert [r["share_of_all_records"] for r in results] == [0.94, 0.945]
    assert only_known.to_dict()["verdict"] == only_known.verdict()


def test_a_sample_too_small_gives_no_verdict_as_the_clk_check_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Both modes answer a sample too small for a verdict alike: NO VERDICT, the report
    # written, exit 0 (1 with --strict). Two-server mode refused it with exit 2 before.
    out = tmp_path / "check"
    synthetic = ["privacy-check", "--mode", "two-server", "--sample", "100", "--out", str(out)]
    assert main(synthetic) == 0
    printed = capsys.readouterr().out
    assert "NO VERDICT: 100 records of member A are too few" in printed, printed
    data = json.loads((out / "privacy-check.json").read_text())
    assert data["verdict"].startswith("NO VERDICT") and data["roles"] == {}, data
    assert (out / "privacy-check.png").exists()
    assert main([*synthetic, "--strict"]) == 1
    # An export with fewer rows than the sample asks for: the same, naming the count, in
    # either mode (the CLK check without graph matching, whose leak could stand on 300).
    data_args = export_args(tmp_path, 1, 300)
    for mode, strict, code in ((["--mode", "two-server"], [], 0),
                               (["--mode", "two-server"], ["--strict"], 1),
                               (["--graph-records", "0"], ["--strict"], 1)):  # fmt: skip
        capsys.readouterr()
        assert main(["privacy-check", *data_args, *mode, *strict, "--out", str(out)]) == code
        verdict = capsys.readouterr().out.strip().splitlines()[-2]
        assert verdict.startswith("NO VERDICT: 300 records"), (mode, verdict)
    # Nothing attacked is NO VERDICT, never a PASS (`--strict` exited 0 on it before).
    nothing = TwoServerReport("x", MIN_SAMPLE, "none", [], [])
    assert nothing.verdict().startswith("NO VERDICT") and not nothing.passed
    # A sample that is not a count at all is bad input, as --records is.
    with pytest.raises(SystemExit) as usage:
        main(["privacy-check", "--mode", "two-server", "--sample", "0"])
    assert usage.value.code == 2


def test_a_field_level_schema_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["privacy-check", "--mode", "two-server", "--schema", str(FIELD_LEVEL_SCHEMA),
                 "--out", str(tmp_path / "check")])  # fmt: skip
    assert code == 2
    assert "field-level schema has no two-server upload" in capsys.readouterr().err


def test_a_members_own_export_is_checked_as_member_a(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # B is a noisy copy of half of the sample, the attacker's plaintext another of all of it.
    data_args = export_args(tmp_path, 2, 800)
    out = tmp_path / "check"
    code = main(["privacy-check", *data_args, "--mode", "two-server", "--sample", "600",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"of {data_args[0]}: 600 records of member A" in printed
    data = json.loads((out / "privacy-check.json").read_text())
    assert data["records"] == 600 and set(data["roles"]) == {"C", "C*", "S1", "S2"}
    assert all(s < 0.01 for s in data["roles"]["C"].values()), data


def test_decoy_rows_are_attacked_but_count_in_no_share(
    tmp_path: Path, members: list[Member]
) -> None:
    # Members padded with decoy people (benchmarks/twoserver.py --pad-to): rows whose person
    # the attacker's plaintext lacks. Every role's view holds them and the attacks run over
    # them (a claim on one is never right), but a share counts A's real records only.
    fake = synthetic_members(tmp_path / "fake", 2, 200, SCHEMA)
    padded = []
    for (rows, people), (extra, others) in zip(members[:2], fake[:2], strict=True):
        padded.append((rows + extra, people + [-1 - q for q in others]))
    report = check_members([*padded, members[2]], SCHEMA, STRONG_SECRET.encode(), role_views,
                           source="padded", known=(0, 10))  # fmt: skip
    assert report.records == MIN_SAMPLE
    assert {r.encoding for r in report.results} == {"C", "C*", "S1", "S2"}
    for r in report.results:
        assert r.records == MIN_SAMPLE - (10 if "10 known" in r.attack else 0), r
        assert r.records_reidentified <= r.claims, r
    # S2 is attacked too by the attacker that keeps the rows with the highest count to the
    # other member (a member's own decoys have no partner there), as many as A's real people.
    dropped = [r for r in report.results if r.attack.startswith("decoy-aware")]
    assert [(r.encoding, r.attack) for r in dropped] == [
        ("S2", "decoy-aware (blind)"),
        ("S2", "decoy-aware (10 known)"),
    ]
    assert f"the {MIN_SAMPLE:,} rows of A" in dropped[0].public_list, dropped[0]


def test_members_compared_without_blocking_give_s1_and_s2_nothing_and_the_report_says_so(
    members: list[Member],
) -> None:
    # A pair of members within S1's cap of pairs is not blocked (matcher/core/exhaustive.py):
    # S1's and S2's views are empty by construction, which the rows say rather than "0 pairs",
    # and S2 has no counts to read four ways.
    views = functools.partial(role_views, exhaustive=10**6, clear=True)
    report = check_members(members, SCHEMA, STRONG_SECRET.encode(), views, source="synthetic",
                           known=(0,), third=False)  # fmt: skip
    rows = [r for r in report.results if r.encoding in ("S1", "S2")]
    assert rows and all(r.public_list.startswith(NOT_BLOCKED) for r in rows)
    assert all(r.record_share == 0 for r in rows)
    assert not report.readings
    assert NOT_BLOCKED in report.render()
    (c,) = [r for r in report.results if r.encoding == "C"]
    assert "pairs;" in c.public_list and NOT_BLOCKED not in c.public_list


def test_a_blocked_pair_with_empty_views_is_not_reported_as_not_blocked(
    members: list[Member],
) -> None:
    # S1's and S2's views empty, but the pair of members blocked (no candidate at all): the
    # views name no pair of members not blocked (matcher/core/twoviews.py NOT_BLOCKED), so
    # the rows are attacked as any, S2's counts read four ways, and none says "not blocked"
    # (it used to, from the two empty views alone). The pair not blocked: the test above.
    nothing = (np.empty((0, 2), np.intp), np.empty(0))

    def views(uploads: object, threshold: float, rule: object) -> dict[str, object]:
        return {"C": nothing, "S1": nothing, "S2": nothing, "S2 A:0": nothing,
                UNBLOCKED_VIEW: nothing}  # fmt: skip

    report = check_members(members, SCHEMA, STRONG_SECRET.encode(), views,  # type: ignore[arg-type]
                           source="synthetic", known=(0,), third=False)  # fmt: skip
    rows = [r for r in report.results if r.encoding in ("S1", "S2")]
    assert rows and not any(NOT_BLOCKED in r.public_list for r in rows)
    assert report.readings  # S2's (empty) counts read four ways, as a blocked pair's
