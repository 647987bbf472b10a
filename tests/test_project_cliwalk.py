"""`blindmatch project ...` and `admin query-report` walked as a user would (clifix, wave 55):
`python -m blindmatch` as its own process against a real `serve` on loopback. What the
matcher would refuse in `project create` is refused before it is asked, as a usage error
(exit 2) stating the matcher's own rule; an unknown project or member, and a name taken,
are said with what to do."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import MatcherError, RejectedError
from blindmatch.client.remote.retry import NO_RETRY
from tests.portheld import dead_port
from tests.support import (
    ADMIN_TOKEN,
    GRACE,
    ROOT,
    Matcher,
    Org,
    ask,
    cli_server,
    encode,
    person,
)

RULE = "lower-case letters, digits, '_', '.', '-'; at most 64; starting with a letter or digit"
TWO = "a project needs at least two distinct members"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`blindmatch serve` on loopback, its own process: its address."""
    data = tmp_path_factory.mktemp("walk") / "data"
    argv = ["serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"]
    with cli_server(argv, {**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN}) as said:
        found = re.search(r"listening on (127\.0\.0\.1:\d+)", said[-1])
        assert found, said
        yield found.group(1)


def blindmatch(server: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`blindmatch ARGS --server SERVER` as the operator's shell runs it."""
    return subprocess.run(
        [sys.executable, "-m", "blindmatch", *args, "--server", server],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN},
        timeout=120,
    )


def projects(server: str) -> list[str]:
    listed = blindmatch(server, "project", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return [p["project"] for p in json.loads(listed.stdout)]


def test_an_empty_member_entry_is_refused_by_its_position_not_dropped(served: str) -> None:
    """`--members a,,b` made a project of a and b, the empty name dropped unsaid (and `a,b,`
    likewise); spaces around a name are dropped, as before."""
    for members, said in (
        ("a,,b", "entry 2 of 3 is empty"),
        ("a,b,", "entry 3 of 3 is empty"),
        (",a,,b", "entries 1 and 3 of 4 are empty"),
    ):
        done = blindmatch(served, "project", "create", "gaps", "--members", members)
        assert done.returncode == 2, done.stderr
        assert f"--members {members!r}: {said}" in done.stderr
        assert "Traceback" not in done.stderr
    assert "gaps" not in projects(served)
    made = blindmatch(served, "project", "create", "spaced", "--members", " north , south ",
                      "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert list(json.loads(made.stdout)["tokens"]) == ["north", "south"]


def test_what_the_matcher_refuses_in_create_is_a_usage_error_before_it_is_asked(
    served: str,
) -> None:
    """One member, a repeated one, a member name or project name the matcher refuses: exit
    3 (the matcher's INVALID_ARGUMENT) where a usage error is exit 2. Refused before any call
    (a matcher not there: still exit 2, not 4), with the matcher's own rule."""
    for name, members, said in (
        ("solo", "north", f"--members 'north': one member only: {TWO}"),
        ("twice", "north,north", f"'north' is given more than once (entries 1 and 2): {TWO}"),
        ("cased", "North,south", f"not a member name: 'North' (entry 1); a member name is {RULE}"),
        ("my proj", "north,south", f"project name 'my proj' is not valid ({RULE}"),
        ("my/proj", "north,south", f"project name 'my/proj' is not valid ({RULE}"),
    ):
        with dead_port() as port:
            for server in (served, f"127.0.0.1:{port}"):
                done = blindmatch(server, "project", "create", name, "--members", members)
                assert done.returncode == 2, done.stderr
                assert said in done.stderr
    assert not {"solo", "twice", "cased", "my proj", "my/proj"} & set(projects(served))


def test_project_errors_say_what_to_do(served: str) -> None:
    made = blindmatch(served, "project", "create", "known", "--members", "north,south")
    assert made.returncode == 0, made.stderr
    for args, code, said in (
        (["show", "nowhere", "--operator"], 3,
         "no project named 'nowhere' [NOT_FOUND]; `blindmatch project list` lists the live "
         "projects"),
        (["rotate-token", "nowhere", "--member", "north"], 3, "`blindmatch project list`"),
        (["rotate-token", "known", "--member", "east"], 3,
         "project 'known' has no member 'east' [NOT_FOUND]; its members: north, south"),
        (["revoke-token", "known", "--member", "east"], 3, "its members: north, south"),
        (["revoke-token", "known", "--member", " "], 2, "--member is empty"),
        (["create", "known", "--members", "north,south"], 3,
         "project 'known' already exists [ALREADY_EXISTS]; choose another name"),
    ):  # fmt: skip
        done = blindmatch(served, "project", *args)
        assert done.returncode == code, (args, done.stderr)
        assert said in done.stderr, (args, done.stderr)
        assert "Traceback" not in done.stderr


def test_query_report_says_one_in_the_singular(
    matcher: Matcher,
    project: ProjectTokens,
    secret_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """It said "1 queries, 1 records", "1 queries refused for exceeding limits" and "last 1
    hours"."""
    with matcher.operator() as op:
        op.set_query_limits("trial", member="north", per_day=1)
    grace = person(secret_file, **GRACE)
    with matcher.member(project.tokens["north"]) as north:
        user = north.add_user("trial", "pc-1")
    with matcher.member(user) as pc1:
        ask(pc1, "trial", grace)
        with pytest.raises(RejectedError):
            ask(pc1, "trial", grace)  # over the quota
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    assert main(["admin", "query-report", "--project", "trial", "--hours", "1",
                 "--server", matcher.target]) == 0  # fmt: skip
    shown = capsys.readouterr().out
    assert "Query volume in trial, last 1 hour:" in shown
    assert "user pc-1: 1 query, 1 record (" in shown
    assert "UNUSUAL: 1 query refused for exceeding limits" in shown


def test_query_report_column_counts_what_it_is_named_for_beside_bad_token_refusals(
    matcher: Matcher,
    project: ProjectTokens,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The column was headed "refused" but counts only the queries refused for exceeding
    limits, so a row showed 0 refused beside "UNUSUAL: 1 request refused for a bad token or
    bad input": it is headed for what it counts (over-limit), and the row agrees."""
    with (
        MatcherClient(matcher.target, project.tokens["north"], retry=NO_RETRY) as north,
        pytest.raises(MatcherError, match="INVALID_ARGUMENT"),
    ):
        north.resolve_request_ref("trial", "bmr-nonsense", "0" * 64)  # bad input, refused
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    assert main(["admin", "query-report", "--project", "trial", "--hours", "1",
                 "--server", matcher.target]) == 0  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    header = lines[1].split()
    assert header[-1] == "over-limit" and "refused" not in header, lines
    row = next(i for i, line in enumerate(lines) if line.split()[:1] == ["north"])
    assert dict(zip(header, lines[row].split(), strict=True))["over-limit"] == "0", lines
    assert "UNUSUAL: 1 request refused for a bad token or bad input" in lines[row + 1], lines


def test_an_upload_refused_names_the_earliest_held_upload_not_the_first(
    matcher: Matcher, orgs: dict[str, Org], tmp_path: Path
) -> None:
    """North uploads, south, north again: south's is the earliest held upload. The refusal
    of east's other encodings said "south's upload (the first in this project)"."""
    with matcher.operator() as op:
        tokens = op.create_project("three", ["north", "south", "east"]).tokens
    north = encode(orgs["north"], tmp_path / "north.encoded")
    south = encode(orgs["south"], tmp_path / "south.encoded")
    east: Encoded = encode(orgs["south"], tmp_path / "east.encoded", secret=b"another secret")
    for name, folder in (("north", north), ("south", south), ("north", north)):
        with matcher.member(tokens[name]) as member:
            member.upload("three", folder)
    token = tmp_path / "east.token"
    token.write_text(tokens["east"] + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "blindmatch", "upload", str(tmp_path / "east.encoded"),
         "--project", "three", "--token-file", str(token), "--server", matcher.target],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 3, done.stderr
    assert "than south's upload (the earliest held in this project; north matches it)" in (
        done.stderr
    )
    assert east.record_count  # (refused for its encodings, not for being empty)


def test_a_tokens_dir_that_cannot_be_made_is_refused_before_any_token_is_issued(
    served: str, tmp_path: Path
) -> None:
    """`--tokens-dir` under a file (or /proc): the project was made, or north's token
    rotated, and then the tokens could be written nowhere (exit 2 after the fact)."""
    made = blindmatch(served, "project", "create", "rotated", "--members", "north,south",
                      "--json")  # fmt: skip
    assert made.returncode == 0, made.stderr
    north = json.loads(made.stdout)["tokens"]["north"]
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    nowhere = str(blocker / "tokens")
    for args in (["create", "unwritten", "--members", "north,south"],
                 ["rotate-token", "rotated", "--member", "north"]):  # fmt: skip
        done = blindmatch(served, "project", *args, "--tokens-dir", nowhere)
        assert done.returncode == 2, done.stderr
        assert f"--tokens-dir {nowhere}: cannot make it" in done.stderr
        assert "no token was issued" in done.stderr
    assert "unwritten" not in projects(served)
    (token := tmp_path / "north.token").write_text(north + "\n")
    shown = blindmatch(served, "project", "show", "rotated", "--token-file", str(token))
    assert shown.returncode == 0, shown.stderr  # north's token was not replaced


def test_expires_in_past_ten_years_is_refused_before_the_matcher_is_asked(served: str) -> None:
    done = blindmatch(served, "project", "create", "forever", "--members", "a,b",
                      "--expires-in", "20y")  # fmt: skip
    assert done.returncode == 2, done.stderr  # was 3: the matcher's INVALID_ARGUMENT
    assert "--expires-in 20y: a project's data is kept at most 3653 days (ten years)" in (
        done.stderr
    )


def test_create_does_not_replace_another_projects_token_files(served: str, tmp_path: Path) -> None:
    """Two projects' tokens into one --tokens-dir: the second replaced the first's
    north.token and south.token, those tokens kept nowhere."""
    folder = tmp_path / "tokens"
    first = blindmatch(served, "project", "create", "first", "--members", "north,south",
                       "--tokens-dir", str(folder))  # fmt: skip
    assert first.returncode == 0, first.stderr
    held = {p.name: p.read_text() for p in folder.iterdir()}
    done = blindmatch(served, "project", "create", "second", "--members", "east,north,south",
                      "--tokens-dir", str(folder))  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert f"--tokens-dir {folder}: north.token, south.token are there already" in done.stderr
    assert "second" not in projects(served)
    assert {p.name: p.read_text() for p in folder.iterdir()} == held
