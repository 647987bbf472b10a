"""What a literal walk of docs/realtime.md on loopback found (2026-12-06, walkwatch): each a
command as the docs give it, against the real in-process matcher (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from tests.support import Matcher
from tests.test_realtime import encoded  # noqa: F401

pytestmark = pytest.mark.server


def test_index_remove_of_an_id_the_index_does_not_hold_names_the_id(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`index remove` takes local ids; one the index does not hold is refused naming that id
    (before: only its opaque reference, which the user never saw), and nothing is removed."""
    server = ["--server", matcher.target, "--quiet"]
    south = ["--project", "trial", "--token", project.tokens["south"], "--ref-key",
             str(tmp_path / "south.refkey")]  # fmt: skip
    assert main(["index", "sync", str(encoded["south"].path), *south, *server]) == 0
    capsys.readouterr()
    assert main(["index", "remove", "S-11", "NOT-THERE", *south, *server]) == 3
    err = capsys.readouterr().err
    assert "not in your index of trial: id(s) 'NOT-THERE'; nothing was removed" in err, err
    assert main(["index", "show", "--project", "trial", "--token", project.tokens["south"],
                 *server]) == 0  # fmt: skip
    assert "holds 4 records" in capsys.readouterr().out


def test_erase_says_it_deleted_the_members_standing_index(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A member that kept only a standing index erases: the reply names the index's records
    (before: `0 upload(s), 0 result row(s) ... and 0 named user(s)`, as if nothing had been
    erased), and the index holds none after."""
    server = ["--server", matcher.target, "--quiet"]
    token = ["--project", "trial", "--token", project.tokens["south"]]
    ref_key = ["--ref-key", str(tmp_path / "south.refkey")]
    assert main(["index", "sync", str(encoded["south"].path), *token, *ref_key, *server]) == 0
    capsys.readouterr()
    assert main(["erase", *token, "--yes", *server]) == 0
    out = capsys.readouterr().out
    assert "your standing index of 4 record(s)" in out, out
    assert main(["index", "show", *token, *server]) == 0
    assert "holds 0 records" in capsys.readouterr().out
