"""What `project show` counts as a member's upload, and what `run` does with too little to
compare (docs/operations.md "Uploads that are not whole"): a two-server upload cut after S1
took its shares is named incomplete, its member's earlier upload not counted as held (real
S1, S2 and a matcher that is their combiner on loopback); a run over uploads of which fewer
than two hold a record is refused, not reported done (a real matcher)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.knownclks import CLK_BITS, FINGERPRINT
from blindmatch.cli.app import main
from blindmatch.client.encoding.encoded import read_encoded, write_encoded
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.twoserver import ticket
from blindmatch.matcher.domain import TWO_SERVER, Level
from blindmatch.matcher.storage.store import Store
from tests import twoserver_world
from tests.support import ADMIN_TOKEN, Matcher, db_rows
from tests.twoserver_world import NAMES, World, create, held

pytestmark = pytest.mark.server

world = twoserver_world.world  # the fixture
encoded = twoserver_world.encoded  # the fixture


def test_show_names_a_two_server_upload_cut_after_s1_as_incomplete_and_counts_it_not(
    world: World,
    encoded: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    project = create(world, "shares", "two-server")
    for name in NAMES[:2]:
        assert world.cli("upload", str(encoded[name]), "--project", "shares",
                         token=project.tokens[name]) == 0  # fmt: skip
    # south uploads again with S2 down: S1 takes its new shares (in place of its earlier
    # ones), S2 keeps the earlier, the matcher is never told (exit 4).
    world.roles["s2"].server.stop(None).wait()
    assert world.cli("upload", str(encoded["south"]), "--project", "shares",
                     token=project.tokens["south"]) == 4  # fmt: skip
    assert held(world, "shares")["s1"] == ["north", "south"]
    with MatcherClient(world.target, project.tokens["west"]) as west:  # (and sends nothing)
        ticket(west, "shares")
    capsys.readouterr()
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    assert world.cli("project", "show", "shares", "--operator") == 0
    out = capsys.readouterr().out
    north, south = (read_encoded(encoded[n], verify=False).record_count for n in NAMES[:2])
    assert f"  north: {north} records uploaded\n" in out
    assert "  south: upload started, not finished (ticket issued " in out
    # Where the shares are, as S1 answered the matcher's Holds (S2, down, could not be
    # asked: said, and the description goes on; walk2s).
    assert "; its shares are at S1; S2 could not be asked; it uploads again); its earlier " \
        f"upload of {south} records is not counted as held" in out  # fmt: skip
    # west's ticket sent nothing: S1 holds none of it, S2 could not be asked.
    assert "  west: upload started, not finished (ticket issued " in out
    assert "; S1 holds none of it; S2 could not be asked; it uploads again)" in out
    s2 = f"127.0.0.1:{world.roles['s2'].port}"
    assert f"  (asked where the started uploads' shares are: S2 ({s2}) is unreachable" in out
    assert "upload incomplete" not in out and "west: not uploaded" not in out
    assert world.cli("project", "show", "shares", "--json",
                     token=project.tokens["north"]) == 0  # fmt: skip
    members = {m["name"]: m for m in json.loads(capsys.readouterr().out)["members"]}
    assert members["north"]["upload"] == "whole" and members["north"]["record_count"] == north
    assert members["south"]["upload"] == "started" and members["south"]["record_count"] is None
    assert "upload_started" in members["south"] and members["west"]["upload"] == "started"
    # What north was shown of its partners' uploads is recorded (west's too: no upload held).
    disclosed = [json.loads(r[7]) for r in db_rows(world.data_dir, "audit") if r[3:6] == (
        "project.describe", "shares", "north")]  # fmt: skip
    assert disclosed == [{"south": "upload status", "west": "upload status"}]
    assert world.cli("project", "list") == 0
    assert "shares  " in (listed := capsys.readouterr().out) and "  1  " in listed  # 1 whole


def test_show_asks_s1_and_s2_whether_a_started_upload_reached_them(
    world: World,
    encoded: dict[str, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ticket whose upload sent nothing: S1 and S2 answer that they hold none of it, so
    `project show` says so and counts the member's earlier upload, which is whole (it said
    "nothing may have been sent, or its shares may be at S1 or S2 only" before, and counted
    none). A partner's is not asked about: the member sees what it saw before."""
    project = create(world, "shares", "two-server")
    for name in NAMES[:2]:
        assert world.cli("upload", str(encoded[name]), "--project", "shares",
                         token=project.tokens[name]) == 0  # fmt: skip
    for name in ("north", "west"):  # each asks for a ticket and sends nothing
        with MatcherClient(world.target, project.tokens[name]) as member:
            ticket(member, "shares")
    capsys.readouterr()
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    assert world.cli("project", "show", "shares", "--operator") == 0
    out = capsys.readouterr().out
    north = read_encoded(encoded["north"], verify=False).record_count
    assert f"  north: {north} records uploaded (an upload started, ticket issued " in out
    assert "  west: not uploaded (an upload started, ticket issued " in out
    assert "sent nothing: S1 and S2 hold none of it)" in out and "asked where" not in out
    assert world.cli("project", "show", "shares", "--json", token=project.tokens["north"]) == 0
    mine = json.loads(capsys.readouterr().out)["members"][0]
    assert mine["upload"] == "whole" and mine["record_count"] == north
    assert mine["started_at"] == {"s1": "not held", "s2": "not held"}
    # north's earlier upload is whole, as shown: once west uploads, a run uses it.
    assert world.cli("upload", str(encoded["west"]), "--project", "shares",
                     token=project.tokens["west"]) == 0  # fmt: skip
    assert world.cli("run", "--project", "shares", token=project.tokens["north"]) == 0
    assert world.cli("project", "show", "shares", token=project.tokens["south"]) == 0
    seen = capsys.readouterr().out  # south's view of north: not asked, as before
    assert "  north: upload started, not finished (ticket issued " in seen
    assert "nothing may have been sent, or its shares may be at S1 or S2 only" in seen


def test_a_run_where_fewer_than_two_uploads_hold_a_record_is_refused_not_done(
    matcher: Matcher, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with matcher.operator() as op:
        tokens = op.create_project("empty", ["a", "b"]).tokens
    server = ["--project", "empty", "--server", matcher.target]
    for name in ("a", "b"):  # (an ENCODED folder of no record: the upload takes it)
        folder = tmp_path / f"{name}.encoded"
        write_encoded(folder, clks=b"", clk_bits=CLK_BITS, fingerprint=FINGERPRINT, ids=[],
                      report={}, rule=None)  # fmt: skip
        assert main(["upload", str(folder), *server, "--token", tokens[name]]) == 0
    capsys.readouterr()
    assert main(["run", *server, "--token", tokens["a"]]) == 3  # was 0: "Run ... done"
    err = capsys.readouterr().err
    said = "Error: fewer than two members' uploads hold records (a, b: 0 records): a run would"
    assert err.startswith(said) and "done" not in err
    with matcher.member(tokens["a"]) as a:
        assert a.describe("empty").latest_run is None  # no run made


def test_an_erased_members_started_upload_is_forgotten_with_its_uploads(tmp_path: Path) -> None:
    """S1 and S2 forget every tag of an erased member: its started upload goes too, in the
    erasure's transaction (the matcher's own SQLite, storage/ticket_store.py)."""
    store = Store(tmp_path / "data")
    try:
        store.create_project("p", ["a", "b"], Level.HITS, 0.8, mode=TWO_SERVER)
        store.note_started("p", "a", "p/a/00ff")
        store.note_started("p", "b", "p/b/00ff")
        assert set(store.started_uploads("p")) == {"a", "b"}
        store.erase_member("p", "a")
        assert set(store.started_uploads("p")) == {"b"}
    finally:
        store.close()
