"""A two-server project under a schema's rule over both CLKs (`blindmatch.rule`): the run
applies it on the shares as a CLK project's run applies it on the CLKs (the same hits), and
`admin check` finds the data dir whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.messy import write_exports
from blindmatch.cli.app import main
from blindmatch.matcher.storage.integrity import check_data_dir
from tests import twoserver_world
from tests.support import PERSON_SCHEMA, STRONG_SECRET
from tests.twoserver_world import EXPORTS, World, hits

pytestmark = pytest.mark.server

world = twoserver_world.world  # the fixture
encoded = twoserver_world.encoded  # the fixture


def test_a_schema_rule_is_applied_as_a_clk_project_applies_it_and_the_data_dir_checks_whole(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The default schema has a rule over both CLKs: a two-server upload sends it with the
    # shares to S1 and S2 and records it as a CLK upload does, and the run applies it on the
    # shares (matcher/core/gmwrule.py): the hits are a CLK project's under the same rule.
    secret = tmp_path / "linkage.secret"
    secret.write_text(STRONG_SECRET + "\n")
    exports = write_exports(tmp_path, seed=5, size=120)
    with world.operator() as op:
        project = op.create_project("ruled", ["north", "south"], mode="two-server")
        clks = op.create_project("ruledclk", ["north", "south"], mode="clk")
    folders = {}
    for name in ("north", "south"):
        export, out = exports[EXPORTS[name]], tmp_path / f"{name}.encoded"
        folders[name] = out
        assert main(["encode", str(export.csv), "--schema", str(PERSON_SCHEMA),
                     "--secret-file", str(secret), "--mapping", str(export.mapping),
                     "--out", str(out), "--two-server", "--quiet"]) == 0  # fmt: skip
        assert "blindmatch.rule" not in capsys.readouterr().err
        for p in (project, clks):
            clk = ["--clk"] if p.mode == "clk" else []  # a two-server folder: said so
            assert world.cli("upload", str(out), "--project", p.project, "--quiet", *clk,
                             token=p.tokens[name]) == 0  # fmt: skip
        assert "blindmatch.rule" not in capsys.readouterr().err
    for role in ("s1", "s2"):  # each holds the rule with the shares
        held = world.roles[role].service.held
        assert len(held) == 2 and all(h.rule.active for h in held.values())
    got = {}
    for p in (project, clks):
        assert world.cli("run", "--project", p.project, token=p.tokens["north"]) == 0
        for name in ("north", "south"):
            got[p.project, name] = world.folder / f"{p.project}-{name}-hits.csv"
            assert world.cli("results", "--project", p.project, "--encoded", str(folders[name]),
                             "--out", str(got[p.project, name]),
                             token=p.tokens[name]) == 0  # fmt: skip
    for name in ("north", "south"):
        assert hits(got["ruled", name]) == hits(got["ruledclk", name]), name
    assert len(hits(got["ruled", "north"])) > 10
    store = world.server.store
    for upload in store.current_uploads("ruled").values():
        assert store.score_rule(upload.id).active
        part = store.two_server_part(upload.id)
        assert part is not None and store.fallback_bits(upload.id) == part[1][1]
    with world.operator() as op:
        runs = [e for e in op.audit("ruled") if e["action"] == "twoserver.run"]
    assert len(runs) == 1
    detail = runs[0]["detail"]
    assert isinstance(detail, dict) and detail["rule"] == "applied"
    # The empty files of two-server uploads are whole to `admin check` (hashing every file).
    report = check_data_dir(world.data_dir)
    assert report.problems == [] and report.uploads_checked >= 2
