"""A request reference withdrawn by the member it was issued to (`request --withdraw`,
`WithdrawRequestRef`; since refcarry): its partner's `resolve` is refused, saying it was
withdrawn and when; only the requester may withdraw it, and to anyone else it does not
exist; a second withdrawal is refused; each is in the requester's own audit view alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import NotFoundError, RejectedError
from tests.support import Matcher, Org, db_rows, encode, uploaded_and_run
from tests.test_report import Page, read_page


@pytest.fixture
def trio(matcher: Matcher) -> ProjectTokens:
    """north, south and east; east holds a copy of north's export."""
    with matcher.operator() as op:
        return op.create_project("trial", ["north", "south", "east"], require_purpose=True)


@pytest.fixture
def encoded(orgs: dict[str, Org], tmp_path: Path) -> dict[str, Encoded]:
    out = {name: encode(org, tmp_path / f"{name}.encoded") for name, org in orgs.items()}
    out["east"] = encode(orgs["north"], tmp_path / "east.encoded")
    return out


def cli(matcher: Matcher, command: str, token: str, *args: str) -> int:
    return main([command, "--project", "trial", "--token", token, *args,
                 "--server", matcher.target])  # fmt: skip


def audit(matcher: Matcher, token: str, action: str) -> list[dict[str, object]]:
    with MatcherClient(matcher.target, token) as member:
        return [e for e in member.audit("trial") if e["action"] == action]


def issued(matcher: Matcher, trio: ProjectTokens, encoded: dict[str, Encoded]) -> str:
    """north's reference for its record at row 0, addressed to south."""
    with matcher.member(trio.tokens["north"]) as north:
        refs = north.issue_request_refs(
            "trial", [0], encoded["north"].sha256, partner="south", purpose="REQ-117"
        )
    return refs.refs["south"]


def test_a_withdrawn_reference_no_longer_resolves_and_the_partner_is_told_it_was_withdrawn(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, trio, encoded)
    ref = issued(matcher, trio, encoded)
    north, south = trio.tokens["north"], trio.tokens["south"]
    answer = (ref, "--encoded", str(tmp_path / "south.encoded"), "--purpose", "answering")
    capsys.readouterr()

    assert cli(matcher, "request", north, "--withdraw", ref, "--purpose", "case closed") == 0
    said = capsys.readouterr().out
    assert f"Withdrew request reference {ref} (for south;" in said
    assert "south can no longer resolve it" in said and "had resolved" not in said

    # south, which it was addressed to, is refused, told by whom and when; nothing recorded.
    assert cli(matcher, "resolve", south, *answer) == 3
    told = capsys.readouterr().err
    assert f"{ref} was withdrawn by north, which was issued it, on 20" in told
    assert " UTC: it resolves no more" in told and "Nothing was recorded" in told
    assert audit(matcher, south, "request.resolve") == []
    assert audit(matcher, north, "request.resolve") == []

    # Withdrawing it again says so, and changes nothing (one entry, the first).
    assert cli(matcher, "request", north, "--withdraw", ref, "--purpose", "again") == 3
    assert f"{ref} was already withdrawn, on 20" in capsys.readouterr().err
    [entry] = audit(matcher, north, "request.withdraw")
    assert entry["actor"] == "north" and entry["purpose"] == "case closed"
    assert entry["detail"] == {
        "reference": ref,
        "partner": "south",
        "run_id": audit(matcher, north, "request.issue")[0]["detail"]["run_id"],  # type: ignore[index]
        "resolved": False,
    }
    # The partner and the third member see no withdrawal (nor the issue) in their views;
    # the operator sees it.
    for member in ("south", "east"):
        assert audit(matcher, trio.tokens[member], "request.withdraw") == []
    with matcher.operator() as op:
        assert [e["actor"] for e in op.audit("trial") if e["action"] == "request.withdraw"] == [
            "north"
        ]
    stored = [row for row in db_rows(matcher.data_dir, "request_refs") if row[0] == ref]
    assert stored[0][-1] is not None  # (withdrawn, the last column)
    # `audit report` (who in my organisation looked at what) lists it.
    capsys.readouterr()
    assert main(["audit", "report", "--project", "trial", "--token", north,
                 "--server", matcher.target]) == 0  # fmt: skip
    assert "withdrew a request reference it was issued" in capsys.readouterr().out


def test_a_reference_already_resolved_can_be_withdrawn_and_resolves_no_more(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, trio, encoded)
    ref = issued(matcher, trio, encoded)
    north, south = trio.tokens["north"], trio.tokens["south"]
    answer = (ref, "--encoded", str(tmp_path / "south.encoded"), "--purpose", "answering")
    assert cli(matcher, "resolve", south, *answer) == 0
    capsys.readouterr()

    assert cli(matcher, "request", north, "--withdraw", ref, "--purpose", "x", "--json") == 0
    gone = json.loads(capsys.readouterr().out)
    assert gone["reference"] == ref and gone["partner"] == "south"
    assert gone["resolved"] is True and gone["withdrawn"].endswith(" UTC")
    assert cli(matcher, "resolve", south, *answer) == 3
    assert "was withdrawn by north" in capsys.readouterr().err
    assert len(audit(matcher, south, "request.resolve")) == 1  # the first alone
    [entry] = audit(matcher, north, "request.withdraw")
    assert entry["detail"]["resolved"] is True  # type: ignore[index]


def test_only_the_member_issued_a_reference_can_withdraw_it_and_to_others_it_does_not_exist(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, trio, encoded)
    ref = issued(matcher, trio, encoded)
    never = "bmr-" + "a" * 26  # well formed, never issued
    with matcher.member(trio.tokens["east"]) as east:
        with pytest.raises(NotFoundError) as unknown:
            east.withdraw_request_ref("trial", never, "x")
        # The partner and a third member get the same answer as for one never issued.
        with pytest.raises(NotFoundError) as theirs:
            east.withdraw_request_ref("trial", ref, "x")
    with (
        matcher.member(trio.tokens["south"]) as south,
        pytest.raises(NotFoundError) as partners,
    ):
        south.withdraw_request_ref("trial", ref, "x")
    assert str(theirs.value).replace(ref, never) == str(unknown.value)
    assert str(partners.value).replace(ref, never) == str(unknown.value)
    assert "no request reference" in str(unknown.value)
    # Nothing was withdrawn or recorded: south still resolves it.
    for member in ("north", "south", "east"):
        assert audit(matcher, trio.tokens[member], "request.withdraw") == []
    capsys.readouterr()
    assert cli(matcher, "resolve", trio.tokens["south"], ref,
               "--encoded", str(tmp_path / "south.encoded"), "--purpose", "x") == 0  # fmt: skip
    # Something that is not a reference, and a project requiring a purpose without one.
    with matcher.member(trio.tokens["north"]) as north:
        with pytest.raises(RejectedError, match="is not a request reference"):
            north.withdraw_request_ref("trial", "S-10", "x")
        with pytest.raises(RejectedError, match="purpose"):
            north.withdraw_request_ref("trial", ref, "")
    assert audit(matcher, trio.tokens["north"], "request.withdraw") == []


def test_withdraw_takes_the_reference_alone(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, trio, encoded)
    ref = issued(matcher, trio, encoded)
    north = trio.tokens["north"]
    capsys.readouterr()
    assert cli(matcher, "request", north, "--withdraw", ref, "--purpose", "x",
               "--encoded", str(tmp_path / "north.encoded")) == 2  # fmt: skip
    assert "--encoded goes with --record-id or --hits" in capsys.readouterr().err
    assert cli(matcher, "request", north, "--record-id", "N1", "--purpose", "x") == 2
    assert "--encoded DIR: required with --record-id and --hits" in capsys.readouterr().err
    assert audit(matcher, north, "request.withdraw") == []


def test_the_report_page_counts_and_lists_the_references_the_member_withdrew(
    matcher: Matcher,
    trio: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The report page's request references (docs/report.md) counted issues and resolutions,
    not withdrawals: a reference withdrawn was shown as still standing."""
    uploaded_and_run(matcher, trio, encoded)
    ref = issued(matcher, trio, encoded)
    north = trio.tokens["north"]
    assert cli(matcher, "request", north, "--withdraw", ref, "--purpose", "case closed") == 0

    def page(member: str) -> Page:
        out = tmp_path / f"{member}.html"
        folder = str(tmp_path / f"{member}.encoded")
        args = ("--encoded", folder, "--out", str(out), "--quiet", "--purpose", "review")
        assert cli(matcher, "report", trio.tokens[member], *args) == 0
        return read_page(out)[1]

    north_page = page("north")
    text = " ".join(north_page.text)
    assert "You issued 1 reference in 1 request; you withdrew 1 reference you were issued" in text
    [_, row] = north_page.table("time", "purpose", "reference", "partner")
    assert row[1:] == ["case closed", ref, "south", row[4], "no"] and row[4].startswith("trial-")
    # south, its partner, sees neither the issue nor the withdrawal.
    south_page = page("south")
    assert "withdrew" not in " ".join(south_page.text)
    assert not south_page.table("time", "purpose", "reference", "partner")
    capsys.readouterr()
