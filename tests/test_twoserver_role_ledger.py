"""What S1 and S2 keep and log for their operators, with real roles and a real matcher on
loopback (docs/operations.md "Two servers and a combiner", "Backing up S1 and S2"): a watch
counted again against a role's query limit after its first count left the window stays
counted across the role's restart (storage/role_store.py `count_query`); S1 audits, for its
operator alone, the pairs it answered 0 past its per-upload cap or reach quota
(core/rowledger.py), shown by `two-server verify-audit`, while the combiner sees the 0 of an
evaluated pair."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from benchmarks.exports import Export
from blindmatch.cli.app import main
from blindmatch.matcher.core import linkbit, twoserver
from blindmatch.matcher.core.rowledger import REACH_FLOOR
from blindmatch.matcher.core.twocomplete import reach_bits
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_service import create_role
from tests.test_rowledger_restart import NAMES, RECORDS, THRESHOLD, Roles, roles  # noqa: F401
from tests.test_twoserver_project import MEMBER_KEY, World, create, world  # noqa: F401
from tests.test_twoserver_watch import Watching, members, until  # noqa: F401

pytestmark = pytest.mark.server

DAY = 86400.0


def restart(world: World, role: str) -> None:  # noqa: F811
    """Stop `role` and start it again on its data dir (another port: nothing calls it)."""
    world.roles[role].stop(grace=None)
    extra = {"s2": f"127.0.0.1:{world.roles['s2'].port}"} if role == "s1" else {}
    world.roles[role] = create_role(role, "127.0.0.1:0", "a key", MEMBER_KEY,
                                    data_dir=world.folder / f"{role}-data", **extra)  # fmt: skip


def test_a_watch_counted_again_after_the_window_stays_counted_across_a_restart(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
) -> None:
    """S1 counts a long-open watch's records again at its first comparison after their count
    left the window (core/querylimit.py); that count, not the first, is the one on disk."""
    south_folder = members["south"][1]
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    s1 = world.roles["s1"].service
    assert s1.queries is not None
    realtime = world.server.realtime
    watch = Watching(world, two.tokens["north"], south_folder, [0, 1])
    try:
        s1.queries.clock = lambda: time.time() - 1.5 * DAY  # the first count, a day and a half ago
        for n in (1, 2):  # south uploads; the second time, the first count has left the day
            compared = realtime.two_watches.compared
            assert world.cli("upload", str(south_folder), "--project", "shares",
                             token=two.tokens["south"]) == 0  # fmt: skip
            until(lambda: realtime.two_watches.compared == compared + 1)  # noqa: B023
            until(lambda: len(watch.events) == 2 * n)  # noqa: B023
            s1.queries.clock = time.time
        assert watch.error is None
        name = next(n for n in s1.held if "@" in n)
    finally:
        watch.close()
    assert s1.queries.counter.used("shares", "north", time.time()) == (2, 2)
    restart(world, "s1")
    queries = world.roles["s1"].service.queries
    assert queries is not None and queries.counter.counted(name)
    assert queries.counter.used("shares", "north", time.time()) == (2, 2)


def entries(data_dir: Path, role: str, action: str) -> list[dict[str, object]]:
    with closing(sqlite3.connect(data_dir / f"twoserver-{role}.sqlite")) as db:
        rows = db.execute("SELECT detail FROM audit WHERE action = ? ORDER BY seq", (action,))
        return [json.loads(d) for (d,) in rows]


def test_s1_audits_the_reach_pairs_it_answered_0_past_its_cap_and_quota_for_its_operator(
    roles: Roles,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A combiner asks, in a later run over the same uploads, a reach pair of a record paired
    otherwise in the first run (the per-upload cap) and more fresh pairs than the reach
    quota leaves room for: S1 answers those 0, unevaluated, as C sees any pair that does not
    reach, and its `twoserver.reach` entry for the batch says how many and by which limit."""
    s1 = roles.running["s1"].service
    south, west = NAMES.index("south"), NAMES.index("west")
    first = dict(s1.proposals.rows._rows[("south", "west", "reach")][0])  # south row -> west's
    assert 0 < len(first) < REACH_FLOOR
    paired_b, (paired_c, _) = next(iter(first.items()))
    room = REACH_FLOOR - len(first)  # the quota of two uploads of 153 records: the floor
    taken_c = {c for c, _ in first.values()}
    fresh_b = [r for r in range(RECORDS) if r not in first][: room + 2]
    fresh_c = [r for r in range(RECORDS) if r not in taken_c and r != paired_c + 1][: room + 2]
    asked = [(south, paired_b, west, paired_c + 1)]  # the record's other partner: capped
    asked += [(south, b, west, c) for b, c in zip(fresh_b, fresh_c, strict=True)]
    cutoffs = (THRESHOLD, *twoserver.default_buckets(THRESHOLD))
    servers = RemoteServers(f"127.0.0.1:{roles.running['s1'].port}",
                            f"127.0.0.1:{roles.running['s2'].port}", roles.key, NAMES,
                            [RECORDS] * 3, s1.held["south"].bits)  # fmt: skip
    try:
        servers.propose(None, cutoffs)  # a later run over the same uploads
        combiner = twoserver.Combiner(None, THRESHOLD, buckets=list(cutoffs[1:]),
                                      clks=len(s1.held["south"].bits))  # fmt: skip
        bits = reach_bits(servers, combiner, asked, None, linkbit.Transcript(), {})
    finally:
        servers.close()
    # C's view: a 0 for each capped pair, as for any pair that does not reach.
    assert not bits[0] and not bits[-2:].any()
    entry = entries(roles.root / "s1", "s1", "twoserver.reach")[-1]
    assert entry["members"] == ["south", "west"] and entry["pairs"] == room
    assert (entry["capped"], entry["over_quota"]) == (1, 2)
    assert (entry["quota"], entry["quota_used"]) == (REACH_FLOOR, REACH_FLOOR)
    assert entry["run"] != next(iter(first.values()))[1]  # the later run
    # S2 logs nothing of it (its entries name no cap).
    assert all("capped" not in e for e in entries(roles.root / "s2", "s2", "twoserver.run"))
    # The operator's check of S1's log shows it.
    capsys.readouterr()
    assert main(["two-server", "verify-audit", "--data-dir", str(roles.root / "s1"),
                 "--role", "s1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "S1 answered 0, unevaluated, 3 pairs in 1 batches: 1 past its per-upload cap" in out
    assert f"south x west, reach: 1 batches, 1 capped, 2 over the quota of {REACH_FLOOR}" in out


def test_verify_audit_says_when_s1_capped_nothing(roles: Roles, capsys: pytest.CaptureFixture[str]  # noqa: F811
                                                  ) -> None:  # fmt: skip
    capsys.readouterr()
    assert main(["two-server", "verify-audit", "--data-dir", str(roles.root / "s1"),
                 "--role", "s1"]) == 0  # fmt: skip
    assert "S1 answered no pair 0 past its per-upload cap" in capsys.readouterr().out
    assert main(["two-server", "verify-audit", "--data-dir", str(roles.root / "s2"),
                 "--role", "s2"]) == 0  # fmt: skip
    assert "answered" not in capsys.readouterr().out


def test_s1_restored_from_a_backup_counts_the_ledger_entries_it_restored(
    roles: Roles,  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The backup of S1 taken after a run holds its ledger (the run's reach pairs): `admin
    restore`'s `twoserver.restore` entry and the restored S1's `twoserver.restored` at its
    start count them, by kind, as the restarted S1 holds them."""
    before = {k: dict(v[0]) for k, v in roles.ledger._rows.items() if v[0]}
    kept = {kind: sum(len(v) for k, v in before.items() if k[2] == kind)
            for kind in ("extra", "reach")}  # fmt: skip
    assert kept["reach"] > 0
    backup, key = tmp_path / "s1-backup", tmp_path / "s1.key"
    assert main(["admin", "backup", "--data-dir", str(roles.root / "s1"), "--out", str(backup),
                 "--key-out", str(key)]) == 0  # fmt: skip
    roles.stop()
    live = roles.root / "s1"
    live.rename(roles.root / "s1.lost")
    capsys.readouterr()
    lost = roles.root / "s1.lost"
    assert main(["admin", "restore", "--backup", str(backup), "--data-dir", str(live),
                 "--audit-key", str(key), "--previous", str(lost)]) == 0  # fmt: skip
    assert f"S1's ledger: {sum(kept.values())} entries" in capsys.readouterr().out
    assert entries(live, "s1", "twoserver.restore")[-1]["ledger"] == kept
    roles.start()
    assert entries(live, "s1", "twoserver.restored")[-1]["ledger"] == kept
    assert {k: dict(v[0]) for k, v in roles.ledger._rows.items() if v[0]} == before
    # S2 keeps no ledger: its entries name none.
    assert "ledger" not in entries(roles.root / "s2", "s2", "twoserver.restored")[-1]
