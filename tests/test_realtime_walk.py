"""What a literal walk of docs/realtime.md on loopback found (2026-12-06, walkwatch): each a
command as the docs give it, against the real in-process matcher (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import RejectedError
from tests.support import GRACE, PURPOSE, Matcher, index_all, person
from tests.test_realtime import encoded  # noqa: F401

pytestmark = pytest.mark.server


@pytest.fixture
def south(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> list[str]:
    """South's index synced from its export (4 records) with `index sync` (its ref key:
    `ref_key`); the options its commands take (project, token, server)."""
    options = ["--project", "trial", "--token", project.tokens["south"], "--server",
               matcher.target, "--quiet"]  # fmt: skip
    assert main(["index", "sync", str(encoded["south"].path), *options, *ref_key(tmp_path)]) == 0
    capsys.readouterr()
    return options


def ref_key(tmp_path: Path) -> list[str]:
    return ["--ref-key", str(tmp_path / "south.refkey")]


def index_size(south: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """`index show`'s line."""
    assert main(["index", "show", *south]) == 0
    return capsys.readouterr().out


def test_index_remove_of_an_id_the_index_does_not_hold_names_the_id(
    south: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`index remove` takes local ids; one the index does not hold is refused naming that id
    (before: only its opaque reference, which the user never saw), and nothing is removed."""
    assert main(["index", "remove", "S-11", "NOT-THERE", *south, *ref_key(tmp_path)]) == 3
    err = capsys.readouterr().err
    assert "not in your index of trial: id 'NOT-THERE'; nothing was removed" in err, err
    assert "holds 4 records" in index_size(south, capsys)


def test_erase_says_it_deleted_the_members_standing_index(
    south: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A member that kept only a standing index erases: the reply names the index's records
    (before: `0 upload(s), 0 result row(s) ... and 0 named user(s)`, as if nothing had been
    erased), and the index holds none after."""
    assert main(["erase", *south, "--yes"]) == 0
    out = capsys.readouterr().out
    assert "your standing index of 4 records" in out, out
    assert "holds 0 records" in index_size(south, capsys)


def test_a_query_larger_than_the_rate_limit_is_not_told_to_try_again(
    matcher: Matcher, project: ProjectTokens, secret_file: Path
) -> None:
    """A query of more records than the member may query in a minute (or a day) is refused
    whenever it is sent: the refusal says so and to split it (before: `try again in 60 s`,
    which never helps)."""
    clks, bits, fingerprint = person(secret_file, **GRACE)
    for per_minute, many, limit in ((2, 3, "2 records per minute"),
                                    (10, 6, "5 records per 24 hours")):  # fmt: skip
        with matcher.operator() as op:
            op.set_query_limits("trial", per_minute=per_minute)  # (both at once, 10 a
            op.set_query_limits("trial", per_day=5)  # minute over 5 a day, is refused)
        with matcher.member(project.tokens["north"]) as north, pytest.raises(RejectedError) as no:
            north.query("trial", [clks] * many, clk_bits=bits, fingerprint=fingerprint,
                        purpose=PURPOSE)  # fmt: skip
        said = str(no.value)
        assert f"north may query {limit}" in said and "try again" not in said, said
        assert f"this query has {many}, more than that" in said
        assert f"split it into queries of at most {limit.split()[0]} records" in said


def test_a_query_with_another_secret_names_the_queriers_own_index_as_its_own(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],  # noqa: F811
) -> None:
    """South, whose own index is the one the project holds, queries with CLKs of another
    schema or secret: the refusal names `your index`, not `south's index` (as if another
    member's), to south."""
    with matcher.member(project.tokens["south"]) as south:
        index_all(south, "trial", encoded["south"])
        with pytest.raises(RejectedError) as refused:
            south.query("trial", bytes(256), clk_bits=2048, fingerprint=bytes(32),
                        purpose=PURPOSE)  # fmt: skip
    said = str(refused.value)
    assert "different schema or secret than your index" in said and "south's" not in said, said
    assert "with the ones you made it with" in said and "that member" not in said, said
