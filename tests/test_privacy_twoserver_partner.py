"""`privacy-check --mode two-server --partner-records N`: a partner member B of N records.

A partner larger than the dense trilateration attack holds (B x B scores) is attacked with the
sparse one (client/tools/privacy/trisparse.py: each record of B scored against the nearest
records of its seeded candidates' people), the report says which ran and B's size, and the
flags' bad values exit 2 naming the flag, as privacy-check's others do (issue 18).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blindmatch.cli import main
from blindmatch.client.encoding.harden import NONE
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy import twokeys
from blindmatch.client.tools.privacy.twocheck import KEYED, MIN_SAMPLE, NEAR
from blindmatch.client.tools.privacy.twomembers import synthetic_members, upload
from blindmatch.matcher.core.twoviews import NOT_BLOCKED, role_views
from tests.support import PERSON_SCHEMA, STRONG_SECRET
from tests.test_privacy_twoserver import export_args

TWO = ["privacy-check", "--mode", "two-server"]
ATTACKS = ["trilateration (blind)", "trilateration (10 known)", "trilateration (50 known)"]


def test_a_partner_over_the_dense_limit_is_attacked_sparse_and_the_report_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The switch-over lowered to 500 records of B (the default, DENSE_UP_TO, is 12,000):
    # B's 600 are attacked sparse, each record against its seeded candidates' NEAR nearest,
    # on S1's and S2's views made from band keys (C's view needs the roles' own run). Any
    # size over the limit is attacked alike (`twocheck.attack_near`); B's size is most of
    # the run's time (1,200 over 1,000 before: 79 s of a loaded run, docs/architecture.md).
    out = tmp_path / "check"
    code = main([*TWO, "--sample", str(MIN_SAMPLE), "--partner-records", "600",
                 "--dense-up-to", "500", "--seed", "1", "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert f"(500 people, a partner of 600, seed 1, keys from the seed): {MIN_SAMPLE} " in printed
    assert (
        f"  member B: 600 records; trilateration: sparse (each record of B scored against "
        f"the {NEAR} nearest records of its seeded candidates' people)"
    ) in printed, printed
    data = json.loads((out / "privacy-check.json").read_text())
    assert data["partner_records"] == 600
    assert data["trilateration"] == {"attack": "sparse", "near": NEAR}
    # S1's and S2's views, blocked (the suite's S1 blocks every pair), made from the members'
    # band keys, and attacked blind and with known pairs; the report says C's is not
    assert data["views"] == KEYED and f"  {KEYED}" in printed
    assert data["roles"] == {
        role: {a: data["roles"][role][a] for a in ATTACKS} for role in ("S1", "S2")
    }, data
    assert any(r["claims"] for r in data["results"]), data
    assert "pairs; " in data["results"][0]["public_list"]  # not "not blocked"
    verdict = data["verdict"]
    assert verdict.startswith("PASS: every attack on S1's and S2's views (C's not attacked)") or (
        verdict.startswith("LEAKS")
    ), verdict


@pytest.mark.parametrize(
    ("flags", "attack", "near"),
    [
        ([], "dense", None),  # 1,000 records of B (up to 12,000): the dense attack, as before
        (["--dense-up-to", "999"], "sparse", NEAR),
        (["--near", "8"], "sparse", 8),  # asked for at any size
    ],
)
def test_which_attack_runs_on_a_partner_follows_its_size_and_the_flags(
    tmp_path: Path, flags: list[str], attack: str, near: int | None
) -> None:
    # A sample under MIN_SAMPLE attacks nothing (NO VERDICT), but its report names B's size
    # and the attack a verdict would have run: the choice, at the cost of the data alone.
    out = tmp_path / "check"
    code = main([*TWO, "--sample", "100", "--partner-records", "1000", *flags,
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    data = json.loads((out / "privacy-check.json").read_text())
    assert data["verdict"].startswith("NO VERDICT")
    assert data["partner_records"] == 1000
    assert data["trilateration"] == {"attack": attack, "near": near}


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--partner-records", "-5"], "argument --partner-records: -5"),
        (["--partner-records", "0"], "argument --partner-records: 0"),
        (["--partner-records", "many"], "argument --partner-records: many"),
        (["--near", "0"], "argument --near: 0"),
        (["--dense-up-to", "-1"], "argument --dense-up-to: -1"),
    ],
)
def test_a_bad_partner_flag_value_exits_2_naming_it(
    flags: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        main([*TWO, *flags])
    assert usage.value.code == 2
    assert named in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "named"),
    [
        # B holds half of A's people: fewer records than that cannot be such a partner
        ([*TWO, "--sample", "600", "--partner-records", "299"],
         "--partner-records 299: member B holds half of member A's people (300 of its 600"),
        (["privacy-check", "--partner-records", "64001"],
         "--partner-records is a --mode two-server option"),
        (["privacy-check", "--near", "16"], "--near is a --mode two-server option"),
        (["privacy-check", "--mode", "clk", "--dense-up-to", "5"],
         "--dense-up-to is a --mode two-server option"),
    ],
)  # fmt: skip
def test_a_partner_too_small_or_without_two_server_mode_exits_2_naming_the_flag(
    tmp_path: Path, args: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "check"
    assert main([*args, "--out", str(out)]) == 2
    assert named in capsys.readouterr().err
    assert not out.exists()  # refused before anything is written


def test_a_members_export_too_small_for_the_partner_exits_2_naming_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # On a member's own export B is half of the sample and rows of the export beyond it: 800
    # rows, 600 sampled, leave 200 others, so B holds at most 300 + 200.
    code = main(["privacy-check", *export_args(tmp_path, 2, 800), "--mode", "two-server",
                 "--sample", "600", "--partner-records", "501",
                 "--out", str(tmp_path / "check")])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert (
        "--partner-records 501: member B holds half of the 600 records sampled as member A "
        "and 201 others, but the export has 200 other rows"
    ) in err, err


def test_s1s_and_s2s_views_from_band_keys_are_the_roles_own(tmp_path: Path) -> None:
    # A partner over the dense limit is not run through the roles (its sealed upload alone is
    # 4.5 GB at peak at 16,000 records): S1's and S2's views are made from the members' band
    # keys, B's a part at a time (twokeys.py), and are the roles' own, blocked or not.
    schema = load_schema(PERSON_SCHEMA)
    secret = STRONG_SECRET.encode()
    (a_rows, _a), (b_rows, _b), _own = synthetic_members(tmp_path, 3, 300, schema, 700)
    uploads = [upload(schema, rows, secret, NONE) for rows in (a_rows, b_rows)]
    real = role_views(uploads, 0.8, schema.rule, exhaustive=0, clear=True)
    a_keys = twokeys.band_keys(schema, a_rows, secret)
    made = [twokeys.views_by_parts(schema, secret, a_keys, b_rows, part=250),
            twokeys.key_views(schema, secret, NONE, True, NOT_BLOCKED)(a_rows, b_rows)]  # fmt: skip
    assert len(real["S2"][0]) > 100  # candidates to compare
    for lean in made:
        for role in ("S1", "S2"):
            assert np.array_equal(real[role][0], lean[role][0]), role
            assert np.array_equal(real[role][1], lean[role][1]), role
    whole = role_views(uploads, 0.8, schema.rule, exhaustive=10**6, clear=True)
    lean = twokeys.key_views(schema, secret, NONE, False, NOT_BLOCKED)(a_rows, b_rows)
    for role in ("S1", "S2", NOT_BLOCKED):
        assert np.array_equal(whole[role][0], lean[role][0]), role
