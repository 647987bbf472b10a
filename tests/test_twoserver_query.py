"""Queries in a two-server project (docs/realtime.md "Queries in a two-server project"):
`blindmatch query` against the partners' current two-server uploads at S1 and S2, with a real
matcher that is their combiner (three gRPC servers on loopback). A person a partner holds is
reported as held by it, as the same query in a CLK project over the same records (a standing
index) reports it; a person no partner holds is not; a partner without an upload is named as
not searched; the query's records reach S1 and S2 only, under a name of their own, and are
forgotten there; the matcher stores nothing of them; the query is audited and counted against
the member's quota; `index` stays refused, pointing at `query`, and a watch that sends CLKs
at the two-server watch (tests/test_twoserver_watch.py)."""

from __future__ import annotations

import csv
import json
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.exports import Export
from benchmarks.messy import write_exports
from blindmatch.cli.app import main
from blindmatch.client.encoding import sharing
from blindmatch.client.errors import RejectedError
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core import exhaustive, linkbit, tworun, twoserver
from blindmatch.matcher.realtime import twoquery
from blindmatch.matcher.realtime.engine import NO_INDEX
from blindmatch.matcher.rpc.twoserver_client import RemoteServers
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import MESSY_SECRET, STRONG_SECRET, db_rows
from tests.test_twoserver_project import SCHEMA, World, create, world  # noqa: F401

pytestmark = pytest.mark.server

RPC_MEMBER_KEY = "the members' key"
ORGS = {"north": "north-police", "south": "south-police", "west": "retail-bcrp"}


@pytest.fixture(scope="module")
def members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Export, Path]]:
    """The organisations' exports of 300 people, north and south encoded `--two-server`."""
    folder = tmp_path_factory.mktemp("members")
    (folder / "linkage.secret").write_text(STRONG_SECRET + "\n")
    exports = write_exports(folder, seed=7, size=300)
    out = {}
    for name, org in ORGS.items():
        encoded = folder / f"{name}.encoded"
        if name != "west":  # west never uploads: a partner that cannot be searched
            assert (
                main(
                    [
                        "encode",
                        str(exports[org].csv),
                        "--schema",
                        str(SCHEMA),
                        "--secret-file",
                        str(folder / "linkage.secret"),
                        "--mapping",
                        str(exports[org].mapping),
                        "--out",
                        str(encoded),
                        "--two-server",
                        "--quiet",
                    ]
                )
                == 0
            )
        out[name] = (exports[org], encoded)
    return out


def person_csv(export: Export, record_ids: list[str], out: Path) -> Path:
    """`export`'s header and the rows of `record_ids`: people to query, in its layout."""
    with open(export.csv, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with open(out, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([rows[0], *(r for r in rows[1:] if r[0] in record_ids)])
    return out


def ask(world: World, project: str, token: str, people: Path, export: Export,  # noqa: F811
        *extra: str, keys: bool = True) -> int:  # fmt: skip
    """`blindmatch query` about `people` (rows in `export`'s layout): its exit status. `keys`:
    with --allow-band-keys (the suite's S1 asks every query's: conftest.py)."""
    allow = ["--allow-band-keys"] if keys else []
    return world.cli("query", str(people), "--mapping", str(export.mapping), "--project",
                     project, "--schema", str(SCHEMA), "--secret-file",
                     str(export.csv.parent / "linkage.secret"), "--purpose", "case 24/118",
                     *allow, *extra, token=token)  # fmt: skip


def query(
    world: World,  # noqa: F811
    project: str,
    token: str,
    people: Path,
    export: Export,
    capsys: pytest.CaptureFixture[str],
) -> dict:
    capsys.readouterr()
    code = ask(world, project, token, people, export, "--json")
    out = capsys.readouterr()
    assert code == 0, out.err
    answer: dict = json.loads(out.out)
    return answer


def held_by(answer: dict) -> list[list[str]]:
    return [sorted(m["partner"] for m in r["matches"]) for r in answer["results"]]


def test_a_person_a_partner_holds_is_reported_as_in_a_clk_project_and_nothing_is_kept(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    south = members["south"][0]
    west = members["west"][0]
    # Planted: two of south's own records. Nobody's: a west customer south does not hold.
    planted = sorted(south.truth)[:2]
    held = set(south.truth.values())
    nobody = next(r for r, e in sorted(west.truth.items()) if e not in held)
    people = person_csv(south, planted, world.folder / "planted.csv")
    stranger = person_csv(west, [nobody], world.folder / "stranger.csv")

    clk, two = create(world, "clks", "clk"), create(world, "shares", "two-server")
    for name in ("north", "south"):
        encoded = str(members[name][1])
        assert world.cli("upload", encoded, "--project", "shares", token=two.tokens[name]) == 0
        assert (
            world.cli(
                "index",
                "sync",
                encoded,
                "--project",
                "clks",
                "--ref-key",
                str(world.folder / f"{name}.refkey"),
                "--clk",  # a folder encoded --two-server: its CLKs to this CLK project
                token=clk.tokens[name],
            )
            == 0
        )
    uploads_before = db_rows(world.data_dir, "uploads")
    s1 = world.roles["s1"].service
    names_before = sorted(s1.held)

    got = query(world, "shares", two.tokens["north"], people, south, capsys)
    assert held_by(got) == [["south"], ["south"]]
    assert got["partners"] == ["south"]
    assert list(got["not_searched"]) == ["west"] and "no upload" in got["not_searched"]["west"]
    assert all(r["compared_on"] for r in got["results"])  # the same context as in CLK mode
    same = query(world, "clks", clk.tokens["north"], people, south, capsys)
    assert held_by(same) == held_by(got)
    # ... and west, with no standing index, named as not searched there too (rtwalk)
    assert same["partners"] == ["south"] and same["not_searched"] == {"west": NO_INDEX}

    assert held_by(query(world, "shares", two.tokens["north"], stranger, west, capsys)) == [[]]
    assert held_by(query(world, "clks", clk.tokens["north"], stranger, west, capsys)) == [[]]

    # The matcher stored nothing of the queries (no upload, no CLK file with bytes, no index
    # record of the two-server project); S1 and S2 forgot the query's records.
    assert db_rows(world.data_dir, "uploads") == uploads_before
    shares = [u[0] for u in uploads_before if u[1] == "shares"]
    files = [f for f in (world.data_dir / "clks").rglob("*") if any(u in f.name for u in shares)]
    assert len(files) == 2 and all(f.stat().st_size == 0 for f in files)
    with closing(
        sqlite3.connect(f"file:{world.data_dir / 'index.sqlite'}?mode=ro", uri=True)
    ) as db:
        assert not db.execute("SELECT * FROM index_records WHERE project = 'shares'").fetchall()
    for role in ("s1", "s2"):
        assert sorted(world.roles[role].service.held) == names_before
        assert not [n for n in world.roles[role].service.held if "@" in n]
        assert not [r for r in world.roles[role].service.runs if "@" in "".join(r)]
        assert not world.roles[role].service.proposals  # a query's ends with its records
        # Nor did a query's records reach the role's data dir (it keeps members' uploads
        # there, each with its SHA-256 in the role's audit entry; a query's has none).
        data = world.folder / f"{role}-data"
        with closing(sqlite3.connect(data / f"twoserver-{role}-held.sqlite")) as db:
            assert sorted(r[0] for r in db.execute("SELECT name FROM uploads")) == names_before
        with closing(sqlite3.connect(data / f"twoserver-{role}.sqlite")) as db:
            rows = db.execute("SELECT member, detail FROM audit WHERE action = 'twoserver.upload'")
            digests = {m: json.loads(d)["sha256"] for m, d in rows}
        assert sorted(n for n in digests if "@" not in n) == names_before
        assert all(digests[n] for n in names_before)
        # Two queries, none kept: each sent to S1 without band keys, refused (S1 blocks every
        # query here, tests/conftest.py), then with them under a fresh ticket.
        assert [d for n, d in digests.items() if "@" in n] == [""] * 4
    # Audited as any query: purpose, records, who was disclosed.
    with world.operator() as op:
        audited = list(op.audit("shares"))
    entries = [e for e in audited if e["action"] == "query"]
    assert len(entries) == 2
    assert entries[0]["member"] == "north" and "case 24/118" in json.dumps(entries[0])
    # `query` asked the project's mode alone (DescribeProject settings_only): north was not
    # recorded looking at its partners' upload status (it was, once a query, walk2s).
    assert not [e for e in audited if e["action"] == "project.describe"]


def test_s1_receives_a_querys_band_keys_only_where_it_blocks_the_query(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/privacy-design.md "S1's own view of a stream of single-record queries": under
    S1's shipped cap a partner of 300 records is compared whole, and S1 receives the query's
    shares without a single band key; with S1 blocking every query (a cap of 0) the records
    it received so are refused (`band_keys_needed`), sent again with their keys and answered,
    and the answers are the same."""
    south = members["south"][0]
    people = person_csv(south, sorted(south.truth)[:2], world.folder / "planted.csv")
    two = create(world, "shares", "two-server")
    for name in ("north", "south"):
        encoded = str(members[name][1])
        assert world.cli("upload", encoded, "--project", "shares", token=two.tokens[name]) == 0
    s1 = world.roles["s1"].service
    received: list[tuple[str, int, bool]] = []  # S1's query uploads: band key bytes, withheld
    upload = s1.upload

    def seen(parts: Iterator[pb.SharedPart], vouched: str = "") -> pb.SharedReceipt:
        got = list(parts)
        keys = sum(len(p.band_counts) + len(p.band_keys) + len(p.sealed) for p in got)
        received.append((got[0].member, keys, all(p.band_keys_withheld for p in got)))
        return upload(iter(got), vouched)

    monkeypatch.setattr(s1, "upload", seen)
    monkeypatch.setattr(s1, "exhaustive", exhaustive.SHIPPED_PAIRS)
    unblocked = query(world, "shares", two.tokens["north"], people, south, capsys)
    assert len(received) == 1 and "@" in received[0][0]
    assert received[0][1:] == (0, True)  # not one band key

    monkeypatch.setattr(s1, "exhaustive", 0)
    received.clear()
    blocked = query(world, "shares", two.tokens["north"], people, south, capsys)
    assert len(received) == 2 and received[0][0] != received[1][0]  # a fresh ticket
    assert received[0][1:] == (0, True)  # refused: S1 blocks it
    assert received[1][1] > 0 and not received[1][2]  # then with its band keys
    assert held_by(unblocked) == held_by(blocked) == [["south"], ["south"]]
    assert found(unblocked) == found(blocked)
    assert not [n for n in s1.held if "@" in n]  # both forgotten
    with world.operator() as op:  # the refusal for want of keys is no refused request
        report = {v.member: v for v in op.query_report("shares")}
    assert not [f for f in report["north"].flags if "refused" in f], report["north"].flags


def found(answer: dict) -> list[list[tuple[str, object]]]:
    """Each queried record's matches, partner and score (their references are fresh)."""
    return [sorted((m["partner"], json.dumps({k: v for k, v in m.items() if k != "refs"},
                                             sort_keys=True)) for m in r["matches"])
            for r in answer["results"]]  # fmt: skip


def test_quotas_apply_and_index_is_refused_pointing_at_query_and_a_clk_watch_at_s1_and_s2(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    south, south_encoded = members["south"]
    two = create(world, "shares", "two-server")
    assert (
        world.cli("upload", str(south_encoded), "--project", "shares", token=two.tokens["south"])
        == 0
    )
    people = person_csv(south, sorted(south.truth)[:1], world.folder / "one.csv")
    with world.operator() as op:
        op.set_query_limits("shares", member="north", per_minute=1, per_day=10)
    assert held_by(query(world, "shares", two.tokens["north"], people, south, capsys)) == [
        ["south"]
    ]
    capsys.readouterr()
    assert ask(world, "shares", two.tokens["north"], people, south) != 0
    assert "limit" in capsys.readouterr().err.lower()
    # Refused before its search: S1 and S2 forgot the records it sent them all the same.
    for role in ("s1", "s2"):
        assert not [n for n in world.roles[role].service.held if "@" in n]
    # index: refused, naming what works; a watch sending CLKs too (test_twoserver_watch.py).
    assert (
        world.cli(
            "index",
            "sync",
            str(south_encoded),
            "--project",
            "shares",
            "--ref-key",
            str(world.folder / "south.refkey"),
            token=two.tokens["south"],
        )
        != 0
    )
    err = capsys.readouterr().err
    assert "two-server mode" in err and "`blindmatch query` works" in err
    with (
        MatcherClient(world.target, two.tokens["north"]) as north,
        pytest.raises(RejectedError, match="never takes a CLK; a watch's records go to S1"),
    ):
        for _ in north.watch(
            "shares", b"\0" * 128, clk_bits=1024, fingerprint=b"\1" * 32, purpose="case 24/118"
        ):
            break


def test_a_partner_whose_upload_is_not_whole_at_s1_is_named_not_searched(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    south = members["south"][0]
    two = create(world, "shares", "two-server")
    for name in ("north", "south"):
        assert world.cli("upload", str(members[name][1]), "--project", "shares",
                         token=two.tokens[name]) == 0  # fmt: skip
    # S1 lost north's upload (a restart, say); S2 and the matcher still have it.
    world.roles["s1"].service.forget(pb.ForgetRequest(project="shares", member="north"))
    people = person_csv(south, sorted(south.truth)[:1], world.folder / "one.csv")
    got = query(world, "shares", two.tokens["west"], people, south, capsys)
    assert held_by(got) == [["south"]] and got["partners"] == ["south"]
    assert sorted(got["not_searched"]) == ["north"]
    assert "not whole at S1 and S2" in got["not_searched"]["north"]
    assert "north must upload again" in got["not_searched"]["north"]


def test_a_query_with_s2_down_fails_naming_it(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    south, south_encoded = members["south"]
    two = create(world, "shares", "two-server")
    assert (
        world.cli("upload", str(south_encoded), "--project", "shares", token=two.tokens["south"])
        == 0
    )
    world.roles["s2"].stop(grace=None)
    people = person_csv(south, sorted(south.truth)[:1], world.folder / "one.csv")
    capsys.readouterr()
    assert ask(world, "shares", two.tokens["north"], people, south) != 0
    err = capsys.readouterr().err
    assert "S2" in err and f"127.0.0.1:{world.roles['s2'].port}" in err


def test_s1_holds_a_querys_proposal_beside_a_runs_and_neither_ends_the_other(
    messy_members: tuple[list[npt.NDArray[np.uint8]], int],
) -> None:
    """A query's Propose (its records against one partner) between a run's Propose and the
    run's batches: the run's links are those of the same run without the query, and the query
    finds its records (two of south's own) in south's upload. Before S1 held a proposal per
    pair of members, the query's replaced the run's, and the run's batches were refused."""
    datasets, fallback_bits = messy_members
    plan = sharing.BandPlan(bits=20, bands=30)
    uploads = [sharing.shared_upload(d, MESSY_SECRET, plan, fallback_bits) for d in datasets]
    asked = sharing.shared_upload(datasets[1][:2], MESSY_SECRET, plan, fallback_bits)
    key = secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, RPC_MEMBER_KEY)
    s1 = create_role("s1", "127.0.0.1:0", key, RPC_MEMBER_KEY, s2=f"127.0.0.1:{s2.port}")
    at = {"s1": f"127.0.0.1:{s1.port}", "s2": f"127.0.0.1:{s2.port}"}
    bits = [8 * s.shape[1] for s in asked.s2.shares]
    members = ("north", "south", "west")

    def upload(name: str, up: sharing.SharedUpload) -> None:
        for role in ("s1", "s2"):
            with RoleClient(role, at[role], RPC_MEMBER_KEY) as c:
                c.upload(name, up)

    def run(with_query: bool) -> set[tuple[int, ...]]:
        for name, up in zip(members, uploads, strict=True):
            upload(name, up)  # afresh: each pair is evaluated once an upload
        comb = twoserver.Combiner(None, 0.8, clks=2)
        servers = RemoteServers(at["s1"], at["s2"], key, members, [len(u) for u in uploads], bits)
        described = servers.propose(comb.lacking(), comb.cutoffs, comb.rule)
        if with_query:
            upload("asked", asked)
            query = RemoteServers(at["s1"], at["s2"], key, ["asked", "south"],
                                  [2, len(uploads[1])], bits)  # fmt: skip
            links, pairs = twoquery.query_links(query, twoserver.Combiner(None, 0.8, clks=2))
            assert pairs and sorted(zip(links.rec0.tolist(), links.rec1.tolist(), strict=True)) == [
                (0, 0),
                (1, 1),
            ]
            query.close()
        found = [tworun.proposed_links(servers, comb, i, part, linkbit.Transcript(), {})
                 for i, part in enumerate(described)]  # fmt: skip
        servers.close()
        return {(int(a), int(b), int(x), int(y)) for f in found
                for a, b, x, y in zip(f.dset0, f.dset1, f.rec0, f.rec1, strict=True)}  # fmt: skip

    try:
        alone = run(False)
        assert len(alone) > 150
        assert run(True) == alone
    finally:
        s1.stop(grace=None)
        s2.stop(grace=None)
