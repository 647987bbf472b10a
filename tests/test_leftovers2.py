"""Wording and command-line leftovers (leftovers2, 2026-12-07), each against a real matcher
on loopback where the behaviour is the matcher's: `run`'s waiting line in a CLK project,
`admin restore --role`'s help, `project create --tokens-dir`'s folder after a failure,
counts said in the singular for one (`report`, `results`, `erase`, ...), and `evaluate`'s
precision and recall where nothing defines them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.remote.client import MatcherClient
from tests.support import Matcher, Org, encode_all


def test_a_clk_run_slow_to_start_says_its_wait_without_two_server_words(
    matcher: Matcher, project: ProjectTokens, orgs: dict[str, Org], tmp_path: Path
) -> None:
    """The matcher held up starting a CLK project's run (its database busy: another writer
    holds it): after a second `run` said "in a two-server project it first reaches S1 and
    S2 ...", of a project that has none. Now only that it waits for the matcher."""
    for name, encoded in encode_all(orgs, tmp_path).items():
        with matcher.member(project.tokens[name]) as member:
            member.upload("trial", encoded)
    writer = sqlite3.connect(matcher.data_dir / "blindmatch.sqlite", isolation_level=None,
                             check_same_thread=False)  # fmt: skip
    said: list[str] = []

    def waited(line: str) -> None:  # said: the other writer lets the run start
        said.append(line)
        writer.execute("COMMIT")

    try:
        writer.execute("BEGIN IMMEDIATE")
        with MatcherClient(matcher.target, project.tokens["north"], on_wait=waited) as north:
            started = north.start_run("trial")
    finally:
        writer.close()
    assert started.run_id
    assert said == ["run: waiting for the matcher to start it ..."]


def test_admin_restore_role_help_says_plainly_what_stands_in_for_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`admin restore --role`'s help read "(default: the matcher's, or the role whose files
    are there)", and spoke of --data-dir, which restore writes: it is --backup's files that
    tell, where --role is not given."""
    with pytest.raises(SystemExit):
        main(["admin", "restore", "--help"])
    said = " ".join(capsys.readouterr().out.split())
    assert "default: the matcher's" not in said
    assert ("--role {s1,s2,combiner} the two-server role whose backup --backup is. Without "
            "it, the files in --backup say: the matcher's backup where the matcher's database "
            "(blindmatch.sqlite) is there, else the one role whose files are there (two "
            "roles' files: give --role)") in said  # fmt: skip


def test_a_refused_project_create_leaves_no_tokens_folder_it_made(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`project create --tokens-dir NEW/tokens` refused by the matcher (the name is taken)
    left NEW/tokens made and empty. Now the folders it made are removed (only those: a
    folder that was there stays), for `rotate-token` refused too."""
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    root = tmp_path / "out"
    root.mkdir()
    made = root / "new" / "tokens"
    create = ["project", "create", "trial", "--members", "north,south", "--server",
              matcher.target]  # fmt: skip
    assert main([*create, "--tokens-dir", str(made)]) == 3
    assert "already exists" in capsys.readouterr().err
    assert list(root.iterdir()) == []
    there = root / "there"
    there.mkdir()
    assert main([*create, "--tokens-dir", str(there / "tokens")]) == 3
    assert list(root.iterdir()) == [there] and list(there.iterdir()) == []
    rotate = ["project", "rotate-token", "trial", "--member", "west", "--server",
              matcher.target, "--tokens-dir", str(made)]  # fmt: skip
    assert main(rotate) != 0
    assert list(root.iterdir()) == [there]
    # Not refused: the folder made and the tokens written, as before.
    assert main([*create[:2], "other", *create[3:], "--tokens-dir", str(made)]) == 0
    assert sorted(p.name for p in made.iterdir()) == ["north.token", "south.token"]


def test_evaluate_says_precision_and_recall_undefined_where_nothing_defines_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No hit claimed said `precision 1.0000 (0 of 0 reported hits true ...)`, and no true
    hit `recall 1.0000`: now each is said undefined, in the text and, for recall, as an
    empty cell of sweep.csv (whose precision is always of one result or more)."""
    from tests.test_research import TRUTH
    from tests.test_research_inputs import evaluate

    code, _ = evaluate(tmp_path, "record_id,partner\n", "--member", "north")
    out = capsys.readouterr().out
    assert code == 0 and "0 of 0" not in out and "1.0000" not in out, out
    assert ("(north): precision undefined (no hits claimed), recall 0.0000, F1 0.0000 (no "
            "hits reported; 4 true hits)") in out  # fmt: skip
    # A partner that shares no one with north, and none of north's results names.
    truth = TRUTH + "east,E9,e9\n"
    code, _ = evaluate(tmp_path, "record_id,partner\nN1,south\n", truth=truth)
    out = capsys.readouterr().out
    assert code == 0
    assert ("with east: precision undefined (no hits claimed), recall undefined (no true "
            "hits), F1 undefined (no hits reported; 0 true hits)") in out  # fmt: skip
    # Scored results of a member that shares no one: recall undefined at every threshold.
    alone = "member,record_id,entity_id\nnorth,N1,e1\nsouth,S1,e2\n"
    code, out_dir = evaluate(tmp_path, "record_id,partner,partner_row,score\nN1,south,0,0.9\n",
                             truth=alone)  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "recall undefined (no true hits)" in out and "1.0000" not in out, out
    rows = (out_dir / "sweep.csv").read_text().splitlines()
    assert rows == ["threshold,precision,recall,f1,reported,true",
                    "0.900000,0.000000,,0.000000,1,0"]  # fmt: skip


def test_report_and_results_say_one_partner_and_one_row_in_the_singular(
    matcher: Matcher, project: ProjectTokens, orgs: dict[str, Org], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """`report` said "1 partner(s)" (and `results` "N row(s)", `erase` "1 upload(s)"): counts
    are now said with `counted` (matcher/domain.py), one in the singular."""
    encoded = encode_all(orgs, tmp_path)
    for name, folder in encoded.items():
        with matcher.member(project.tokens[name]) as member:
            member.upload("trial", folder)
    north = ["--project", "trial", "--token", project.tokens["north"], "--server", matcher.target]
    assert main(["run", *north, "-q"]) == 0
    page = tmp_path / "north.html"
    assert main(["report", *north, "--encoded", str(encoded["north"].path), "--out",
                 str(page)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "(s)" not in out and ", 1 partner, " in out, out
    hits = tmp_path / "hits.csv"
    assert main(["results", *north, "--encoded", str(encoded["north"].path), "--out",
                 str(hits)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "(s)" not in out and "Wrote 3 rows to" in out, out
    assert main(["erase", *north, "--yes"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Erased from trial: 1 upload, ") and "(s)" not in out, out


def test_a_project_create_whose_tokens_cannot_be_written_leaves_no_folder_and_says_whose(
    matcher: Matcher, tmp_path: Path
) -> None:
    """The project made, then no token file could be written (here: no byte may be written,
    as on a full disk, by the process's file-size limit): the folder made for them was left
    empty, and nothing said whose tokens were in no file. Now it is removed, no temporary
    file is left, and the tokens to get again are named."""
    import os
    import resource
    import signal
    import subprocess
    import sys

    def no_bytes() -> None:  # in the child: a write past 0 bytes fails (EFBIG), no signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))

    root = tmp_path / "out"
    root.mkdir()
    made = root / "new" / "tokens"
    done = subprocess.run(
        [sys.executable, "-m", "blindmatch", "project", "create", "fresh", "--members",
         "north,south", "--tokens-dir", str(made), "--server", matcher.target],
        capture_output=True, text=True, preexec_fn=no_bytes, timeout=120,
        env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": matcher.admin_token,
             "PYTHONDONTWRITEBYTECODE": "1"},
    )  # fmt: skip
    assert done.returncode != 0, done.stdout
    assert "Token files not written for north, south" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert list(root.iterdir()) == []  # the folders it made, removed; nothing half-written
    with matcher.operator() as op:  # (the project was made: its tokens are to rotate)
        assert "fresh" in [p.project for p in op.list_projects()]
