"""S1 and S2 of a two-server project restored from `blindmatch admin backup` (docs/operations.md
"Backing up S1 and S2"), with a real matcher as their combiner: the backups are taken while
the roles serve, a run and a query follow, S1's and S2's data dirs are lost and restored from
the backups (`admin restore`, the query counted again from the lost dirs' audit logs). The
restored uploads answer the same query; a second run reuses the matcher's
outcomes and needs nothing of S1 and S2; without them, the pairs of the restored (sealed)
uploads are refused, saying why."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.exports import Export
from blindmatch.cli.app import main
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.role_check import check_role_dir
from tests.support import ADMIN_TOKEN
from tests.test_twoserver_project import Ahead, World
from tests.test_twoserver_query import held_by, members, person_csv, query
from tests.test_twoserver_restart import PROJECT_MEMBER_KEY, _serve

pytestmark = pytest.mark.server
__all__ = ["members"]  # the fixture: north's and south's exports, encoded --two-server


def test_restored_s1_and_s2_answer_queries_and_a_rerun_reuses_the_matchers_outcomes(
    tmp_path: Path,
    members: dict[str, tuple[Export, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = "the parties' key of this test"
    roles = _serve(tmp_path, key, {})
    ports = {r: roles[r].port for r in roles}
    setup = combiner_setup(f"127.0.0.1:{ports['s1']}", f"127.0.0.1:{ports['s2']}", key,
                           PROJECT_MEMBER_KEY)  # fmt: skip
    data_dir = tmp_path / "matcher-data"
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=2, two_server=setup,
                           clock=Ahead())  # fmt: skip
    world = World(roles, server, data_dir, tmp_path, Ahead())
    try:
        with world.operator() as op:
            two = op.create_project("shares", ["north", "south"], mode="two-server")
        for name in ("north", "south"):
            assert world.cli("upload", str(members[name][1]), "--project", "shares",
                             token=two.tokens[name]) == 0  # fmt: skip
        (tmp_path / "keys").mkdir(mode=0o700)
        for role in ("s1", "s2"):  # while they serve
            assert main(["admin", "backup", "--data-dir", str(tmp_path / role), "--out",
                         str(tmp_path / "backups" / role), "--key-out",
                         str(tmp_path / "keys" / role)]) == 0  # fmt: skip
        # After the backups: a run (its pairs spent at S1 and S2) and a query.
        assert world.cli("run", "--project", "shares", token=two.tokens["north"]) == 0
        south = members["south"][0]
        people = person_csv(south, sorted(south.truth)[:2], tmp_path / "planted.csv")
        before = query(world, "shares", two.tokens["north"], people, south, capsys)
        assert held_by(before) == [["south"], ["south"]]
        # S1's and S2's data dirs are lost: restored from the backups, on the same addresses.
        for running in world.roles.values():
            running.stop(grace=None)
        for role in ("s1", "s2"):
            (tmp_path / role).rename(tmp_path / f"{role}.lost")
            assert main(["admin", "restore", "--backup", str(tmp_path / "backups" / role),
                         "--data-dir", str(tmp_path / role), "--audit-key",
                         str(tmp_path / "keys" / role), "--previous",
                         str(tmp_path / f"{role}.lost")]) == 0  # fmt: skip
            # The query made after the backup is counted again (from the replaced log).
            assert "0 restored uploads dropped" in capsys.readouterr().out
            assert check_role_dir(tmp_path / role, role).queries == 1
        world.roles = _serve(tmp_path, key, ports)
        sealed = sorted(world.roles["s1"].service.held)
        assert len(sealed) == 2 and world.roles["s1"].service.budget.sealed(*sealed)
        # The restored uploads answer the same query.
        after = query(world, "shares", two.tokens["north"], people, south, capsys)
        assert held_by(after) == held_by(before)
        # A second run reuses the matcher's outcomes: S1 and S2 evaluate nothing.
        assert world.cli("run", "--project", "shares", token=two.tokens["north"]) == 0
        assert world.roles["s1"].service.budget.pairs() == 0
        # Without them, the run would need the restored uploads' pairs: refused, saying why.
        with world.server.store.db.tx() as tx:
            tx.execute("DELETE FROM twoserver_outcomes")
        capsys.readouterr()
        assert world.cli("run", "--project", "shares", token=two.tokens["north"]) != 0
        err = re.sub(r"\s+", " ", capsys.readouterr().err)
        assert "both uploads were restored from a backup" in err, err
    finally:
        server.stop(grace=None)
        for running in world.roles.values():
            running.stop(grace=None)
