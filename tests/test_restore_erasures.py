"""`blindmatch admin restore` of a matcher's backup replays the erasures made after it
(restorefix, 2026-12-07). An operator walk (opswalk) found that a backup restored by hand
(`cp -a`, the key, `admin check`: OK) served north's upload again, which north had erased
after the backup. Now the restore takes the replaced dir (`--previous`), verifies that its
audit log continues the backup's, and erases again, through the live erasure's code, every
member its log says erased since. Against a real `blindmatch serve` (its own process), the
erasure made with `blindmatch erase`, and real SQLite data dirs."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.knownclks import population, write
from blindmatch.cli import main
from blindmatch.client import MatcherClient
from blindmatch.client.errors import AuthError
from blindmatch.matcher.core import audit
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.crashpoint import ENV as CRASH_AT
from blindmatch.matcher.storage.store import Store
from tests.support import ADMIN_TOKEN, ROOT, Clock, cli_server, index_all, start

DAY = 86400.0


@dataclass(frozen=True)
class Walked:
    """A matcher's data dir backed up, then north's erasure made, the matcher stopped and
    its dir moved aside (`old`), as docs/operations.md says to."""

    backup: Path
    old: Path
    key: Path  # the audit key, kept apart (admin backup --key-out)
    erase_seq: int  # north's `erase` entry in the old dir's log
    south: str  # south's token, revoked after the backup
    desk: str  # south's named user's token, revoked after the backup
    while_served: tuple[int, str]  # a restore naming the served dir as --previous: code, stderr


def blindmatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blindmatch", *args], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN, **(env or {})}, timeout=300,
    )  # fmt: skip


def rows(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def uploads_of(data_dir: Path, member: str) -> list[str]:
    found = rows(data_dir / "blindmatch.sqlite", "SELECT id, member FROM uploads")
    return [u for u, m in found if m == member]


@pytest.fixture(scope="module")
def walked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walked]:
    root = tmp_path_factory.mktemp("restore")
    data, backup, key = root / "data", root / "backup", root / "keys" / "audit.key"
    argv = ["serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"]
    with cli_server(argv, {**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN}) as said:
        found = re.search(r"listening on (127\.0\.0\.1:\d+)", said[-1])
        assert found, said
        target = found.group(1)
        with MatcherClient(target, ADMIN_TOKEN) as op:
            tokens = op.create_project("trial", ["north", "south"]).tokens
        north_ds, south_ds = population(2, 50, 0.3, seed=4)
        for member, ds in (("north", north_ds), ("south", south_ds)):
            with MatcherClient(target, tokens[member]) as client:
                encoded = write(ds, root / f"{member}.encoded")
                client.upload("trial", encoded)
                index_all(client, "trial", encoded)  # its standing index, erased with it
        with MatcherClient(target, tokens["south"]) as south:
            south.set_consent("trial", "mapping")
            desk = south.add_user("trial", "desk")
        assert main(["admin", "backup", "--data-dir", str(data), "--out", str(backup),
                     "--key-out", str(key)]) == 0  # fmt: skip
        token_file = root / "north.token"
        token_file.write_text(tokens["north"] + "\n")
        token_file.chmod(0o600)
        erased = blindmatch("erase", "--project", "trial", "--token-file", str(token_file),
                            "--yes", "--server", target)  # fmt: skip
        assert erased.returncode == 0, erased.stderr
        with MatcherClient(target, tokens["south"]) as south:  # each replayed
            south.set_consent("trial", "count")  # lowered
            south.revoke_user("trial", "desk")
        with MatcherClient(target, ADMIN_TOKEN) as op:
            op.revoke_token("trial", "south")
        served = blindmatch("admin", "restore", "--backup", str(backup), "--data-dir",
                            str(root / "while-served"), "--previous", str(data))  # fmt: skip
    old = root / "data.old"
    data.rename(old)
    (seq,) = rows(old / "blindmatch.sqlite",
                  "SELECT seq FROM audit WHERE action='erase' AND member='north'")  # fmt: skip
    yield Walked(backup, old, key, seq[0], tokens["south"], desk,
                 (served.returncode, served.stderr))  # fmt: skip


def test_the_backup_holds_north_again_and_the_restore_erases_it_again(
    walked: Walked, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert uploads_of(walked.backup, "north")  # what a `cp -a` restore served again
    new = tmp_path / "data"
    argv = ["admin", "restore", "--backup", str(walked.backup), "--data-dir", str(new),
            "--previous", str(walked.old)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert "warning" not in err  # south's revocations and consent made again: below
    said = "erase trial/north (1 upload, 0 result rows, 50 standing-index records deleted)"
    assert f"replayed entry {walked.erase_seq}: {said}" in out
    assert uploads_of(new, "north") == []
    assert uploads_of(new, "south") == uploads_of(walked.backup, "south")
    indexed = "SELECT member, COUNT(*) FROM index_records GROUP BY member"
    assert dict(rows(walked.backup / "index.sqlite", indexed)) == {"north": 50, "south": 50}
    assert dict(rows(new / "index.sqlite", indexed)) == {"south": 50}
    assert len(list((new / "clks").iterdir())) == 1  # south's file; north's is gone
    assert (new / "audit.key").read_bytes() == walked.key.read_bytes()
    log = rows(new / "blindmatch.sqlite", "SELECT actor, action, member, detail FROM audit "
               "ORDER BY seq")  # fmt: skip
    replays = [(a, json.loads(d)) for a, action, m, d in log if action == "erase"]
    assert len(replays) == 1
    actor, detail = replays[0]
    assert actor == "operator"
    assert detail["replay_of"]["seq"] == walked.erase_seq
    (old_hash,) = rows(walked.old / "blindmatch.sqlite",
                       f"SELECT hash FROM audit WHERE seq={walked.erase_seq}")  # fmt: skip
    assert detail["replay_of"]["hash"] == old_hash[0]
    assert log[-1][1] == "restore"
    assert json.loads(log[-1][3])["replayed"][0].startswith(f"entry {walked.erase_seq}: erase")
    assert main(["admin", "check", "--data-dir", str(new)]) == 0, capsys.readouterr().err
    # The restored dir serves: north holds nothing, south its upload.
    server = create_server("127.0.0.1:0", new, ADMIN_TOKEN)
    try:
        with MatcherClient(f"127.0.0.1:{server.port}", ADMIN_TOKEN) as op:
            (shown,) = op.list_projects("trial")
    finally:
        server.stop(grace=None)
    held = {m.name: m.uploaded for m in shown.members}
    assert held == {"north": False, "south": True}


def refused(target: str, token: str) -> str:
    with MatcherClient(target, token) as member, pytest.raises(AuthError) as err:
        member.describe("trial")
    return str(err.value)


def test_tokens_revoked_and_a_consent_lowered_after_the_backup_are_so_again_in_the_restore(
    walked: Walked, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: said on stderr only (`not replayed, do it again`), the restored matcher taking
    south's revoked token and desk's, and south's consent back to `mapping`."""
    before = "SELECT name, consent FROM members WHERE project='trial'"
    assert dict(rows(walked.backup / "blindmatch.sqlite", before))["south"] == 3  # mapping
    old = dict(rows(walked.old / "blindmatch.sqlite", "SELECT action, seq FROM audit"))
    new = tmp_path / "data"
    argv = ["admin", "restore", "--backup", str(walked.backup), "--data-dir", str(new),
            "--previous", str(walked.old)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for action, done in (("consent.set trial/south", "set to count again"),
                         ("user.revoke trial/south user desk", "its token revoked again"),
                         ("token.revoke trial/south", "its token revoked again")):  # fmt: skip
        seq = old[action.split()[0]]
        assert f"  replayed entry {seq}: {action} ({done})" in out, out
    log = rows(new / "blindmatch.sqlite", "SELECT actor, action, detail FROM audit ORDER BY seq")
    replays = {a: json.loads(d)["replay_of"] for _, a, d in log if "replay_of" in json.loads(d)}
    assert {a: r["seq"] for a, r in replays.items()} == {
        "erase": walked.erase_seq, **{a: old[a] for a in ("consent.set", "user.revoke",
                                                          "token.revoke")},
    }  # fmt: skip
    assert replays["token.revoke"]["action"] == "token.revoke"
    assert {actor for actor, _, d in log if "replay_of" in json.loads(d)} == {"operator"}
    restored = json.loads(log[-1][2])
    assert restored["not_replayed"] == restored["to_do"] == []
    server = create_server("127.0.0.1:0", new, ADMIN_TOKEN)
    try:
        target = f"127.0.0.1:{server.port}"
        assert "this token was revoked on" in refused(target, walked.south)
        assert "this token was revoked on" in refused(target, walked.desk)
        with MatcherClient(target, ADMIN_TOKEN) as op:
            (shown,) = op.list_projects("trial")
    finally:
        server.stop(grace=None)
    assert {m.name: m.consent for m in shown.members}["south"] == "count"


def test_a_rotation_after_the_backup_revokes_the_old_token_and_says_to_rotate_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The new token is not in the backup: the old one revoked (its named users kept, as the
    rotation kept them), and the operator told to give the member a new one; not so for a
    member revoked after its rotation."""
    clock, data, backup = Clock(), tmp_path / "data", tmp_path / "backup"
    matcher = start(data, clock)
    try:
        with matcher.operator() as op:
            tokens = op.create_project("trial", ["east", "west"]).tokens
        with matcher.member(tokens["west"]) as west:
            desk = west.add_user("trial", "desk")
        assert main(["admin", "backup", "--data-dir", str(data), "--out", str(backup)]) == 0
        with matcher.operator() as op:
            rotated = op.rotate_token("trial", "west")
            op.rotate_token("trial", "east")
            op.revoke_token("trial", "east")
    finally:
        matcher.server.stop(grace=None)
    store = Store(data)  # a level this blindmatch does not know (a newer one's): said, not set
    try:
        store.audit.append(audit.Event("east", "consent.set", "trial", "east",
                                       detail={"level": "all"}))  # fmt: skip
    finally:
        store.close()
    seqs = rows(data / "blindmatch.sqlite", "SELECT seq, member FROM audit WHERE "
                "action='token.rotate' ORDER BY seq")  # fmt: skip
    new = tmp_path / "new"
    argv = ["admin", "restore", "--backup", str(backup), "--data-dir", str(new),
            "--previous", str(data)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    out, err = capsys.readouterr()
    assert f"replayed entry {seqs[0][0]}: token.rotate trial/west (its token from before the " \
        "rotation revoked)" in out  # fmt: skip
    todo = (
        f"warning: to do now: entry {seqs[0][0]}: token.rotate trial/west: its token from "
        "before the rotation is revoked and the new one is not in the backup: give west a "
        "new one, `blindmatch project rotate-token trial --member west`, before members are "
        "told the matcher is back"
    )
    assert todo in err
    assert "--member east" not in err
    (unknown,) = rows(data / "blindmatch.sqlite", "SELECT MAX(seq) FROM audit")
    assert (
        f"warning: not replayed, do it again: entry {unknown[0]}: consent.set: east's consent "
        "is back to what it was: the entry names no level this blindmatch knows ('all'): east "
        "runs `blindmatch consent set --level LEVEL --project trial` again"
    ) in err
    log = rows(new / "blindmatch.sqlite", "SELECT member, action, detail FROM audit ORDER BY seq")
    west = [json.loads(d) for m, a, d in log if m == "west" and a == "token.revoke"]
    assert west == [{"replay_of": {**west[0]["replay_of"], "action": "token.rotate"}}]
    assert west[0]["replay_of"]["seq"] == seqs[0][0]  # (no users_revoked: desk kept)
    assert json.loads(log[-1][2])["to_do"] == [todo.removeprefix("warning: to do now: ")]
    restored = start(new, clock)
    try:
        for token in (tokens["west"], tokens["east"]):
            assert "this token was revoked on" in refused(restored.target, token)
        assert "not valid" in refused(restored.target, rotated)  # not in the backup
        with restored.member(desk) as user:
            assert user.describe("trial").member == "west"
    finally:
        restored.server.stop(grace=None)


def test_a_previous_dir_of_another_matcher_is_refused(
    walked: Walked, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other = tmp_path / "other"
    server = create_server("127.0.0.1:0", other, ADMIN_TOKEN)
    try:
        with MatcherClient(f"127.0.0.1:{server.port}", ADMIN_TOKEN) as op:
            op.create_project("trial", ["north", "south"])
    finally:
        server.stop(grace=None)
    new = tmp_path / "data"
    argv = ["admin", "restore", "--backup", str(walked.backup), "--data-dir", str(new),
            "--previous", str(other)]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "its audit log does not continue the backup's" in err
    assert "not the dir this backup was taken of" in err
    # Its own key with the right dir: the log does not verify with it.
    argv += ["--audit-key", str(other / "audit.key")]
    argv[argv.index(str(other))] = str(walked.old)
    assert main(argv) == 1
    assert "its audit log does not verify" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]


def test_a_restore_without_previous_is_refused_saying_why_and_what_to_do(
    walked: Walked, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new = tmp_path / "data"
    for extra in ([], ["--no-previous"]):
        argv = ["admin", "restore", "--backup", str(walked.backup), "--data-dir", str(new)]
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert "is a matcher's backup: give --previous DIR, the data dir it replaces" in err
        assert "a member's erased data would be served again" in err
        assert f"If DIR is lost, restore by hand, stopped: `cp -a {walked.backup} {new}`" in err
        assert "nothing was written" in err
    assert list(tmp_path.iterdir()) == []


def test_a_restore_of_a_served_dir_is_refused(walked: Walked) -> None:
    code, err = walked.while_served
    assert code == 2
    assert "--previous" in err and "a server still serves it" in err
    assert not (walked.old.parent / "while-served").exists()


def test_a_restore_killed_midway_leaves_no_data_dir_and_a_second_one_succeeds(
    walked: Walked, tmp_path: Path
) -> None:
    new = tmp_path / "data"
    args = ["admin", "restore", "--backup", str(walked.backup), "--data-dir", str(new),
            "--previous", str(walked.old), "--audit-key", str(walked.key)]  # fmt: skip
    killed = blindmatch(*args, env={CRASH_AT: "restore.replayed"})
    assert killed.returncode == -9, killed.stderr  # SIGKILL, after the replay, before the rename
    assert not new.exists()
    again = blindmatch(*args)
    assert again.returncode == 0, again.stderr
    assert uploads_of(new, "north") == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # (the staging removed)


def test_a_project_expired_after_the_backup_is_expired_again_by_its_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its data held again by the backup, deleted again (the replaced dir's matcher clock two
    days on: the restore's own is not yet past the project's date, the entry says it is)."""
    clock, data, backup = Clock(), tmp_path / "data", tmp_path / "backup"
    matcher = start(data, clock)
    try:
        with matcher.operator() as op:
            tokens = op.create_project(
                "brief", ["north", "south"], expires_unix=int(clock.now + DAY)
            ).tokens
        for member, ds in zip(("north", "south"), population(2, 50, 0.3, seed=5), strict=True):
            with matcher.member(tokens[member]) as client:
                client.upload("brief", write(ds, tmp_path / f"{member}.encoded"))
        assert main(["admin", "backup", "--data-dir", str(data), "--out", str(backup)]) == 0
    finally:
        matcher.server.stop(grace=None)
    clock.advance(2 * DAY)
    start(data, clock).server.stop(grace=None)  # its start's sweep expires the project
    (seq,) = rows(data / "blindmatch.sqlite", "SELECT seq FROM audit WHERE action='project.expire'")
    new = tmp_path / "new"
    argv = ["admin", "restore", "--backup", str(backup), "--data-dir", str(new),
            "--previous", str(data)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    assert f"replayed entry {seq[0]}: project.expire brief" in capsys.readouterr().out
    assert len(uploads_of(backup, "north")) == 1
    assert uploads_of(new, "north") == uploads_of(new, "south") == []
    (detail,) = rows(new / "blindmatch.sqlite",
                     "SELECT detail FROM audit WHERE action='project.expire'")  # fmt: skip
    assert json.loads(detail[0])["replay_of"]["seq"] == seq[0]


def test_query_limits_lowered_after_the_backup_are_so_again_in_the_restore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: the backup's limits back (restorefix3): a per-day limit lowered after it was the
    higher one again, watching turned off was on, a member's own limit set since was gone."""
    clock, data, backup = Clock(), tmp_path / "data", tmp_path / "backup"
    matcher = start(data, clock)
    try:
        with matcher.operator() as op:
            op.create_project("trial", ["east", "west"])
            op.set_query_limits("trial", per_minute=600, per_day=5000, allow_watch=True)
        assert main(["admin", "backup", "--data-dir", str(data), "--out", str(backup)]) == 0
        with matcher.operator() as op:
            op.set_query_limits("trial", per_day=100, allow_watch=False)  # lowered
            op.set_query_limits("trial", member="west", per_day=50)
    finally:
        matcher.server.stop(grace=None)
    seqs = [s for (s,) in rows(data / "blindmatch.sqlite", "SELECT seq FROM audit WHERE "
                               "action='query.limits' ORDER BY seq")]  # fmt: skip
    watching = "SELECT project FROM query_settings WHERE allow_watch"
    assert rows(backup / "index.sqlite", watching) == [("trial",)]
    new = tmp_path / "new"
    argv = ["admin", "restore", "--backup", str(backup), "--data-dir", str(new),
            "--previous", str(data)]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"replayed entry {seqs[1]}: query.limits trial/* (set again: 600 records per " \
        "minute, 100 per day, watching off)" in out  # fmt: skip
    assert f"replayed entry {seqs[2]}: query.limits trial/west (set again: 600 records per " \
        "minute, 50 per day)" in out  # fmt: skip
    log = rows(new / "blindmatch.sqlite", "SELECT actor, member, detail FROM audit WHERE "
               "action='query.limits' ORDER BY seq")  # fmt: skip
    replays = [(a, m, json.loads(d)) for a, m, d in log if "replay_of" in json.loads(d)]
    assert [(a, m, d["replay_of"]["seq"]) for a, m, d in replays] == [
        ("operator", "", seqs[1]), ("operator", "west", seqs[2])
    ]  # fmt: skip
    assert replays[0][2]["per_day"] == 100 and replays[0][2]["allow_watch"] is False
    assert rows(new / "index.sqlite", watching) == []
    restored = start(new, clock)
    try:
        with restored.operator() as op:
            report = op.query_report("trial")
    finally:
        restored.server.stop(grace=None)
    assert {v.member: v.per_day_limit for v in report} == {"east": 100, "west": 50}
