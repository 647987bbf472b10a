"""A project in two-server mode through the members' own commands (docs/operations.md "A
project in two-server mode"): a real matcher started with S1 and S2 (three gRPC servers on
loopback ports), members from the realistic fixture (benchmarks/messy.py) who `encode
--two-server`, `upload`, `run` and `results` exactly as in a CLK project. Their hits.csv are
the same project's CLK run's (without `blindmatch.rule`, and under the default schema's rule,
which a two-server run applies on the shares); the matcher never holds a CLK, a share or a
popcount, only how many records; a CLK upload, a run with a part missing and a run with S1
down are refused, naming what to do."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks.messy import write_exports
from blindmatch.cli.app import main
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.encoding.sharing import SHARED_FOLDER, read_shared
from blindmatch.client.errors import RejectedError, UnavailableError
from blindmatch.client.progress import size_text as size
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.model import ProjectTokens
from blindmatch.client.remote.retry import RetryPolicy
from blindmatch.client.remote.twoserver import RoleClient, shares_sha256, ticket
from blindmatch.client.remote.twoserver_parts import part_bytes, upload_parts
from blindmatch.matcher.core import tickets
from blindmatch.matcher.rpc import twoserver_project
from tests import twoserver_world
from tests.support import STRONG_SECRET, db_rows
from tests.twoserver_world import (  # noqa: F401  (re-exported: the two-server tests import them here)
    EXPORTS,
    MEMBER_KEY,
    NAMES,
    SCHEMA,
    Ahead,
    World,
    create,
    flow,
    held,
    hits,
)

pytestmark = pytest.mark.server

world = twoserver_world.world  # the fixture
encoded = twoserver_world.encoded  # the fixture


def test_a_two_server_project_gives_the_clk_projects_hits_and_the_matcher_holds_no_clk(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    clk = flow(world, create(world, "clks", "clk"), encoded)
    two = create(world, "shares", "two-server")
    assert two.mode == "two-server"
    got = flow(world, two, encoded)
    out = capsys.readouterr().out
    assert "in two-server mode: shares to S1 (127.0.0.1:" in out
    total = 0
    for name in NAMES:
        assert hits(got[name])[-1] == ["record_id", "partner"]  # the header, sorted last
        assert hits(got[name]) == hits(clk[name]), name
        total += len(hits(got[name])) - 1
    assert total > 100  # the exports share many of their people
    # A request reference for one of north's hits resolves, at the partner, to the partner's
    # own record that its hits.csv pairs with north (the rows are the two-server upload's).
    record_id, partner = next(r for r in hits(got["north"]) if r[0] != "record_id")
    capsys.readouterr()
    assert world.cli("request", "--project", "shares", "--encoded", str(encoded["north"]),
                     "--record-id", record_id, "--partner", partner, "--json",
                     token=two.tokens["north"]) == 0  # fmt: skip
    reference = json.loads(capsys.readouterr().out)["references"][partner]
    # From another member's folder: refused by the matcher, nothing recorded (docs/requests.md).
    assert world.cli("resolve", reference, "--project", "shares", "--encoded",
                     str(encoded["north"]), token=two.tokens[partner]) == 3  # fmt: skip
    assert "not to this encoded folder" in capsys.readouterr().err
    with MatcherClient(world.target, two.tokens["north"]) as north:
        assert [e for e in north.audit("shares") if e["action"] == "request.resolve"] == []
    assert world.cli("resolve", reference, "--project", "shares", "--encoded",
                     str(encoded[partner]), "--json", token=two.tokens[partner]) == 0  # fmt: skip
    resolved = json.loads(capsys.readouterr().out)
    ids = resolved[0]["record_ids"] if isinstance(resolved, list) else resolved["record_ids"]
    assert ids and all([i, "north"] in hits(got[partner]) for i in ids)
    # What the matcher holds of the two-server project: how many records (no CLK, share or
    # popcount: an empty file), the digest of the member's second shares as the upload's
    # name, and the name of its shares at S1 and S2, who hold them (and the popcounts'
    # shares) under it.
    uploads = {r[2]: r for r in db_rows(world.data_dir, "uploads") if r[1] == "shares"}
    parts = {r[0]: r for r in db_rows(world.data_dir, "upload_twoserver")}
    for name in NAMES:
        upload_id, _, _, records, clk_bits, _, sha256 = uploads[name][:7]
        shared = read_shared(encoded[name] / SHARED_FOLDER)
        assert (clk_bits, records) == (0, len(shared))
        assert world.server.store.files.clk_file(upload_id).stat().st_size == 0
        assert sha256 == shares_sha256(shared.s2.shares)
        held_as = parts[upload_id][1]
        assert held_as.startswith(f"shares/{name}/")
        for role in ("s1", "s2"):
            held = world.roles[role].service.held[held_as]
            assert held.records == records and len(held.popshares) == 2
    # The audit log records the run as a two-server one, naming S1 and S2.
    with world.operator() as op:
        runs = [e for e in op.audit("shares") if e["action"] == "twoserver.run"]
    assert len(runs) == 1
    detail = runs[0]["detail"]
    assert isinstance(detail, dict)
    assert detail["s1"] == f"127.0.0.1:{world.roles['s1'].port}"
    assert detail["links"] > 0 and detail["members"] == sorted(NAMES)
    assert detail["rule"] == "none" and detail["cutoffs"][0] == 0.8
    # A member sees that the run was a two-server one, and where, not its pairs or links
    # (which say how much other members overlap).
    with MatcherClient(world.target, two.tokens["south"]) as south:
        seen = [e for e in south.audit("shares") if e["action"] == "twoserver.run"]
    assert len(seen) == 1
    assert seen[0]["detail"] == {k: detail[k] for k in ("run_id", "s1", "s2", "members")}


def test_a_clk_upload_to_a_two_server_project_is_refused_and_nothing_is_stored(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    project = create(world, "shares", "two-server")
    enc = read_encoded(encoded["north"])
    with (
        MatcherClient(world.target, project.tokens["north"]) as member,
        pytest.raises(RejectedError) as refused,
    ):
        member.upload("shares", enc)
    message = str(refused.value)
    assert "project 'shares' runs in two-server mode" in message
    assert "--two-server" in message and "[FAILED_PRECONDITION]" in message
    assert not [r for r in db_rows(world.data_dir, "uploads") if r[1] == "shares"]
    # A folder encoded without --two-server: `upload` asks the project's settings first
    # (not audited) and sends nothing, saying to encode with --two-server. Before, it began
    # streaming the CLKs, which the matcher refused at the header (issue 18).
    plain = without_shares(encoded["north"], world.folder / "plain.encoded")
    capsys.readouterr()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(MatcherClient, "upload", lambda *a, **k: pytest.fail("CLKs sent"))
        assert world.cli("upload", str(plain), "--project", "shares",
                         token=project.tokens["north"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "project 'shares' runs in two-server mode" in err and "Nothing was sent" in err
    assert "Encode with `blindmatch encode ... --two-server`" in err
    assert not world.roles["s1"].service.held
    assert not [r for r in db_rows(world.data_dir, "uploads") if r[1] == "shares"]
    assert not [r for r in db_rows(world.data_dir, "audit") if r[3] == "project.describe"]
    # `project show --encoded`, the check before an upload, says so too (before: "it may be
    # uploaded", exit 0), and takes the folder encoded --two-server.
    show = ("project", "show", "shares", "--encoded")
    assert world.cli(*show, str(plain), token=project.tokens["north"]) == 1
    assert "encoded without --two-server: `upload` refuses it" in capsys.readouterr().out
    assert world.cli(*show, str(encoded["north"]), token=project.tokens["north"]) == 0
    assert "nothing uploaded yet, so yours will set it" in capsys.readouterr().out


def test_a_two_server_folder_goes_to_a_clk_project_only_with_clk(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A folder encoded --two-server was made for a matcher that never holds CLKs: before,
    `upload` sent its CLKs to a CLK project without a word (issue 18)."""
    project = create(world, "clks", "clk")
    token = project.tokens["north"]
    capsys.readouterr()
    # The check before an upload says what `upload` will (before: "nothing uploaded yet").
    show = ("project", "show", "clks", "--encoded", str(encoded["north"]))
    assert world.cli(*show, token=token) == 0
    assert "encoded --two-server and clks is a CLK project: `upload` sends it only with --clk" in (
        capsys.readouterr().out
    )
    assert world.cli("upload", str(encoded["north"]), "--project", "clks", token=token) == 2
    err = capsys.readouterr().err
    assert f"{encoded['north']} was encoded --two-server, but clks is a CLK project" in err
    assert "Nothing was sent" in err and "graph matching" in err
    assert f"`blindmatch upload {encoded['north']} --project clks --clk`" in err
    assert not [r for r in db_rows(world.data_dir, "uploads") if r[1] == "clks"]
    assert held(world, "clks") == {"s1": [], "s2": []}
    assert world.cli("upload", str(encoded["north"]), "--project", "clks", "--clk",
                     token=token) == 0  # fmt: skip
    assert "encodings to clks (upload" in capsys.readouterr().out
    assert [r[2] for r in db_rows(world.data_dir, "uploads") if r[1] == "clks"] == ["north"]


def without_shares(folder: Path, plain: Path) -> Path:
    """A copy of `folder` (encoded --two-server) as `encode` without --two-server makes it."""
    plain.mkdir()
    for f in folder.iterdir():
        if f.is_file():
            (plain / f.name).write_bytes(f.read_bytes())
    return plain


def test_index_sync_and_add_ask_the_projects_mode_first_and_make_no_ref_key_when_refused(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, `index sync` made the member's ref key ("Made a new ref key in ...") and then
    sent a two-server project its CLKs, which the matcher refused; and it put a folder encoded
    --two-server into a CLK project's index without a word, where `upload` asks for --clk."""
    two, clk = create(world, "shares", "two-server"), create(world, "clks", "clk")
    plain = without_shares(encoded["north"], world.folder / "plain.encoded")
    key = world.folder / "north.refkey"
    capsys.readouterr()
    tokens = {"shares": two.tokens["north"], "clks": clk.tokens["north"]}
    for verb in ("sync", "add"):
        for folder, project in ((encoded["north"], "shares"), (plain, "shares"),
                                (encoded["north"], "clks")):  # fmt: skip
            assert world.cli("index", verb, str(folder), "--project", project, "--ref-key",
                             str(key), token=tokens[project]) == 2  # fmt: skip
            err = capsys.readouterr().err
            assert "Nothing was sent" in err and "Made a new ref key" not in err
            assert not key.exists()
            if project == "shares":
                assert "project 'shares' runs in two-server mode" in err
                assert "`blindmatch query` works" in err
                assert ("encoded without --two-server" in err) == (folder == plain)
            else:
                assert f"{folder} was encoded --two-server, but clks is a CLK project" in err
                assert f"`blindmatch index {verb} {folder} --project clks --clk`" in err
    # `index show`: no "holds 0 records" (before 2026-12-06), but why there is no index.
    assert world.cli("index", "show", "--project", "shares", token=tokens["shares"]) == 0
    shown = capsys.readouterr().out
    assert "project 'shares' runs in two-server mode" in shown and "holds 0" not in shown
    assert "keeps no standing index. `blindmatch query` and `blindmatch watch` work" in shown
    with MatcherClient(world.target, clk.tokens["north"]) as north:
        assert north.list_index("clks") == {}
    assert world.cli("index", "sync", str(encoded["north"]), "--project", "clks", "--ref-key",
                     str(key), "--clk", token=clk.tokens["north"]) == 0  # fmt: skip
    assert "Made a new ref key" in capsys.readouterr().err and key.exists()
    with MatcherClient(world.target, clk.tokens["north"]) as north:
        assert len(north.list_index("clks")) == read_encoded(encoded["north"]).record_count
    assert not [r for r in db_rows(world.data_dir, "audit") if r[3] == "project.describe"]


def test_a_run_with_a_part_missing_is_refused(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    project = create(world, "shares", "two-server")
    for name in NAMES[:2]:
        assert world.cli("upload", str(encoded[name]), "--project", "shares",
                         token=project.tokens[name]) == 0  # fmt: skip
    # west's shares reach S1, but S2 is never sent its part nor the matcher its popcounts.
    with MatcherClient(world.target, project.tokens["west"]) as west:
        t = ticket(west, "shares")
    shared = read_shared(encoded["west"] / SHARED_FOLDER)
    with RoleClient("s1", t.s1, t.ticket) as s1:
        s1.upload(t.name, shared)
    capsys.readouterr()
    assert world.cli("run", "--project", "shares", token=project.tokens["north"]) == 3
    assert "not every member has uploaded yet: waiting for west" in capsys.readouterr().err
    # south uploads again, but only S1 gets it (the rest never sent): S1 holds south's new
    # shares, the matcher and S2 its earlier; the run fails, naming south and what to do.
    with MatcherClient(world.target, project.tokens["south"]) as south:
        t = ticket(south, "shares")
    with RoleClient("s1", t.s1, t.ticket) as s1:
        s1.upload(t.name, read_shared(encoded["south"] / SHARED_FOLDER))
    assert world.cli("upload", str(encoded["west"]), "--project", "shares",
                     token=project.tokens["west"]) == 0  # fmt: skip
    capsys.readouterr()
    assert world.cli("run", "--project", "shares", token=project.tokens["north"]) == 1
    err = capsys.readouterr().err
    assert "south's upload is not whole" in err
    assert "S1 holds no upload of 'shares/south/" in err
    assert "south must upload again" in err
    # Once south uploads again, the run goes through.
    assert world.cli("upload", str(encoded["south"]), "--project", "shares",
                     token=project.tokens["south"]) == 0  # fmt: skip
    assert world.cli("run", "--project", "shares", token=project.tokens["north"]) == 0


def test_an_upload_under_another_secret_is_refused_before_s1_or_s2_hold_it(
    world: World, encoded: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = create(world, "shares", "two-server")
    for name in NAMES:
        assert world.cli("upload", str(encoded[name]), "--project", "shares",
                         token=project.tokens[name]) == 0  # fmt: skip
    # west encodes again under a secret of its own: the matcher refuses its ticket, so no
    # share reaches S1 or S2 and the project still runs on the uploads it had.
    other = tmp_path / "other.secret"
    other.write_text(STRONG_SECRET[::-1] + "\n")
    export = write_exports(tmp_path, seed=11, size=400)[EXPORTS["west"]]
    stray = tmp_path / "west-other.encoded"
    assert main(["encode", str(export.csv), "--schema", str(SCHEMA), "--secret-file",
                 str(other), "--mapping", str(export.mapping), "--out", str(stray),
                 "--two-server", "--quiet"]) == 0  # fmt: skip
    capsys.readouterr()
    assert world.cli("upload", str(stray), "--project", "shares",
                     token=project.tokens["west"]) != 0  # fmt: skip
    err = capsys.readouterr().err
    assert "north's upload" in err and "fingerprint" in err
    assert world.cli("run", "--project", "shares", token=project.tokens["north"]) == 0


def run_refused_unavailable(world: World, project: ProjectTokens) -> str:
    """North starts a run once (`blindmatch run` retries an UNAVAILABLE a while): refused
    UNAVAILABLE with nothing started; the refusal's message."""
    once = RetryPolicy(attempts=1)
    with MatcherClient(world.target, project.tokens["north"], retry=once) as north:
        with pytest.raises(UnavailableError) as refused:
            north.start_run("shares")
        assert north.describe("shares").latest_run is None  # nothing was started
    return str(refused.value)


def test_a_run_with_s1_down_is_refused_unavailable_naming_it(
    world: World, encoded: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # StartRun waits REACH_SECONDS (5 s) for S1, then S2 (matcher/rpc/twoserver_project.py
    # `reachable`); S1 is down here, so that is all this test waited on (5.4 s). With 0.5 s
    # the refusal is the same (S2 is not asked once S1 is unreachable); test's time ~0.5 s.
    monkeypatch.setattr(twoserver_project, "REACH_SECONDS", 0.5)
    project = create(world, "shares", "two-server")
    for name in NAMES:
        assert world.cli("upload", str(encoded[name]), "--project", "shares",
                         token=project.tokens[name]) == 0  # fmt: skip
    world.roles["s1"].stop(grace=None)
    message = run_refused_unavailable(world, project)
    assert f"S1 (127.0.0.1:{world.roles['s1'].port}) is unreachable" in message
    assert message.endswith("[UNAVAILABLE]")


def test_a_run_with_s2_refusing_connections_is_refused_without_waiting_out_reach_seconds(
    world: World, encoded: dict[str, Path]
) -> None:
    """Found on loopback: with S2 stopped, `blindmatch run` took 43 s to fail, each of its six
    attempts waiting the matcher's whole 5 s for a connection that was refused at once. A
    connection refused past the channels' reconnect back-off now fails the check then
    (`FAILING_SECONDS`), saying so; REACH_SECONDS (5 s) is left as shipped."""
    project = create(world, "shares", "two-server")
    for name in NAMES:
        assert world.cli("upload", str(encoded[name]), "--project", "shares",
                         token=project.tokens[name]) == 0  # fmt: skip
    world.roles["s2"].server.stop(None).wait()
    message = run_refused_unavailable(world, project)
    assert f"S2 (127.0.0.1:{world.roles['s2'].port}) is unreachable" in message
    assert "every connection failed for 2 s: refused, reset or its TLS handshake" in message


def test_an_upload_cut_after_s1_says_s1_holds_it_and_a_run_fails_until_it_is_sent_again(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """Found on loopback: with S2 down, `upload` said only `cannot reach S2 at ...` (exit 4),
    while S1 had taken the upload in place of the member's earlier one, so the project's next
    run failed (`north's upload is not whole`) though the member's earlier upload had been
    whole. The error now says so."""
    project = create(world, "shares", "two-server")
    world.roles["s2"].server.stop(None).wait()
    assert world.cli("upload", str(encoded["north"]), "--project", "shares",
                     token=project.tokens["north"]) == 4  # fmt: skip
    err = capsys.readouterr().err
    s1 = f"S1 (127.0.0.1:{world.roles['s1'].port})"
    assert f"cannot reach S2 at 127.0.0.1:{world.roles['s2'].port}" in err
    assert f"; {s1} holds this upload now, in place of your earlier one there" in err
    assert "a run fails naming you until you upload again" in err
    assert err.rstrip().endswith("[UNAVAILABLE]")
    assert held(world, "shares") == {"s1": ["north"], "s2": []}


def test_tickets_admit_only_their_member_and_the_members_key_never_reaches_a_member(
    world: World, encoded: dict[str, Path]
) -> None:
    project = create(world, "shares", "two-server")
    shared = read_shared(encoded["north"] / SHARED_FOLDER)
    with MatcherClient(world.target, project.tokens["north"]) as north:
        t = ticket(north, "shares")
    assert MEMBER_KEY not in t.ticket
    assert t.name.startswith("shares/north/")
    # north's ticket cannot upload as south, at S1 or at the matcher.
    with RoleClient("s1", t.s1, t.ticket) as s1, pytest.raises(Exception) as refused:
        s1.upload("shares/south/" + "0" * 24, shared)
    assert "the upload ticket admits 'shares/north/" in str(refused.value)
    # A forged ticket (another key) is refused.
    forged = tickets.issue("not the members' key", t.name, t.expires_unix)
    with RoleClient("s2", t.s2, forged) as s2, pytest.raises(Exception) as refused:
        s2.upload(t.name, shared)
    assert "not signed with the members' key" in str(refused.value)


def test_an_erasure_has_s1_and_s2_drop_the_members_shares_or_says_which_could_not(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    project = create(world, "shares", "two-server")
    for name in NAMES:
        assert world.cli("upload", str(encoded[name]), "--project", "shares",
                         token=project.tokens[name]) == 0  # fmt: skip
    assert held(world, "shares") == {"s1": sorted(NAMES), "s2": sorted(NAMES)}
    capsys.readouterr()
    assert world.cli("erase", "--project", "shares", "--yes", token=project.tokens["west"]) == 0
    out = capsys.readouterr().out
    assert "Erased from shares: 1 upload," in out
    assert "S1 dropped 1 upload, S2 dropped 1 upload" in out
    assert held(world, "shares") == {"s1": ["north", "south"], "s2": ["north", "south"]}
    assert world.cli("run", "--project", "shares", token=project.tokens["north"]) == 3
    assert "waiting for west" in capsys.readouterr().err
    # S2 down: the matcher's part and S1's shares go; the reply names S2, whose shares of
    # south remain (across a restart too, with a data dir), and the command exits 4; erasing
    # again once S2 is back drops them (the servers drop by project and member, whatever the
    # matcher holds).
    world.roles["s2"].server.stop(None).wait()
    assert world.cli("erase", "--project", "shares", "--yes", token=project.tokens["south"]) == 4
    captured = capsys.readouterr()
    assert "Erased from shares: 1 upload," in captured.out
    assert "S1 dropped 1 upload." in captured.out
    s2 = f"S2 (127.0.0.1:{world.roles['s2'].port}) is unreachable"
    assert f"warning: S2 did not drop your shares: {s2}" in captured.err
    assert "They remain there (across a restart too, where S2 keeps its uploads" in captured.err
    assert held(world, "shares") == {"s1": ["north"], "s2": ["north", "south"]}
    # Erasing again asks both servers again (S2 still down: the same warning, exit 4).
    assert world.cli("erase", "--project", "shares", "--yes", token=project.tokens["south"]) == 4
    captured = capsys.readouterr()
    assert "Erased from shares: 0 uploads" in captured.out
    assert "S1 dropped 0 uploads." in captured.out and s2 in captured.err
    forgot = [(r[5], json.loads(r[8])) for r in db_rows(world.data_dir, "audit")
              if r[3] == "twoserver.forget"]  # fmt: skip
    assert forgot[0] == ("west", {"S1": "dropped 1", "S2": "dropped 1"})
    assert forgot[1][0] == "south" and forgot[1][1]["S1"] == "dropped 1"
    assert forgot[1][1]["S2"].startswith(s2) and len(forgot) == 3


def test_an_expired_two_server_project_has_s1_and_s2_drop_its_shares(
    world: World, encoded: dict[str, Path]
) -> None:
    with world.operator() as op:
        short = op.create_project("short", list(NAMES), mode="two-server",
                                  expires_unix=int(world.clock() + 3600))  # fmt: skip
    kept = create(world, "kept", "two-server")
    for project in (short, kept):
        assert world.cli("upload", str(encoded["north"]), "--project", project.project,
                         token=project.tokens["north"]) == 0  # fmt: skip
    world.clock.advance(7200)
    assert world.server.sweeper.sweep() == ["short"]
    assert held(world, "short") == {"s1": [], "s2": []}
    assert held(world, "kept") == {"s1": ["north"], "s2": ["north"]}


def test_an_expired_clk_project_does_not_ask_s1_or_s2(world: World) -> None:
    # A CLK project's data never reaches S1 or S2: its expiry asks neither, so a server
    # that is down costs the sweep no wait and the audit log no failed `twoserver.forget`.
    with world.operator() as op:
        op.create_project("plain", list(NAMES), expires_unix=int(world.clock() + 3600),
                          mode="clk")  # fmt: skip
    for role in world.roles.values():
        role.server.stop(None).wait()
    world.clock.advance(7200)
    assert world.server.sweeper.sweep() == ["plain"]
    actions = [r[3] for r in db_rows(world.data_dir, "audit") if r[4] == "plain"]
    assert "project.expire" in actions and "twoserver.forget" not in actions


def test_a_two_server_upload_shows_the_megabytes_sent_to_s1_and_s2_unless_quiet(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """As a CLK upload does (docs/cli.md): before 2026-12-06 nothing showed until S1 held the
    whole upload (12 s for 6,000 records on loopback, docs/performance.md
    "Two-server mode walked through the CLI at 20,000 people"); none with --quiet. Before
    2026-12-07 its lines gave no total ("46 kB", then "44 MB after 0s" for a 14.7 MB s1.npz):
    they now say what is counted and of what total, known before the first part leaves."""
    project = create(world, "progress", "two-server")
    token = project.tokens["north"]
    capsys.readouterr()
    assert world.cli("upload", str(encoded["north"]), "--project", "progress", token=token) == 0
    err = capsys.readouterr().err
    shared = read_shared(encoded["north"] / SHARED_FOLDER)
    for role, what in (("s1", "bytes as sent, band keys sealed"), ("s2", "bytes as sent")):
        # The total: every part's bytes as sent, S1's band keys as sealed (not its file's).
        total = sum(part_bytes(p) for p in upload_parts("m", role, shared))
        lines = re.findall(rf"uploading to {role.upper()} \({what}\): (.+)", err)
        assert lines and lines[-1].startswith(f"{size(total)} of {size(total)} (100%)"), err
        assert all(f" of {size(total)} (" in line for line in lines), err
    s1_file = (encoded["north"] / "twoserver" / "s1.npz").stat().st_size
    assert sum(part_bytes(p) for p in upload_parts("m", "s1", shared)) > s1_file  # sealed
    assert "waiting for S1 to store it" in err and "waiting for S2 to store it" in err
    assert err.index("waiting for S1") < err.index("S2 to store")  # S1's part goes first
    # S2's part, under a megabyte here, is shown too (before 2026-12-06 it never was).
    s2_file = (encoded["north"] / "twoserver" / "s2.npz").stat().st_size
    assert s2_file < 2**20 and re.search(r"uploading to S2 \(bytes as sent\): \d+ kB", err)
    assert err.index("waiting for S1") < err.index("uploading to S2") < err.index("S2 to store")
    assert world.cli("upload", str(encoded["north"]), "--project", "progress", "--quiet",
                     token=token) == 0  # fmt: skip
    assert "uploading to" not in capsys.readouterr().err
