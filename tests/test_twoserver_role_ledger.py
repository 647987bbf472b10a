"""What S1 and S2 keep and log for their operators, with real roles and a real matcher on
loopback (docs/operations.md "Two servers and a combiner", "Backing up S1 and S2"): a watch
counted again against a role's query limit after its first count left the window stays
counted across the role's restart (storage/role_store.py `count_query`); S1 audits, for its
operator alone, the pairs it answered 0 past its per-upload cap or reach quota
(core/rowledger.py), shown by `two-server verify-audit`, while the combiner sees the 0 of an
evaluated pair."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest

from benchmarks.exports import Export
from blindmatch.cli.app import main
from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.encode import read_secret
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.errors import UnavailableError
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.retry import NO_RETRY
from blindmatch.client.remote.twoserver import RoleClient, ticket
from blindmatch.matcher.core import linkbit, twoserver
from blindmatch.matcher.core.querylimit import QueryLimits
from blindmatch.matcher.core.rowledger import REACH_FLOOR
from blindmatch.matcher.core.twocomplete import reach_bits
from blindmatch.matcher.core.tworun import link_bits
from blindmatch.matcher.core.twoserver import PairBatch
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.server import create_server
from tests.portheld import HeldPorts
from tests.support import ADMIN_TOKEN, QUICK_RETRIES
from tests.test_rowledger_restart import NAMES, RECORDS, THRESHOLD, Roles, roles  # noqa: F401
from tests.test_twoserver_project import SCHEMA, World, create, world  # noqa: F401
from tests.test_twoserver_query_limits import MEMBER_KEY, worlds  # noqa: F401
from tests.test_twoserver_watch import Watching, members, rows_of, until  # noqa: F401

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


def test_a_matcher_started_while_s1_is_down_has_s2_forget_what_was_left_and_asks_s1_again(
    worlds: Callable[[dict[str, QueryLimits]], World],  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A matcher killed with queries' records at S1 and S2 in two projects; the next one
    starts while S1 is down: S2 forgets both projects' records all the same (S1 not
    answering neither holds up S2 nor skips a project there), S1's are kept pending, logged,
    and asked again; meanwhile a query ticket of a project pending at S1 is refused naming
    S1, and issued once S1 answers."""
    world = worlds({})  # noqa: F811
    encoded = read_encoded(members["north"][1])
    upload = sharing.shared_upload(rows_of(encoded, [0, 1]), read_secret(
        members["north"][1].parent / "linkage.secret"), sharing.plan_of(load_schema(SCHEMA)),
        encoded.fallback_bits)  # fmt: skip
    tokens = {}
    for project in ("shares", "more"):
        with world.operator() as op:
            tokens[project] = op.create_project(project, ["north", "south"], mode="two-server")
        with MatcherClient(world.target, tokens[project].tokens["north"]) as north:
            t = ticket(north, project, query=True)
        for role in ("s1", "s2"):  # as a killed matcher's open watch left them
            with RoleClient(role, getattr(t, role), t.ticket) as c:
                c.upload(t.name, upload)
    assert len([n for n in world.roles["s2"].service.held if "@" in n]) == 2
    world.server.stop(grace=None)
    s1 = world.roles["s1"]
    s1_address = f"127.0.0.1:{s1.port}"
    down = HeldPorts()  # (its port no other's while it is down: tests/portheld.py)
    down.stop(s1.port, lambda: s1.stop(grace=None))  # down (its records, in memory only, gone)
    caplog.set_level(logging.INFO, "blindmatch.matcher.realtime")
    again = create_server("127.0.0.1:0", world.data_dir, ADMIN_TOKEN, workers=2,
                          two_server=world.server.runs.two_server, clock=world.clock,
                          retry_waits=QUICK_RETRIES)  # fmt: skip
    try:
        left = again.realtime.left
        assert left is not None
        until(lambda: not left.pending["S2"])  # both projects, at S2
        assert not [n for n in world.roles["s2"].service.held if "@" in n]
        assert left.pending["S1"] == {"shares", "more"} and left.forgot["S2"] == 2
        assert "at start-up: S1 has not forgotten" in caplog.text and "more, shares" in caplog.text
        # Not retried: the refusal is the first answer (retrying it only waited ~12 s).
        north = MatcherClient(
            f"127.0.0.1:{again.port}", tokens["shares"].tokens["north"], retry=NO_RETRY
        )
        with (
            north,
            pytest.raises(UnavailableError, match=r"^S1 \(127.0.0.1:\d+\) has not yet forgotten"),
        ):
            ticket(north, "shares", query=True)
        # S1 back, at its address: asked again (a query ticket asks it at once, too).
        down.release(s1.port)
        world.roles["s1"] = start_again(world, "s1", s1_address)
        with MatcherClient(f"127.0.0.1:{again.port}", tokens["shares"].tokens["north"]) as north:
            until(lambda: "shares" not in left.pending["S1"] or can_ask(north, "shares"))
            assert "@" in ticket(north, "shares", query=True).name
        until(lambda: not left.pending["S1"])  # "more" too, on S1's thread
        until(lambda: "S1 forgot the queries'" in caplog.text)  # (logged once it has)
        assert left.attempts["S1"] > 1
    finally:
        again.stop(grace=None)
        down.close()


def start_again(world: World, role: str, address: str) -> RunningRole:  # noqa: F811
    extra = {"s2": f"127.0.0.1:{world.roles['s2'].port}"} if role == "s1" else {}
    for attempt in range(50):  # the port may take a moment to be free again
        try:
            return create_role(role, address, "the parties' key", MEMBER_KEY,
                               data_dir=world.folder / f"{role}-data", **extra)  # fmt: skip
        except OSError:
            if attempt == 49:
                raise
            time.sleep(0.1)
    raise AssertionError("unreachable")


def can_ask(client: MatcherClient, project: str) -> bool:
    """Whether the matcher issues a query ticket of `project` now (S1's channel may take a
    moment to connect again)."""
    try:
        ticket(client, project, query=True)
    except UnavailableError:
        return False
    return True


def test_the_forget_left_benchmark_runs_with_s1_down() -> None:
    """benchmarks/forget_left.py: S2 holds no project's left records after the start (its
    second look, 3 s later by default, is not what this checks: --later 0)."""
    done = subprocess.run(
        [sys.executable, "benchmarks/forget_left.py", "--projects", "2", "--s1", "down",
         "--later", "0"],
        capture_output=True, text=True, timeout=300, check=True,
    )  # fmt: skip
    assert "S1 down: the matcher started in" in done.stdout
    assert "S2 held the records of 0 of 2 projects right after" in done.stdout


def test_s1_logs_an_extras_batch_it_answered_all_0_by_its_cap_as_it_logs_any_other(
    roles: Roles,  # noqa: F811
) -> None:
    """An extra pair evaluated in one run; in the next over the same uploads, that record's
    other partner: S1 answers it 0 unevaluated (`capped`) and still logs the batch's
    `twoserver.extras` entry (one a batch whatever S1 answers, so C cannot tell by it)."""
    s1 = roles.running["s1"].service
    south, west = NAMES.index("south"), NAMES.index("west")
    cutoffs = (THRESHOLD, *twoserver.default_buckets(THRESHOLD))
    servers = RemoteServers(f"127.0.0.1:{roles.running['s1'].port}",
                            f"127.0.0.1:{roles.running['s2'].port}", roles.key, NAMES,
                            [RECORDS] * 3, s1.held["south"].bits)  # fmt: skip
    combiner = twoserver.Combiner(None, THRESHOLD, buckets=list(cutoffs[1:]),
                                  clks=len(s1.held["south"].bits))  # fmt: skip
    try:
        answered, partner = [], -1
        for _ in range(2):  # two later runs, each asking an extra pair of south's record 0
            servers.propose(None, cutoffs)
            proposal = s1.proposals.of("south", "west")
            assert proposal is not None
            proposal._block({(south, west)})  # (S1 blocks a pair of members at its first batch)
            proposed = set(proposal._pairs.get((south, west, 0), np.empty(0, np.uint64)).tolist())
            # (a pair's key: south's row << 32 | west's; row 0 here)
            partner = next(y for y in range(partner + 1, RECORDS) if y not in proposed)
            batch = PairBatch(south, west, 0, np.array([0], np.uint32),
                              np.array([partner], np.uint32))  # fmt: skip
            answered.append(link_bits(servers, combiner, batch, linkbit.Transcript(), {}))
    finally:
        servers.close()
    assert not answered[1].any()  # C reads 0, as for any pair that does not link
    first, second = entries(roles.root / "s1", "s1", "twoserver.extras")[-2:]
    assert (first["pairs"], first["capped"]) == (1, 0)
    assert (second["pairs"], second["capped"]) == (0, 1) and second["run"] != first["run"]
    assert "over_quota" not in second  # extras have no quota
