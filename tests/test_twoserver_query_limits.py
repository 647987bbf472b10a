"""S1's and S2's own limit on a two-server project's queries (core/querylimit.py,
docs/privacy-design.md "Queries in a two-server project (2026-12-04)"), and a query searching
several partners at once (realtime/twoquery.py), with real gRPC servers on loopback: S1 (or
S2) refuses the query beyond its `--query-limit` though the matcher's own quota would allow
it, naming the limit, the matcher reports it to the member as a quota refusal, and the count
survives the role's restart on its data dir; three partners searched at once give the answer
the same query gets in a CLK project over the same records."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from benchmarks.exports import Export
from blindmatch.cli.app import main
from blindmatch.client.encoding import sharing
from blindmatch.client.errors import RejectedError
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher import errors
from blindmatch.matcher.core import exhaustive, tickets
from blindmatch.matcher.core.querylimit import (
    Counted,
    Limit,
    QueryCounter,
    QueryLimits,
    parse_limit,
)
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_queries import RoleQueries
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.server import create_server
from blindmatch.protos import blindmatch_pb2 as pb
from tests.portheld import stopped_held
from tests.support import ADMIN_TOKEN
from tests.test_twoserver_project import MEMBER_KEY, SCHEMA, Ahead, World
from tests.test_twoserver_query import held_by, members, person_csv, query  # noqa: F401

pytestmark = pytest.mark.server

LOW = QueryLimits(member=Limit(2, "day"), project=Limit(1000, "day"))
FOUR = ["north", "south", "west", "east"]  # east asks; the other three are its partners

# -- the counter alone ------------------------------------------------------------------------


def test_a_limit_is_records_per_period_and_nothing_else() -> None:
    assert parse_limit("10000/day") == Limit(10_000, "day")
    assert parse_limit(" 5/Minute ") == Limit(5, "minute")
    for bad in ("0/day", "10", "10/fortnight", "-1/day", "ten/day", ""):
        with pytest.raises(ValueError, match="N/PERIOD"):
            parse_limit(bad)


def test_the_role_command_refuses_a_limit_it_cannot_read_and_the_combiners(
    capsys: pytest.CaptureFixture[str],
) -> None:
    common = ["two-server", "role", "--listen", "127.0.0.1:0", "--key-file", "k",
              "--member-key-file", "m"]  # fmt: skip
    assert main([*common, "--role", "s2", "--project-query-limit", "5/fortnight"]) != 0
    assert "--query-limit/--project-query-limit: '5/fortnight'" in capsys.readouterr().err
    assert main([*common, "--role", "combiner", "--s1", "a:1", "--s2", "b:2",
                 "--query-limit", "5/day"]) != 0  # fmt: skip
    assert "--query-limit: S1's and S2's, not the combiner's" in capsys.readouterr().err


def test_the_counter_counts_a_query_once_and_refuses_beyond_the_member_and_project_limits() -> None:
    counter = QueryCounter(QueryLimits(Limit(3, "hour"), Limit(4, "hour")), "S1")
    t = 1_000_000.0
    assert counter.admit("p/north@a1/a1", "p", "north", 2, t) is not None
    assert counter.admit("p/north@a1/a1", "p", "north", 2, t + 1) is None  # its other partners
    with pytest.raises(errors.ResourceExhausted, match=r"north of project 'p'.*3/hour"):
        counter.admit("p/north@b2/b2", "p", "north", 2, t + 2)
    assert counter.admit("p/south@c3/c3", "p", "south", 2, t + 3) is not None
    with pytest.raises(errors.ResourceExhausted, match=r"project 'p' \(all its members\).*4/hour"):
        counter.admit("p/west@d4/d4", "p", "west", 1, t + 4)
    assert counter.admit("q/west@e5/e5", "q", "west", 1, t + 5) is not None  # another project
    # A sliding hour: north's first query no longer counts an hour after it.
    assert counter.admit("p/north@f6/f6", "p", "north", 2, t + 3601) is not None
    assert counter.used("p", "north", t + 3601) == (2, 4)


def test_a_query_larger_than_a_limit_is_told_to_split_not_to_try_again_later() -> None:
    """A query of more records than the role evaluates in a whole period is refused however
    long the member waits: the refusal says so and to split it (before: `try again later`)."""
    counter = QueryCounter(QueryLimits(Limit(3, "hour"), Limit(10, "hour")), "S1")
    with pytest.raises(errors.ResourceExhausted) as no:
        counter.admit("p/north@a1/a1", "p", "north", 4, 1_000_000.0)
    said = str(no.value)
    assert "this query has 4, more than that" in said and "try again" not in said, said
    assert "split it into queries of at most 3 records" in said, said
    assert counter.used("p", "north", 1_000_000.0) == (0, 0)  # nothing counted


def test_a_counter_restored_counts_what_was_counted() -> None:
    counter = QueryCounter(QueryLimits(Limit(2, "day"), Limit(10, "day")))
    counter.restore([Counted("p/north@a1/a1", "p", "north", 2, 100.0)])
    assert counter.counted("p/north@a1/a1")
    with pytest.raises(errors.ResourceExhausted):
        counter.admit("p/north@b2/b2", "p", "north", 1, 200.0)


def test_a_query_is_compared_with_its_own_projects_uploads_only() -> None:
    """So a combiner that makes up a project name for its query still pays the probed
    project's limit."""
    role = RoleQueries("S1", QueryLimits(Limit(5, "day"), Limit(5, "day")))
    logged: list[str] = []

    def audit(actor: str, action: str, member: str = "", **detail: object) -> None:
        logged.append(action)

    with pytest.raises(errors.PermissionDenied, match="its own project's uploads only"):
        role.admit(["made-up/north@a1b2c3d4/a1b2c3d4", "shares/south/0f0f0f0f"], [1, 500], audit)
    role.admit(["shares/north@a1b2c3d4/a1b2c3d4", "shares/south/0f0f0f0f"], [1, 500], audit)
    assert logged == ["twoserver.query"]
    assert role.counter.used("shares", "north", time.time()) == (1, 1)


# -- real servers ---------------------------------------------------------------------------


def make_world(tmp_path: Path, limits: dict[str, QueryLimits]) -> World:
    """S1, S2 (each with a data dir and `limits[role]`, the default without) and a matcher
    that is their combiner."""
    key = "the parties' key"
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY, data_dir=tmp_path / "s2-data",
                     query_limits=limits.get("s2"))  # fmt: skip
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                     data_dir=tmp_path / "s1-data", query_limits=limits.get("s1"))  # fmt: skip
    setup = combiner_setup(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", key, MEMBER_KEY)
    clock = Ahead()
    server = create_server("127.0.0.1:0", tmp_path / "matcher-data", ADMIN_TOKEN, workers=2,
                           two_server=setup, clock=clock)  # fmt: skip
    return World({"s1": s1, "s2": s2}, server, tmp_path / "matcher-data", tmp_path, clock)


@pytest.fixture
def worlds(tmp_path: Path) -> Iterator[Callable[[dict[str, QueryLimits]], World]]:
    made: list[World] = []

    def make(limits: dict[str, QueryLimits]) -> World:
        made.append(make_world(tmp_path, limits))
        return made[-1]

    yield make
    for w in made:
        w.server.stop(grace=None)
        for role in w.roles.values():
            role.stop(grace=None)


def cli_query(world: World, token: str, people: Path, export: Export) -> int:
    return world.cli(
        "query", str(people), "--mapping", str(export.mapping), "--project", "shares",
        "--schema", str(SCHEMA), "--secret-file", str(export.csv.parent / "linkage.secret"),
        "--purpose", "case 24/118", "--allow-band-keys", token=token,
    )  # fmt: skip


def role_audit(world: World, role: str) -> list[tuple[str, dict]]:
    path = world.folder / f"{role}-data" / f"twoserver-{role}.sqlite"
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT action, detail FROM audit ORDER BY rowid").fetchall()
    return [(a, json.loads(d)) for a, d in rows]


@pytest.mark.parametrize("role", ["s1", "s2"])
def test_the_role_refuses_the_query_beyond_its_own_limit_though_the_matcher_allows_it(
    worlds: Callable[[dict[str, QueryLimits]], World],
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    role: str,
) -> None:
    world = worlds({role: LOW})
    party = role.upper()
    south, south_encoded = members["south"]
    with world.operator() as op:
        two = op.create_project("shares", ["north", "south", "west"], mode="two-server")
        # The matcher's own quota would allow a thousand of these.
        op.set_query_limits("shares", per_minute=10**6, per_day=10**7)
    assert world.cli("upload", str(south_encoded), "--project", "shares",
                     token=two.tokens["south"]) == 0  # fmt: skip
    people = person_csv(south, sorted(south.truth)[:1], world.folder / "one.csv")
    for _ in range(2):  # LOW: two records a day for a member
        assert held_by(query(world, "shares", two.tokens["north"], people, south, capsys)) == [
            ["south"]
        ]
    capsys.readouterr()
    assert cli_query(world, two.tokens["north"], people, south) != 0
    err = capsys.readouterr().err
    assert f"query limit: {party} evaluates at most 2 query records a day" in err
    assert "--query-limit 2/day" in err and "north of project 'shares'" in err
    # Reported to the member as a quota refusal, and recorded so by the matcher ...
    with world.operator() as op:
        actions = [e["action"] for e in op.audit("shares")
                   if e["action"] in ("query", "query.refused")]  # fmt: skip
    assert actions == ["query", "query", "query.refused"]
    # ... and by the role, in its own audit log.
    logged = [(a, d) for a, d in role_audit(world, role) if a.startswith("twoserver.query")]
    assert [a for a, _ in logged] == ["twoserver.query"] * 2 + ["twoserver.query.refused"]
    assert logged[1][1]["member_used"] == 2 and logged[2][1]["limits"].startswith("2/day")
    # The other member of the project is not north: its own two a day.
    assert held_by(query(world, "shares", two.tokens["west"], people, south, capsys)) == [["south"]]

    # Restarted on its data dir (same address), the role still counts north's two.
    old = world.roles[role]
    address = f"127.0.0.1:{old.port}"
    with stopped_held(old.port, lambda: old.stop(grace=None)):
        pass  # (its port no other's until the restart: tests/portheld.py)
    extra = {"s2": f"127.0.0.1:{world.roles['s2'].port}"} if role == "s1" else {}
    for attempt in range(50):  # the port may take a moment to be free again
        try:
            world.roles[role] = create_role(
                role, address, "the parties' key", MEMBER_KEY, data_dir=world.folder /
                f"{role}-data", query_limits=LOW, **extra,
            )  # fmt: skip
            break
        except OSError:  # cannot_listen
            if attempt == 49:
                raise
            time.sleep(0.1)
    assert world.roles[role].service.queries.counter.used("shares", "north", time.time())[0] == 2
    capsys.readouterr()
    assert cli_query(world, two.tokens["north"], people, south) != 0
    assert "--query-limit 2/day" in capsys.readouterr().err


def test_records_sent_again_under_a_query_name_already_counted_are_refused(
    worlds: Callable[[dict[str, QueryLimits]], World],
    members: dict[str, tuple[Export, Path]],  # noqa: F811
) -> None:
    world = worlds({})
    s1 = world.roles["s1"]
    name = tickets.query_name("shares", "north", "ab" * 6)
    ticket = tickets.issue(MEMBER_KEY, name, time.time() + 600)
    upload = sharing.read_shared(members["north"][1] / sharing.SHARED_FOLDER)
    with RoleClient("s1", f"127.0.0.1:{s1.port}", ticket) as c:
        assert c.upload(name, upload) == len(upload)
        c.upload(name, upload)  # not counted yet (no proposal): sent again, as a retry would
        s1.service.admit_queries([name], [s1.service.held[name]])
        with pytest.raises(RejectedError, match="counted already"):
            c.upload(name, upload)


def encoded_west(members: dict[str, tuple[Export, Path]], folder: Path) -> Path:  # noqa: F811
    """West's export (fewer records than north's or south's) encoded `--two-server`."""
    west = members["west"][0]
    out = folder / "west.encoded"
    assert main(["encode", str(west.csv), "--schema", str(SCHEMA), "--secret-file",
                 str(west.csv.parent / "linkage.secret"), "--mapping", str(west.mapping),
                 "--out", str(out), "--two-server", "--quiet"]) == 0  # fmt: skip
    return out


def test_three_partners_searched_at_once_answer_as_the_clk_project(
    worlds: Callable[[dict[str, QueryLimits]], World],
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    world = worlds({})
    encoded = {"north": members["north"][1], "south": members["south"][1],
               "west": encoded_west(members, tmp_path)}  # fmt: skip
    with world.operator() as op:
        two = op.create_project("shares", FOUR, mode="two-server")
        clk = op.create_project("clks", FOUR, mode="clk")
    for name, path in encoded.items():
        assert world.cli("upload", str(path), "--project", "shares", token=two.tokens[name]) == 0
        assert world.cli("index", "sync", str(path), "--project", "clks", "--ref-key",
                         str(tmp_path / f"{name}.refkey"), "--clk",
                         token=clk.tokens[name]) == 0  # fmt: skip
    # People of each partner (in its own layout), each maybe held by the others too.
    seen: set[str] = set()
    for name in ("south", "north", "west"):
        export = members[name][0]
        people = person_csv(export, sorted(export.truth)[:3], tmp_path / f"{name}-people.csv")
        got = query(world, "shares", two.tokens["east"], people, export, capsys)
        same = query(world, "clks", clk.tokens["east"], people, export, capsys)
        assert got["partners"] == ["north", "south", "west"] and got["not_searched"] == {}
        assert held_by(got) == held_by(same)
        assert all(name in held for held in held_by(got))  # its own records, at least
        seen |= {p for held in held_by(got) for p in held}
    assert seen == {"north", "south", "west"}

    # S1 compares the query whole against its smallest partner only: the records sent without
    # band keys are proposed to every partner, refused for the others (band_keys_needed), and
    # none is searched (no batch of them reaches S1) until they come again with their keys.
    s1 = world.roles["s1"].service
    sizes = sorted(h.records for n, h in s1.held.items() if n.startswith("shares/"))
    assert sizes[0] < sizes[-1]
    s1.exhaustive = exhaustive.QUERY_STREAM * sizes[0]
    sent: list[tuple[str, bool]] = []  # S1's query uploads: name, band keys withheld
    spent: list[str] = []  # the query names S1 evaluated a batch of
    upload, spend = s1.upload, s1.spend

    def seen_upload(parts: Iterator[pb.SharedPart], vouched: str = "") -> pb.SharedReceipt:
        got = list(parts)
        sent.append((got[0].member, got[0].band_keys_withheld))
        return upload(iter(got), vouched)

    def seen_spend(member_a: str, *args: Any, **kwargs: Any) -> None:
        spent.append(member_a)
        spend(member_a, *args, **kwargs)

    s1.upload, s1.spend = seen_upload, seen_spend  # type: ignore[method-assign]
    export = members["south"][0]
    people = person_csv(export, sorted(export.truth)[:3], tmp_path / "south-people.csv")
    got = query(world, "shares", two.tokens["east"], people, export, capsys)
    assert held_by(got) == held_by(query(world, "clks", clk.tokens["east"], people, export,
                                         capsys))  # fmt: skip
    assert [w for _, w in sent] == [True, False]
    assert sent[0][0] not in spent and sent[1][0] in spent


def test_a_query_s1_blocks_against_its_larger_partner_is_counted_once_and_abandons_nothing(
    worlds: Callable[[dict[str, QueryLimits]], World],
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One partner within S1's bound and one over it: the records sent without band keys are
    proposed to the larger partner first and refused there, so no proposal against the
    smaller one is made only to be abandoned, and S1 counts the query once (when it comes
    again with its keys), in its counter and its audit log."""
    world = worlds({})
    with world.operator() as op:
        two = op.create_project("shares", ["north", "west", "east"], mode="two-server")
    for name, path in (("north", members["north"][1]), ("west", encoded_west(members, tmp_path))):
        assert world.cli("upload", str(path), "--project", "shares", token=two.tokens[name]) == 0
    s1 = world.roles["s1"].service
    sizes = sorted(h.records for n, h in s1.held.items() if n.startswith("shares/"))
    assert sizes[0] < sizes[1]
    s1.exhaustive, s1.small_member = exhaustive.QUERY_STREAM * sizes[0], 0
    export = members["north"][0]
    people = person_csv(export, sorted(export.truth)[:1], tmp_path / "one.csv")
    got = query(world, "shares", two.tokens["east"], people, export, capsys)
    assert got["partners"] == ["north", "west"] and "north" in held_by(got)[0]
    assert s1.queries.counter.used("shares", "east", time.time())[0] == 1
    logged = role_audit(world, "s1")
    assert [a for a, _ in logged if a.startswith("twoserver.query")] == ["twoserver.query"]
    proposed = [d["members"] for a, d in logged if a == "twoserver.run"
                and any(tickets.is_query(m) for m in d["members"])]  # fmt: skip
    refused = [d["members"] for a, d in logged if a == "twoserver.refused"]
    assert len(refused) == 1 and len(proposed) == 2  # once refused, then each partner once
    assert all(refused[0][0] not in m for m in proposed)
