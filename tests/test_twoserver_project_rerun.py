"""A second run of a two-server project without every member uploading again
(docs/operations.md "One run an upload"): the matcher reuses what it learned of each pair of
unchanged uploads, and only the pairs of a new or changed upload go through S1's proposal
and the circuit; the hits are those of a fresh project where every member uploaded once
(and of the CLK project), and S1 and S2 never evaluate a pair twice (their budget would
refuse the run). A run at another threshold than the outcomes' is refused, saying why."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.messy import write_exports
from blindmatch.cli.app import main
from blindmatch.client import ProjectTokens
from tests.support import STRONG_SECRET, db_rows
from tests.test_twoserver_project import (
    EXPORTS,
    NAMES,
    SCHEMA,
    World,
    create,
    encoded,
    flow,
    hits,
    world,
)

pytestmark = pytest.mark.server
__all__ = ["encoded", "world"]  # the fixtures this module takes from test_twoserver_project


@pytest.fixture(scope="module")
def changed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """south's export with its last 80 records left out, encoded (`encode --two-server`)."""
    folder = tmp_path_factory.mktemp("changed")
    secret = folder / "linkage.secret"
    secret.write_text(STRONG_SECRET + "\n")
    export = write_exports(folder, seed=11, size=400)[EXPORTS["south"]]
    lines = export.csv.read_text(encoding="utf-8").splitlines(keepends=True)
    shorter = folder / "south-shorter.csv"
    shorter.write_text("".join(lines[:-80]), encoding="utf-8")
    out = folder / "south.encoded"
    assert main(["encode", str(shorter), "--schema", str(SCHEMA), "--secret-file", str(secret),
                 "--mapping", str(export.mapping), "--out", str(out), "--two-server",
                 "--quiet"]) == 0  # fmt: skip
    return out


def upload(world: World, project: ProjectTokens, name: str, path: Path) -> None:
    clk = ["--clk"] if project.mode == "clk" else []  # a two-server folder: said so
    assert world.cli("upload", str(path), "--project", project.project, *clk,
                     token=project.tokens[name]) == 0  # fmt: skip


def run_hits(world: World, project: ProjectTokens, encoded: dict[str, Path]) -> dict[str, list]:
    """north runs; each member's hits."""
    assert world.cli("run", "--project", project.project, token=project.tokens["north"]) == 0
    out = {}
    for name in NAMES:
        path = world.folder / f"{project.project}-{name}-again.csv"
        assert world.cli("results", "--project", project.project, "--encoded",
                         str(encoded[name]), "--out", str(path),
                         token=project.tokens[name]) == 0  # fmt: skip
        out[name] = hits(path)
    return out


def last_run(world: World, project: str) -> dict[str, object]:
    with world.operator() as op:
        runs = [e for e in op.audit(project) if e["action"] == "twoserver.run"]
    detail = runs[-1]["detail"]
    assert isinstance(detail, dict)
    return detail


def test_a_second_run_evaluates_only_the_new_uploads_pairs_and_gives_a_fresh_runs_hits(
    world: World, encoded: dict[str, Path], changed: Path
) -> None:
    clk = {n: hits(p) for n, p in flow(world, create(world, "clks", "clk"), encoded).items()}
    two = create(world, "shares", "two-server")
    flow(world, two, encoded)
    assert last_run(world, "shares")["reused"] == 0
    budget = world.roles["s1"].service.budget
    first = budget.pairs()
    # west uploads again (a new upload, as a member joining would be): north x south's
    # outcome is reused, west's pairs go through the circuit, none of them twice.
    upload(world, two, "west", encoded["west"])
    assert run_hits(world, two, encoded) == clk
    detail = last_run(world, "shares")
    assert detail["reused"] == 1 and isinstance(detail["pairs"], int) and detail["pairs"] > 0
    # Nothing new: every pair's outcome reused, nothing evaluated, the same hits.
    spent = budget.pairs()
    assert spent > first - detail["pairs"]
    assert run_hits(world, two, encoded) == clk
    assert budget.pairs() == spent and last_run(world, "shares")["reused"] == 3
    assert last_run(world, "shares")["pairs"] == 0
    # The matcher keeps one outcome a pair of current uploads (by their names at S1 and S2).
    kept = [r for r in db_rows(world.data_dir, "twoserver_outcomes") if r[0] == "shares"]
    assert sorted((r[3], r[4]) for r in kept) == [("north", "south"), ("north", "west"),
                                                  ("south", "west")]  # fmt: skip
    # south changes its records: its pairs are evaluated again, north x west's reused; the
    # hits are those of a fresh project where the three uploaded these once.
    now = {**encoded, "south": changed}
    upload(world, two, "south", changed)
    got = run_hits(world, two, now)
    assert last_run(world, "shares")["reused"] == 1
    fresh = create(world, "fresh", "two-server")
    want = {n: hits(p) for n, p in flow(world, fresh, now).items()}
    assert got == want and got != clk
    # An erasure drops the member's outcomes with its uploads.
    assert world.cli("erase", "--project", "shares", "--yes", token=two.tokens["west"]) == 0
    kept = [r for r in db_rows(world.data_dir, "twoserver_outcomes") if r[0] == "shares"]
    assert [(r[3], r[4]) for r in kept] == [("north", "south")]


def test_a_run_at_another_threshold_than_the_outcomes_is_refused_saying_why(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    two = create(world, "shares", "two-server")
    flow(world, two, encoded)
    upload(world, two, "west", encoded["west"])
    # The project's threshold changed (an operator's edit: no command changes it today).
    with world.server.store.db.tx() as tx:
        tx.execute("UPDATE projects SET threshold=0.9 WHERE name='shares'")
    capsys.readouterr()
    assert world.cli("run", "--project", "shares", token=two.tokens["north"]) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "run shares-run-2 failed:" in err  # the run's failure (a FailedPrecondition)
    assert "a run at threshold 0.9 (cut-offs [0.9, 0.925, 0.95, 0.975])" in err
    assert "evaluated the same uploads of north and south at threshold 0.8" in err
    assert "cannot be reused at others" in err
    assert "run at threshold 0.8 again, or have north, south upload again" in err
    # Once they upload again, the run goes through.
    for name in ("north", "south"):
        upload(world, two, name, encoded[name])
    assert world.cli("run", "--project", "shares", token=two.tokens["north"]) == 0
    assert last_run(world, "shares")["cutoffs"] == [0.9, 0.925, 0.95, 0.975]
