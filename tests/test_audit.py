"""Purpose and audit: every consultation and disclosure is logged, with its justification,
in a chain that `audit verify` proves untouched - or names the entries that were touched."""

from __future__ import annotations

import json
import re
import sqlite3
import stat
from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import AuthError, RejectedError
from blindmatch.matcher.core import audit
from tests.support import Matcher, Org, db_rows, encode_all, snapshot, uploaded_and_run


@pytest.fixture
def encoded(orgs: dict[str, Org], tmp_path: Path) -> dict[str, Encoded]:
    return encode_all(orgs, tmp_path)


def actions(entries: list[dict]) -> list[str]:
    return [str(e["action"]) for e in entries]


def cli(matcher: Matcher, *args: str) -> int:
    return main([*args, "--server", matcher.target, "--quiet"])


# -- the chain, as pure logic ----------------------------------------------------------------

KEY = b"k" * 32


def chain(n: int) -> list[audit.Entry]:
    entries, prev = [], audit.GENESIS
    for i in range(1, n + 1):
        event = audit.Event(
            "north", "results.disclose", "p", "north", purpose=f"case {i}",
            disclosed={"south": "hits"}, detail={"counts": {"south": i}},
        )  # fmt: skip
        entries.append(audit.seal(KEY, i, 1000.0 + i, event, prev))
        prev = entries[-1].hash
    return entries


def test_an_untouched_chain_verifies() -> None:
    entries = chain(5)
    result = audit.verify(KEY, entries)
    assert result.ok and result.entries == 5 and result.problems == []
    assert (result.head_seq, result.head_hash) == (5, entries[-1].hash)
    assert audit.verify(KEY, []).ok


def test_the_canonical_form_is_stable() -> None:
    # Logs written by earlier versions must keep verifying: this hash was computed when
    # the chain was first defined; a change to the canonical form (or to how seal
    # normalises detail) breaks it.
    event = audit.Event(
        "north", "query", "p", "north", purpose="case ü 1",
        disclosed={"south": "hits", "east": "count"}, detail={"records": 2, "refs": ("r1", "r2")},
    )  # fmt: skip
    entry = audit.seal(KEY, 7, 1700000000.25, event, "ab" * 32)
    assert entry.detail == {"records": 2, "refs": ["r1", "r2"]}  # as JSON reads it back
    assert list(entry.disclosed) == ["east", "south"]
    assert entry.hash == "2a5c729cf8e4572f1da53c843b3b6e0a6b0047731eaee68d1a3aba5c0fb35283"
    assert audit.entry_hash(KEY, entry) == entry.hash


def test_the_user_is_covered_by_the_hash() -> None:
    event = audit.Event("north", "query", "p", "north", purpose="x", user="pc-4471")
    entry = audit.seal(KEY, 1, 1700000000.0, event, audit.GENESIS)
    assert entry.user == "pc-4471" and audit.verify(KEY, [entry]).ok
    edited = audit.Entry(**{**entry.__dict__, "user": "pc-1"})
    assert "edited" in audit.verify(KEY, [edited]).problems[0]
    anonymous = audit.Entry(**{**entry.__dict__, "user": ""})
    assert not audit.verify(KEY, [anonymous]).ok  # nor can the name be taken off


def test_the_chain_needs_the_key() -> None:
    result = audit.verify(b"x" * 32, chain(3))
    assert [p.split(":")[0] for p in result.problems] == ["entry 1", "entry 2", "entry 3"]


def test_verify_names_edited_moved_and_missing_entries() -> None:
    entries = chain(6)
    edited = [*entries[:2], audit.Entry(**{**entries[2].__dict__, "purpose": "fishing"}),
              *entries[3:]]  # fmt: skip
    assert audit.verify(KEY, edited).problems == [
        "entry 3: its hash does not match its content (edited)"
    ]
    missing = entries[:2] + entries[3:]
    assert (
        audit.verify(KEY, missing)
        .problems[0]
        .startswith("entry 4: expected seq 3; entries 3..3 are missing")
    )
    moved = [entries[0], entries[2], entries[1], *entries[3:]]
    assert not audit.verify(KEY, moved).ok


def test_a_cut_tail_is_caught_by_an_anchor() -> None:
    entries = chain(6)
    anchor = (6, entries[5].hash)
    assert audit.verify(KEY, entries, anchor).ok
    cut = audit.verify(KEY, entries[:4], anchor)
    assert cut.problems == [
        "anchor entry 6 is not in the log (the log ends at entry 4: the entries after it were "
        "removed, or the anchor is another log's)"
    ]
    assert audit.verify(KEY, entries[:4]).ok  # without an anchor, a shorter chain is valid


def test_every_action_the_code_writes_is_declared() -> None:
    """An undeclared action is a ValueError when the entry is written, i.e. a failed call at
    run time (S1's extras once were): every literal action handed to `audit.Event` or to a
    two-server role's `log` anywhere in the package is one of `audit.ACTIONS`."""
    root = Path(audit.__file__).resolve().parents[2]
    written = re.compile(r'(?:Event\(|\.log\()\s*[^,()]+,\s*"([a-z_]+\.[a-z_.]+|[a-z_]+)"')
    found = {
        (path.relative_to(root).as_posix(), action)
        for folder in ("matcher", "client", "blindmatch/cli")
        for path in (root / folder).rglob("*.py")
        for action in written.findall(path.read_text(encoding="utf-8"))
    }
    assert len(found) > 20  # the pattern still finds the writers
    assert {(f, a) for f, a in found if a not in audit.ACTIONS} == set()


def test_purpose_rules() -> None:
    assert audit.check_purpose("  OP-1 ", required=True, project="p") == "OP-1"
    assert audit.check_purpose("", required=False, project="p") == ""
    with pytest.raises(audit.InvalidArgument, match="requires a purpose"):
        audit.check_purpose(" ", required=True, project="p")
    with pytest.raises(audit.InvalidArgument, match="at most 200"):
        audit.check_purpose("x" * 201, required=False, project="p")
    with pytest.raises(audit.InvalidArgument, match="control characters"):
        audit.check_purpose("a\nb", required=False, project="p")


# -- what the matcher logs -----------------------------------------------------------------


def test_the_whole_flow_is_logged_in_order(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    uploaded_and_run(matcher, project, encoded)
    with matcher.member(project.tokens["north"]) as north:
        north.results("trial", purpose="OP-2291")
    with matcher.operator() as op:
        op.rotate_token("trial", "south")
        op.revoke_token("trial", "south")
        entries = list(op.audit())
    assert actions(entries) == [
        "project.create", "upload", "upload", "run.start", "run.done", "results.disclose",
        "token.rotate", "token.revoke",
    ]  # fmt: skip
    assert [e["seq"] for e in entries] == list(range(1, 9))
    create, up, _, start, done, disclosed, rotate, _ = entries
    assert create["actor"] == "operator"
    assert create["detail"]["members"] == ["north", "south"]
    assert (up["actor"], up["member"], up["detail"]["record_count"]) == ("north", "north", 5)
    assert start["actor"] == "north" and done["actor"] == "matcher"
    assert done["detail"]["groups"] == 3
    assert disclosed["actor"] == disclosed["member"] == "north"
    assert disclosed["purpose"] == "OP-2291"
    assert disclosed["disclosed"] == {"south": "hits"}
    assert disclosed["detail"]["counts"] == {"south": 3}
    assert (rotate["actor"], rotate["member"]) == ("operator", "south")
    text = json.dumps(entries)
    assert project.tokens["north"] not in text and "bm_" not in text  # never a token


def test_a_project_can_require_a_purpose(
    matcher: Matcher, encoded: dict[str, Encoded], tmp_path: Path
) -> None:
    with matcher.operator() as op:
        project = op.create_project("justified", ["north", "south"], require_purpose=True)
    assert project.require_purpose
    uploaded_and_run(matcher, project, encoded)
    before = snapshot(matcher)
    with (
        matcher.member(project.tokens["north"]) as north,
        pytest.raises(RejectedError, match="requires a purpose") as err,
    ):
        north.results("justified")
    assert "INVALID_ARGUMENT" in str(err.value)
    assert snapshot(matcher) == before  # refused: nothing disclosed, nothing logged

    out = tmp_path / "hits.csv"
    args = ["results", "--project", "justified", "--token", project.tokens["north"],
            "--encoded", str(encoded["north"].path), "--out", str(out)]  # fmt: skip
    assert cli(matcher, *args) == 3
    assert not out.exists()
    assert cli(matcher, *args, "--purpose", "case 17/2291") == 0
    logged = db_rows(matcher.data_dir, "audit")[-1]
    assert logged[3] == "results.disclose" and logged[6] == "case 17/2291"


def test_members_see_what_concerns_them_and_not_partners_purposes(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    uploaded_and_run(matcher, project, encoded)
    with matcher.member(project.tokens["north"]) as north:
        north.results("trial", purpose="north's case")
    with matcher.member(project.tokens["south"]) as south:
        south.results("trial", purpose="south's case")
        south.set_consent("trial", "count")
    with matcher.operator() as op:
        other = op.create_project("other", ["east", "west"])

    with matcher.member(project.tokens["north"]) as north:
        seen = list(north.audit("trial"))
    assert actions(seen) == [
        "project.create",
        "upload",
        "run.start",
        "run.done",
        "results.disclose",
        "audit.export",
    ]  # fmt: skip  (not south's upload, consent change or results today, nor project "other")
    mine = seen[-2]
    assert (mine["member"], mine["purpose"]) == ("north", "north's case")
    # south's disclosure about north's records shows only as a day's line, once the day is
    # over (tests/test_audit_views.py); south's case reference never
    assert "south's case" not in json.dumps(seen)
    assert seen[3]["detail"].keys() == {"run_id"}  # not the run's groups and links

    with matcher.member(other.tokens["east"]) as east, pytest.raises(AuthError):
        list(east.audit("trial"))
    with matcher.operator() as op:
        everything = list(op.audit())
    assert {"consent.set", "audit.export"} <= set(actions(everything))
    assert "south's case" in {e["purpose"] for e in everything}


def test_audit_export_and_verify_from_the_cli(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, project, encoded)
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    monkeypatch.delenv("BLINDMATCH_TOKEN", raising=False)
    assert cli(matcher, "audit", "export") == 0
    lines = capsys.readouterr().out.splitlines()
    assert [json.loads(line)["action"] for line in lines][:2] == ["project.create", "upload"]

    out = tmp_path / "north-audit.jsonl"
    member = ["--project", "trial", "--token", project.tokens["north"]]

    # --out a folder: refused before the export, which is audited (before, exported and
    # audited as `audit.export`, and then the file could not be written).
    def north_exports() -> int:
        with matcher.operator() as op:
            return sum(e["action"] == "audit.export" and e["actor"] == "north" for e in op.audit())

    assert cli(matcher, "audit", "export", *member, "--out", str(tmp_path)) == 2
    assert f"{tmp_path}: is a folder; give the name" in capsys.readouterr().err
    assert north_exports() == 0
    assert cli(matcher, "audit", "export", *member, "--after", "1", "--out", str(out)) == 0
    assert json.loads(out.read_text().splitlines()[0])["seq"] > 1
    assert north_exports() == 1

    assert cli(matcher, "audit", "verify") == 0
    printed = capsys.readouterr().out
    assert "Audit log intact" in printed
    head = printed.split("Head ")[1].split()[0]
    assert cli(matcher, "audit", "verify", "--anchor", head) == 0
    assert cli(matcher, "audit", "verify", "--anchor", "1:" + "0" * 64) == 1
    assert "hash differs from the anchor" in capsys.readouterr().err

    monkeypatch.setenv("BLINDMATCH_TOKEN", project.tokens["north"])
    assert cli(matcher, "audit", "verify") == 0  # verify always uses the operator token
    assert cli(matcher, "audit", "export") == 2  # a member must name its project
    assert "pass --project" in capsys.readouterr().err


def test_only_the_operator_verifies(matcher: Matcher, project: ProjectTokens) -> None:
    with matcher.member(project.tokens["north"]) as north, pytest.raises(AuthError):
        north.verify_audit()


def test_the_audit_key_is_private_to_the_matcher(matcher: Matcher) -> None:
    key = matcher.data_dir / "audit.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(key.read_bytes()) == 32


# -- tampering with the stored log -----------------------------------------------------------


@pytest.fixture
def logged(matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]) -> Matcher:
    """A matcher whose log holds 8 entries, all intact (the last is verify's own)."""
    uploaded_and_run(matcher, project, encoded)
    with matcher.member(project.tokens["north"]) as north:
        north.results("trial", purpose="a")
        north.results("trial", purpose="b")
    with matcher.operator() as op:
        assert op.verify_audit().ok
    assert len(db_rows(matcher.data_dir, "audit")) == 8
    return matcher


def tamper(matcher: Matcher, *statements: str) -> None:
    with sqlite3.connect(matcher.data_dir / "blindmatch.sqlite") as db:
        for sql in statements:
            db.execute(sql)


def problems(matcher: Matcher) -> list[str]:
    with matcher.operator() as op:
        result = op.verify_audit()
    assert not result.ok
    return result.problems


def test_an_edited_entry_is_detected(logged: Matcher) -> None:
    tamper(logged, "UPDATE audit SET purpose='routine check' WHERE seq=6")
    assert problems(logged) == ["entry 6: its hash does not match its content (edited)"]


def test_an_edited_entry_with_a_recomputed_plain_hash_is_detected(logged: Matcher) -> None:
    import hashlib

    forged = hashlib.sha256(b"whatever an editor computes without the key").hexdigest()
    tamper(logged, f"UPDATE audit SET disclosed='{{}}', hash='{forged}' WHERE seq=6")
    found = problems(logged)
    assert found[0] == "entry 6: its hash does not match its content (edited)"
    assert found[1].startswith("entry 7: prev_hash does not match")


def test_a_deleted_entry_is_detected(logged: Matcher) -> None:
    tamper(logged, "DELETE FROM audit WHERE seq=4")
    found = problems(logged)
    assert found[0] == "entry 5: expected seq 4; entries 4..4 are missing"
    assert found[1].startswith("entry 5: prev_hash does not match")


def test_reordered_entries_are_detected(logged: Matcher) -> None:
    tamper(
        logged,
        "UPDATE audit SET seq=-6 WHERE seq=6",
        "UPDATE audit SET seq=6 WHERE seq=7",
        "UPDATE audit SET seq=7 WHERE seq=-6",
    )
    found = problems(logged)
    assert any(p.startswith("entry 6:") for p in found)
    assert any(p.startswith("entry 7:") for p in found)


def test_a_cut_tail_is_detected_against_a_recorded_head(logged: Matcher) -> None:
    with logged.operator() as op:
        head = op.verify_audit()
    tamper(logged, f"DELETE FROM audit WHERE seq >= {head.head_seq - 2}")
    with logged.operator() as op:
        # A shorter chain is still a valid chain, but the matcher that wrote the cut entries
        # remembers the last (attackwalk; after a restart only an anchor tells)...
        assert not op.verify_audit().ok
        cut = op.verify_audit((head.head_seq, head.head_hash))
    assert not cut.ok  # ...and so does the head recorded earlier
    assert any("is not in the log" in p for p in cut.problems)


def test_export_after_the_last_entry_says_on_stderr_that_none_follows_and_where_they_end(
    matcher: Matcher,
    project: ProjectTokens,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`audit export --after N` with N past the last entry printed nothing and exited 0, as
    if the log had nothing new, whatever N: it says so on stderr with the number of the last
    entry the caller may see (the operator's log's, a member's view's), still exit 0 and
    nothing on stdout; -q says nothing."""
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    monkeypatch.delenv("BLINDMATCH_TOKEN", raising=False)
    server = ["--server", matcher.target]
    with matcher.operator() as op:
        last = max(int(e["seq"]) for e in op.audit())  # (this export audited after it)
    assert main(["audit", "export", "--after", str(last + 1000), *server]) == 0
    out, err = capsys.readouterr()
    # the last the operator may see: the export's own entry, made as it was answered
    assert out == "" and err == (
        f"No audit entry follows --after {last + 1000}: the last entry you may see is {last + 2}.\n"
    )
    member = ["--project", "trial", "--token", project.tokens["north"]]
    assert main(["audit", "export", *member, "--after", "500", *server]) == 0
    out, err = capsys.readouterr()
    seen = re.fullmatch(r"No audit entry follows --after 500: the last entry you may see is "
                        r"(\d+)\.\n", err)  # fmt: skip
    assert out == "" and seen, err
    assert main(["audit", "export", *member, "--after", str(int(seen[1]) - 1), *server]) == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["seq"] for line in out.splitlines()][:1] == [int(seen[1])], out
    assert err == ""
    assert main(["audit", "export", *member, "--after", "500", *server, "-q"]) == 0
    assert capsys.readouterr() == ("", "")
