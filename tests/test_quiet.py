"""`-q` says nothing on success where a command's result is stored or written (as `encode -q`
and `upload -q`): `run`, `index add`, `index sync`, `index remove`, `project revoke-token`,
`user revoke`, `audit export --out`; `results -q` still its counts (a count-only partner's are
in no row of its file), `query -q --out` its matches but not that it wrote them. Errors still
go to stderr, with the same exit codes. Against a real matcher on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from tests.support import PERSON_SCHEMA, PURPOSE, Matcher, orgs_encoded

encoded = orgs_encoded  # the fixture: each org encoded with the test secret


def test_run_and_results_q_say_nothing_and_errors_still_do(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    north = ["--project", "trial", "--token", project.tokens["north"], "--server", matcher.target]
    for name, folder in encoded.items():
        token = project.tokens[name]
        upload = ["upload", str(folder.path), "--project", "trial", "--token", token, "-q"]
        assert main([*upload, "--server", matcher.target]) == 0
    capsys.readouterr()
    assert main(["run", *north, "-q"]) == 0
    assert capsys.readouterr() == ("", "")  # was "Run 1 done: 3 of your records are held ..."
    hits = tmp_path / "north-hits.csv"
    results = ["results", *north, "--encoded", str(encoded["north"].path), "--out", str(hits)]
    assert main([*results, "-q"]) == 0
    # `results -q` still says its counts: a count-only partner's are in no row of the file.
    assert "(hits): records shared with partners - south: 3." in capsys.readouterr().out
    assert len(hits.read_text().splitlines()) == 4  # the header and the three shared
    # Without -q, as before.
    assert main(["run", *north]) == 0
    assert "of your records are held by a partner" in capsys.readouterr().out
    # An error: stderr, the same exit code.
    wrong = ["run", "--project", "trial", "--token", "bm_x", "--server", matcher.target, "-q"]
    assert main(wrong) == 3
    said = capsys.readouterr()
    assert said.out == "" and said.err.startswith("Error: the token is not valid")


def test_index_q_says_nothing_and_query_q_only_its_matches(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ref_key = ["--ref-key", str(tmp_path / "south.refkey")]
    south = ["--project", "trial", "--token", project.tokens["south"], *ref_key]
    south += ["--server", matcher.target, "-q"]
    folder = str(encoded["south"].path)
    assert main(["index", "add", folder, *south]) == 0
    said = capsys.readouterr()
    assert said.out == ""  # was "Index updated: 4 added, ..."
    # The one thing said: a file was made that must be kept (stderr, even with -q).
    assert said.err.startswith("Made a new ref key in ")
    assert main(["index", "remove", "S-11", *south]) == 0
    assert capsys.readouterr() == ("", "")
    assert main(["index", "sync", folder, *south]) == 0
    assert capsys.readouterr() == ("", "")  # was "Index synced: 1 added, ..."

    out = tmp_path / "query.csv"
    query = ["query", "--project", "trial", "--token", project.tokens["north"], "-q"]
    query += ["--server", matcher.target, "--schema", str(PERSON_SCHEMA), "--out", str(out)]
    query += ["--secret-file", str(secret_file), "--purpose", PURPOSE]
    query += ["--given-name", "Grace", "--surname", "Hughes", "--dob", "2001-12-12", "--sex", "F"]
    assert main(query) == 0
    said = capsys.readouterr()
    assert "query: held by south" in said.out  # its result
    assert "Wrote " not in said.out  # was "Wrote 1 row(s) to ..."
    assert said.err == ""
    assert "south" in out.read_text()


def test_revocations_and_audit_files_q_say_nothing(
    matcher: Matcher,
    project: ProjectTokens,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    net = ["--server", matcher.target, "-q"]
    north = ["--project", "trial", "--token", project.tokens["north"], *net]
    with matcher.member(project.tokens["north"]) as admin:
        admin.add_user("trial", "pc-1")
    assert main(["user", "revoke", "pc-1", *north]) == 0
    assert capsys.readouterr() == ("", "")  # was "Revoked user pc-1's token in trial: ..."
    out = tmp_path / "audit.jsonl"
    assert main(["audit", "export", *north, "--out", str(out)]) == 0
    assert capsys.readouterr() == ("", "")  # was "Wrote N audit entries (jsonl) to ..."
    assert out.read_text().strip()
    assert main(["project", "revoke-token", "trial", "--member", "south", *net]) == 0
    assert capsys.readouterr() == ("", "")  # was "Revoked south's token in trial. ..."
