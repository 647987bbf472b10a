"""What a member's and an operator's commands say of a project in two-server mode, found by
walking docs/cli.md's commands on one (walk2s, 2026-12-06): `project show --json --encoded`
prints one JSON object, `project create --blocking` is refused where S1 proposes the pairs,
and `project show` and `report` name the mode and S1's blocking (real S1, S2 and a matcher
that is their combiner on loopback: tests/twoserver_world.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from blindmatch.cli.app import main
from blindmatch.client.encoding.sharing import SHARED_FOLDER
from blindmatch.client.tools.auditfiles import who_looked
from tests import twoserver_world
from tests.support import ADMIN_TOKEN
from tests.twoserver_world import NAMES, World, create

pytestmark = pytest.mark.server

world = twoserver_world.world  # the fixture
encoded = twoserver_world.encoded  # the fixture


def test_show_json_with_encoded_prints_one_json_object_and_names_s1_and_s2(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    project = create(world, "walk", "two-server")
    north = project.tokens["north"]
    capsys.readouterr()
    assert world.cli("project", "show", "walk", "--json", "--encoded",
                     str(encoded["north"]), token=north) == 0  # fmt: skip
    shown = json.loads(capsys.readouterr().out)  # was: JSON, then a line of text
    assert shown["encoded"]["upload"] == "as is"
    assert "nothing uploaded yet, so yours will set it" in shown["encoded"]["says"]
    assert shown["two_server"] == {"s1": f"127.0.0.1:{world.roles['s1'].port}",
                                   "s2": f"127.0.0.1:{world.roles['s2'].port}"}  # fmt: skip
    # A folder encoded without --two-server: refused (exit 1), said in the same object.
    plain = world.folder / "plain.encoded"
    shutil.copytree(encoded["north"], plain, ignore=shutil.ignore_patterns(SHARED_FOLDER))
    assert world.cli("project", "show", "walk", "--json", "--encoded", str(plain),
                     token=north) == 1  # fmt: skip
    verdict = json.loads(capsys.readouterr().out)["encoded"]
    assert verdict["upload"] == "refused" and "encoded without --two-server" in verdict["says"]


def test_blocking_is_s1s_in_a_two_server_project_refused_at_create_and_said_by_show_and_report(
    world: World,
    encoded: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    # A method S1 would never use: refused, not recorded and shown (was exit 0, "blocking:
    # exhaustive", and S1 blocked the run by its own caps all the same).
    assert world.cli("project", "create", "bx", "--members", "north,south",
                     "--blocking", "exhaustive") == 3  # fmt: skip
    refused = capsys.readouterr().err
    assert "blocking: exhaustive, but a two-server project's pairs are proposed by S1" in refused
    assert "no mode was asked for" in refused and "`project create --mode clk`" in refused
    assert world.cli("project", "create", "bx", "--members", "north,south", "--mode",
                     "two-server", "--blocking", "lsh") == 3  # fmt: skip
    assert "--mode clk" not in capsys.readouterr().err  # asked for: nothing else to say
    assert world.cli("project", "create", "bx", "--members", "north,south", "--mode", "clk",
                     "--blocking", "exhaustive") == 0  # fmt: skip
    assert "blocking: exhaustive, mode: clk;" in capsys.readouterr().out
    assert world.cli("project", "create", "walk", "--members", ",".join(NAMES)) == 0
    assert "blocking: by S1, mode: two-server;" in capsys.readouterr().out
    assert world.cli("project", "show", "walk", "--operator") == 0
    assert "blocking by S1, mode two-server)" in capsys.readouterr().out  # was "blocking auto"


def test_report_names_the_mode_and_s1s_blocking_and_show_the_earliest_upload_held(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    project = create(world, "walk", "two-server")
    twoserver_world.flow(world, project, encoded)
    page = world.folder / "north.html"
    assert world.cli("report", "--project", "walk", "--encoded", str(encoded["north"]),
                     "--out", str(page), token=project.tokens["north"]) == 0  # fmt: skip
    html = page.read_text(encoding="utf-8")
    assert "<td>mode</td><td>two-server (S1 and S2 hold XOR shares" in html  # was no mode
    assert "<td>blocking</td><td>by S1</td>" in html  # was "auto"
    # north uploads again: the fingerprint id is of the earliest upload held, south's now
    # (it said "set by north's upload, the first" before and "set by south's ..." after).
    assert world.cli("upload", str(encoded["north"]), "--project", "walk",
                     token=project.tokens["north"]) == 0  # fmt: skip
    capsys.readouterr()
    assert world.cli("project", "show", "walk", token=project.tokens["north"]) == 0
    assert "(of south's upload, the earliest held)" in capsys.readouterr().out


def test_run_says_a_two_server_runs_stages_in_the_order_it_goes_through_them(
    world: World,
    encoded: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fresh two-server run was written as stage "compare" as it started, then "block"
    once S1 was asked to propose: `run` said `run: comparing`, then `run: block`. Its stages
    are written, and its lines said, in the order the run goes through them."""
    from blindmatch.matcher.storage.run_store import RunStore

    written: list[object] = []
    update = RunStore.update_run

    def watched(self: RunStore, run_id: str, **fields: object) -> bool:
        if "stage" in fields and fields["stage"] not in written[-1:]:
            written.append(fields["stage"])
        return update(self, run_id, **fields)

    monkeypatch.setattr(RunStore, "update_run", watched)
    with world.operator() as op:
        project = op.create_project("stages", ["north", "south"], mode="two-server")
    for name in ("north", "south"):
        assert world.cli("upload", str(encoded[name]), "--project", "stages",
                         token=project.tokens[name]) == 0  # fmt: skip
    capsys.readouterr()
    assert world.cli("run", "--project", "stages", token=project.tokens["north"]) == 0
    assert written[:2] == ["block", "compare"], written  # was ["compare", "block", ...]
    err = capsys.readouterr().err.splitlines()
    lines = [line[len("run: ") :] for line in err if line.startswith("run: ")]
    # A member's watch sees none of these stages since srvleft (their times told it about
    # what others share, tests/test_srvleft.py): one, "running", then "done".
    assert lines and all(line.startswith(("running", "done")) for line in lines), err


def test_audit_report_says_a_query_searched_partners_records_not_indexes() -> None:
    """A two-server query searches partners' latest uploads at S1 and S2: the project has no
    index, so `audit report` does not say it queried one (it did, in both modes)."""
    entry = {"action": "query", "actor": "north", "member": "north", "time": 1796547959.0,
             "purpose": "case 24/118", "disclosed": {"south": "hits"},
             "detail": {"records": 5}}  # fmt: skip
    (row,) = who_looked([entry])
    assert row[3] == "queried partners' records"  # was "queried partners' indexes"


def test_evaluate_of_hits_says_scores_come_from_a_clk_project_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`evaluate` of a two-server project's hits (no scores) pointed to `--disclose scores`,
    which a two-server project refuses: it says a CLK project's, and `--mode clk`."""
    (tmp_path / "hits.csv").write_text("record_id,partner\nN1,south\n")
    (tmp_path / "truth.csv").write_text(
        "member,record_id,entity_id\nnorth,N1,1\nnorth,N2,2\nsouth,S1,1\n"
    )
    assert main(["evaluate", "--results", str(tmp_path / "hits.csv"),
                 "--truth", str(tmp_path / "truth.csv")]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "no scores in these results: a CLK project created with `--disclose scores`" in said
    assert "`--mode clk` on a matcher with S1 and S2" in said
