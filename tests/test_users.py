"""Named users under a member (DPA 2018 s.62: the log names the person who consulted or
disclosed), against a real matcher: every consultation and disclosure names its user; a
project that requires users refuses organisation tokens for them; a revoked user token is
refused; `user` and `audit export --format csv|html` / `audit report` from the CLI."""

from __future__ import annotations

import csv
import io
import json
import stat
import threading
from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import AuthError
from tests.support import (
    GRACE,
    PURPOSE,
    Matcher,
    ask,
    first_notification,
    index_all,
    orgs_encoded,
    person,
)

encoded = orgs_encoded  # the fixture: each org encoded with the test secret


def users_project(matcher: Matcher, *, require: bool) -> ProjectTokens:
    with matcher.operator() as op:
        project = op.create_project("named", ["north", "south"], require_users=require)
        op.set_query_limits("named", allow_watch=True)
    return project


def add(matcher: Matcher, admin_token: str, user: str) -> str:
    with matcher.member(admin_token) as admin:
        return admin.add_user("named", user)


def cli(matcher: Matcher, *args: str) -> int:
    return main([*args, "--server", matcher.target])


def test_every_consultation_and_disclosure_names_its_user(
    matcher: Matcher, encoded: dict[str, Encoded], secret_file: Path
) -> None:
    project = users_project(matcher, require=True)
    pc = add(matcher, project.tokens["north"], "pc-4471")
    analyst = add(matcher, project.tokens["south"], "analyst-2")
    grace = person(secret_file, **GRACE)

    with matcher.member(pc) as north:
        north.upload("named", encoded["north"])
    with matcher.member(analyst) as south:
        south.upload("named", encoded["south"])
        run = south.start_run("named")
        assert list(south.watch_run("named", run.run_id))[-1].state == "done"
    with matcher.member(pc) as north:
        assert north.describe("named").user == "pc-4471"
        north.results("named", purpose="op. larch")

    def south_indexes() -> None:
        with matcher.member(analyst) as south:  # the notification is north's user's, not south's
            index_all(south, "named", encoded["south"])

    told = first_notification(matcher, pc, "named", grace, south_indexes)
    assert told
    with (
        matcher.member(pc) as north,
        north.query_session("named", clk_bits=grace[1], fingerprint=grace[2]) as session,
    ):
        assert ask(north, "named", grace) == ["south"]
        assert session.query(grace[0], purpose="on a stream").results[0]

    with matcher.operator() as op:
        log = [e for e in op.audit("named") if e["actor"] in ("north", "south")]
    users = {(e["actor"], e["action"], e["user"]) for e in log}
    assert {
        ("north", "upload", "pc-4471"),
        ("north", "project.describe", "pc-4471"),
        ("north", "results.disclose", "pc-4471"),
        ("north", "watch", "pc-4471"),
        ("north", "watch.notify", "pc-4471"),
        ("north", "query", "pc-4471"),
        ("south", "upload", "analyst-2"),
        ("south", "run.start", "analyst-2"),
        ("south", "index.change", "analyst-2"),
        ("north", "user.add", ""),  # the administrator's own token
    } <= users
    consultations = [e for e in log if e["action"] in ("results.disclose", "query", "watch")]
    assert consultations and all(e["user"] for e in consultations)
    assert {e["purpose"] for e in consultations} == {"op. larch", PURPOSE, "on a stream"}

    with matcher.member(project.tokens["north"]) as admin:
        own = list(admin.audit("named"))
        assert [u.name for u in admin.list_users("named")] == ["pc-4471"]
    assert {e["user"] for e in own if e["actor"] == "north"} == {"", "pc-4471"}
    with matcher.member(analyst) as south:
        theirs = list(south.audit("named"))
    assert "pc-4471" not in str(theirs)  # a partner's users are its own business

    # The operator's volume report names the user whose token asked, on its member's row.
    with matcher.operator() as op:
        report = {v.member: v for v in op.query_report("named")}
    north_row = report["north"]
    assert north_row.queries >= 3  # the watch, the query, the one on a stream
    assert [(u.user, u.queries, u.records) for u in north_row.users] == [
        ("pc-4471", north_row.queries, north_row.records)
    ]
    assert report["south"].users == []


def test_a_project_requiring_users_refuses_organisation_tokens(
    matcher: Matcher,
    encoded: dict[str, Encoded],
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = users_project(matcher, require=True)
    org = project.tokens["north"]
    grace = person(secret_file, **GRACE)
    # What is not a consultation works with the organisation token, as before.
    for name in ("north", "south"):
        with matcher.member(project.tokens[name]) as member:
            member.upload("named", encoded[name])
            index_all(member, "named", encoded[name])
    with matcher.member(org) as north:
        run = north.start_run("named")
        assert list(north.watch_run("named", run.run_id))[-1].state == "done"
        assert north.describe("named").require_users
        for consult in (
            lambda: north.results("named", purpose="x"),
            lambda: ask(north, "named", grace),
            lambda: next(
                north.watch(
                    "named",
                    grace[0],
                    clk_bits=grace[1],
                    fingerprint=grace[2],
                    purpose="x",
                    timeout=10,
                )
            ),
            lambda: north.issue_hit_refs("named", [([0], "south")], encoded["north"].sha256),
        ):
            with pytest.raises(AuthError, match="requires a named user"):
                consult()
    with matcher.operator() as op:
        assert not [e for e in op.audit("named") if e["action"] in ("results.disclose", "query")]

    monkeypatch.delenv("BLINDMATCH_TOKEN", raising=False)
    out = encoded["north"].path.parent / "named-hits.csv"
    args = ["results", "--project", "named", "--encoded", str(encoded["north"].path)]
    assert cli(matcher, *args, "--token", org, "--out", str(out)) != 0
    assert "user add" in capsys.readouterr().err and not out.exists()
    pc = add(matcher, org, "pc-1")
    assert cli(matcher, *args, "--token", pc, "--out", str(out)) == 0
    assert out.exists()


def test_a_revoked_user_token_is_refused(matcher: Matcher, encoded: dict[str, Encoded]) -> None:
    project = users_project(matcher, require=False)
    pc = add(matcher, project.tokens["north"], "pc-1")
    other = add(matcher, project.tokens["north"], "pc-2")
    with matcher.member(pc) as user:
        user.upload("named", encoded["north"])
        with pytest.raises(AuthError, match="administrator"):
            user.add_user("named", "pc-3")  # a user does not manage users
    with matcher.member(project.tokens["north"]) as admin:
        admin.revoke_user("named", "pc-1")
        listed = {u.name: u.revoked for u in admin.list_users("named")}
    assert listed["pc-1"] is not None and listed["pc-2"] is None
    with matcher.member(pc) as user, pytest.raises(AuthError, match="this token was revoked on"):
        user.describe("named")
    # The operator revoking the member revokes its users with it.
    with matcher.operator() as op:
        op.revoke_token("named", "north")
    with matcher.member(other) as user, pytest.raises(AuthError, match="this token was revoked on"):
        user.describe("named")
    with matcher.operator() as op:
        [revoke] = [e for e in op.audit("named") if e["action"] == "token.revoke"]
    assert revoke["detail"] == {"users_revoked": ["pc-2"]}


def test_users_and_audit_files_from_the_cli(
    matcher: Matcher,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = users_project(matcher, require=False)
    monkeypatch.delenv("BLINDMATCH_TOKEN", raising=False)
    admin = ["--project", "named", "--token", project.tokens["north"]]
    token_file = tmp_path / "pc.token"
    assert cli(matcher, "user", "add", "pc-9", *admin, "--out", str(token_file)) == 0
    printed = capsys.readouterr().out
    token = token_file.read_text().strip()
    assert token.startswith("bm_") and token not in printed and str(token_file) in printed
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert cli(matcher, "user", "add", "pc-9", *admin, "--out", str(token_file)) == 2  # exists
    capsys.readouterr()

    hostile = '<script>alert(1)</script> & "=cmd|calc"'
    with matcher.member(token) as user:
        user.upload("named", encoded["north"])
    with matcher.member(project.tokens["south"]) as south:
        south.upload("named", encoded["south"])
        south.start_run("named")
    with matcher.member(token) as user:
        for _ in range(200):
            if user.describe("named").latest_run.state == "done":  # type: ignore[union-attr]
                break
            threading.Event().wait(0.05)
        user.results("named", purpose=hostile)
        user.results("named", purpose="=HYPERLINK(1)")

    with matcher.member(project.tokens["north"]) as org:
        org.describe("named")  # the administrator's own look, with the organisation token
    page = tmp_path / "audit.html"
    assert cli(matcher, "audit", "export", *admin, "--format", "html", "--out", str(page)) == 0
    html = page.read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp;" in html
    assert "http" not in html.replace("http-equiv", "")  # nothing loaded from elsewhere
    assert "pc-9" in html

    assert cli(matcher, "audit", "export", *admin, "--format", "csv") == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    disclosed = [r for r in rows if r["action"] == "results.disclose"]
    assert [r["user"] for r in disclosed] == ["pc-9", "pc-9"]
    assert [r["purpose"] for r in disclosed] == [hostile, "'=HYPERLINK(1)"]
    assert all(len(r["time"]) == 20 and r["time"].endswith("Z") for r in rows)
    assert rows[0]["time"][4] == "-" and rows[0]["time"][10] == "T"

    assert cli(matcher, "audit", "report", *admin) == 0
    report = capsys.readouterr().out
    assert "pc-9" in report and "fetched results" in report and hostile in report
    counts = json.loads(disclosed[0]["detail"])["counts"]
    fetched = [line for line in report.splitlines() if "fetched results" in line]
    assert counts and all(line.endswith(f"south: {counts['south']}") for line in fetched)
    assert "(organisation token)" in report  # the administrator's own look at the project

    assert cli(matcher, "user", "list", *admin) == 0
    assert "pc-9: added" in capsys.readouterr().out
    assert cli(matcher, "user", "revoke", "pc-9", *admin) == 0
    with matcher.member(token) as user, pytest.raises(AuthError):
        user.describe("named")


def test_a_query_log_from_before_users_keeps_its_rows_and_gains_the_user(tmp_path: Path) -> None:
    """index.sqlite written before the query log named users: its entries read back as the
    member's own token's, and new ones keep their user."""
    import sqlite3

    from blindmatch.matcher.domain import QUERY, QueryRecord
    from blindmatch.matcher.storage.datadir import DataDir
    from blindmatch.matcher.storage.index_store import IndexStore

    files = DataDir(tmp_path / "data")
    files.make()
    with sqlite3.connect(files.index_db) as old:
        old.execute(
            "CREATE TABLE query_log (time REAL NOT NULL, project TEXT NOT NULL, member TEXT NOT "
            "NULL, kind TEXT NOT NULL, purpose TEXT NOT NULL, records INTEGER NOT NULL, "
            "records_with_hits INTEGER NOT NULL, refused TEXT NOT NULL)"
        )
        old.execute(
            "INSERT INTO query_log VALUES (1.0, 'p', 'north', ?, 'old', 2, 1, '')", (QUERY,)
        )
    store = IndexStore(files.root)
    try:
        store.log_queries([QueryRecord(2.0, "p", "north", QUERY, "new", 3, 0, user="pc-1")])
        logged = store.logged_queries(0.0, "p")
    finally:
        store.close()
    assert [(e.purpose, e.records, e.user) for e in logged] == [("old", 2, ""), ("new", 3, "pc-1")]
