"""A project in two-server mode through the members' own commands (docs/operations.md "A
project in two-server mode"): a real matcher started with S1 and S2 (three gRPC servers on
loopback ports), members from the realistic fixture (benchmarks/messy.py) who `encode
--two-server`, `upload`, `run` and `results` exactly as in a CLK project. Their hits.csv are
the same project's CLK run's (without `blindmatch.rule`, and under the default schema's rule,
which a two-server run applies on the shares); the matcher never holds a CLK, a share or a
popcount, only how many records; a CLK upload, a run with a part missing and a run with S1
down are refused, naming what to do."""

from __future__ import annotations

import csv
import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from benchmarks.messy import write_exports
from blindmatch.cli.app import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.encoding.sharing import SHARED_FOLDER, read_shared, small_member_warning
from blindmatch.client.errors import RejectedError, UnavailableError
from blindmatch.client.remote.client import MatcherClient
from blindmatch.client.remote.retry import RetryPolicy
from blindmatch.client.remote.twoserver import RoleClient, shares_sha256, ticket
from blindmatch.matcher.core import tickets
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.server import RunningServer, create_server
from blindmatch.matcher.storage.integrity import check_data_dir
from tests.support import ADMIN_TOKEN, PERSON_SCHEMA, ROOT, STRONG_SECRET, db_rows

pytestmark = pytest.mark.server

MEMBER_KEY = "the members' key: the matcher and the roles hold it, never a member"
NAMES = ("north", "south", "west")
EXPORTS = {"north": "north-police", "south": "south-police", "west": "retail-bcrp"}
# The default schema without its rule over both CLKs (the no-rule path; the rule's is
# `test_a_schema_rule_is_applied_...`): the two projects' hits are the same.
SCHEMA = ROOT / "schemas" / "person-uk-no-rule.json"


class Ahead:
    """The real time (the order of uploads goes by it), moved forward by hand."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class World:
    """S1, S2 and a matcher that is their combiner; where the members' files are."""

    roles: dict[str, RunningRole]
    server: RunningServer
    data_dir: Path
    folder: Path
    clock: Ahead  # the matcher's (projects expire by it)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def operator(self) -> MatcherClient:
        return MatcherClient(self.target, ADMIN_TOKEN)

    def cli(self, *args: str, token: str = "") -> int:
        extra = ["--token", token] if token else []
        return main([*args, "--server", self.target, *extra])


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    key = secrets.token_urlsafe(16)
    # As operations.md deploys them: each role keeps its uploads in a data dir of its own.
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY, data_dir=tmp_path / "s2-data")
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                     data_dir=tmp_path / "s1-data")  # fmt: skip
    roles = {"s1": s1, "s2": s2}
    setup = combiner_setup(f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}", key, MEMBER_KEY)
    data_dir, clock = tmp_path / "matcher-data", Ahead()
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=2, two_server=setup,
                           clock=clock)  # fmt: skip
    try:
        yield World(roles, server, data_dir, tmp_path, clock)
    finally:
        server.stop(grace=None)
        for role in roles.values():
            role.stop(grace=None)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The three organisations' exports of 400 people, each encoded by `blindmatch encode
    --two-server` (its CLKs, and its two-server upload beside them)."""
    folder = tmp_path_factory.mktemp("members")
    secret = folder / "linkage.secret"
    secret.write_text(STRONG_SECRET + "\n")
    exports = write_exports(folder, seed=11, size=400)
    out = {}
    for name in NAMES:
        out[name] = folder / f"{name}.encoded"
        export = exports[EXPORTS[name]]
        assert main(["encode", str(export.csv), "--schema", str(SCHEMA),
                     "--secret-file", str(secret), "--mapping", str(export.mapping),
                     "--out", str(out[name]), "--two-server", "--quiet"]) == 0  # fmt: skip
    return out


def create(world: World, name: str, mode: str) -> ProjectTokens:
    with world.operator() as op:
        return op.create_project(name, list(NAMES), mode=mode)


def hits(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return sorted(csv.reader(f))


def flow(world: World, project: ProjectTokens, encoded: dict[str, Path]) -> dict[str, Path]:
    """Every member uploads; north runs; every member writes its hits.csv."""
    for name in NAMES:
        token = project.tokens[name]
        assert world.cli("upload", str(encoded[name]), "--project", project.project,
                         token=token) == 0  # fmt: skip
    assert world.cli("run", "--project", project.project, token=project.tokens["north"]) == 0
    out = {}
    for name in NAMES:
        out[name] = world.folder / f"{project.project}-{name}-hits.csv"
        assert world.cli("results", "--project", project.project, "--encoded",
                         str(encoded[name]), "--out", str(out[name]),
                         token=project.tokens[name]) == 0  # fmt: skip
    return out


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
    # A folder encoded without --two-server: `upload` sends its CLKs, which the matcher
    # refuses, saying to encode with --two-server; nothing is stored anywhere.
    plain = world.folder / "plain.encoded"
    for f in encoded["north"].iterdir():
        if f.is_file():
            (plain / f.name).parent.mkdir(exist_ok=True)
            (plain / f.name).write_bytes(f.read_bytes())
    capsys.readouterr()
    assert world.cli("upload", str(plain), "--project", "shares",
                     token=project.tokens["north"]) == 3  # fmt: skip
    err = capsys.readouterr().err
    assert "project 'shares' runs in two-server mode" in err
    assert "Encode with `blindmatch encode ... --two-server`" in err
    assert not world.roles["s1"].service.held
    assert not [r for r in db_rows(world.data_dir, "uploads") if r[1] == "shares"]


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


def test_a_run_with_s1_down_is_refused_unavailable_naming_it(
    world: World, encoded: dict[str, Path]
) -> None:
    project = create(world, "shares", "two-server")
    for name in NAMES:
        assert world.cli("upload", str(encoded[name]), "--project", "shares",
                         token=project.tokens[name]) == 0  # fmt: skip
    world.roles["s1"].stop(grace=None)
    once = RetryPolicy(attempts=1)  # (`blindmatch run` retries an UNAVAILABLE a while)
    with MatcherClient(world.target, project.tokens["north"], retry=once) as north:
        with pytest.raises(UnavailableError) as refused:
            north.start_run("shares")
        assert north.describe("shares").latest_run is None  # nothing was started
    message = str(refused.value)
    assert f"S1 (127.0.0.1:{world.roles['s1'].port}) is unreachable" in message
    assert message.endswith("[UNAVAILABLE]")


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


def test_serve_refuses_two_server_options_that_do_not_go_together(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = []
    for name in ("combiner.key", "members.key"):
        keys.append(tmp_path / name)
        keys[-1].write_text(f"{name} {secrets.token_hex(8)}\n")
        keys[-1].chmod(0o600)
    serve = ["serve", "--data-dir", str(tmp_path / "data"), "--listen", "127.0.0.1:0"]
    both = ["--two-server-s1", "127.0.0.1:50071", "--two-server-s2", "127.0.0.1:50072"]
    files = ["--two-server-key-file", str(keys[0]), "--two-server-member-key-file", str(keys[1])]
    assert main([*serve, *both]) == 2
    assert "--two-server-s1, --two-server-s2, --two-server-key-file and" in (
        capsys.readouterr().err
    )
    assert main([*serve, "--default-mode", "two-server"]) == 2
    assert "--default-mode two-server: needs --two-server-s1 and -s2" in capsys.readouterr().err
    far = ["--two-server-s1", "10.1.2.3:50071", "--two-server-s2", "127.0.0.1:50072"]
    assert main([*serve, *far, *files]) == 2
    assert "--two-server-s1 10.1.2.3:50071: refusing plaintext to S1 or S2 off loopback" in (
        capsys.readouterr().err
    )
    same = ["--two-server-key-file", str(keys[0]), "--two-server-member-key-file", str(keys[0])]
    assert main([*serve, *both, *same]) == 2
    assert "the combiner's key and the members' key: two different keys" in (
        capsys.readouterr().err
    )
    keys[1].chmod(0o644)
    assert main([*serve, *both, *files]) == 2
    assert "readable by others than its owner" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # refused before anything was made


def test_project_create_and_show_name_the_mode(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    env_token = {"BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env_token.items():
            mp.setenv(k, v)
        assert world.cli("project", "create", "shares", "--members", "north,south",
                         "--mode", "two-server") == 0  # fmt: skip
        assert "mode: two-server;" in capsys.readouterr().out
        assert world.cli("project", "create", "sc", "--members", "north,south", "--mode",
                         "two-server", "--disclose", "scores") == 3  # fmt: skip
        assert "disclosure: scores, but a two-server project" in capsys.readouterr().err
        assert world.cli("project", "show", "shares", "--operator") == 0
    out = capsys.readouterr().out
    assert f"two-server mode: shares to S1 (127.0.0.1:{world.roles['s1'].port})" in out


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
            assert world.cli("upload", str(out), "--project", p.project, "--quiet",
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


def held(world: World, project: str) -> dict[str, list[str]]:
    """Whose uploads of `project` S1 and S2 hold (the member of each project/member/tag)."""
    return {role: sorted(m.split("/")[1] for m in r.service.held if m.startswith(project + "/"))
            for role, r in world.roles.items()}  # fmt: skip


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
    assert "Erased from shares: 1 upload(s)" in out
    assert "S1 dropped 1 upload(s), S2 dropped 1 upload(s)" in out
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
    assert "Erased from shares: 1 upload(s)" in captured.out
    assert "S1 dropped 1 upload(s)." in captured.out
    s2 = f"S2 (127.0.0.1:{world.roles['s2'].port}) is unreachable"
    assert f"warning: S2 did not drop your shares: {s2}" in captured.err
    assert "They remain there (across a restart too, where S2 keeps its uploads" in captured.err
    assert held(world, "shares") == {"s1": ["north"], "s2": ["north", "south"]}
    # Erasing again asks both servers again (S2 still down: the same warning, exit 4).
    assert world.cli("erase", "--project", "shares", "--yes", token=project.tokens["south"]) == 4
    captured = capsys.readouterr()
    assert "Erased from shares: 0 upload(s)" in captured.out
    assert "S1 dropped 0 upload(s)." in captured.out and s2 in captured.err
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
        op.create_project("plain", list(NAMES), expires_unix=int(world.clock() + 3600))
    for role in world.roles.values():
        role.server.stop(None).wait()
    world.clock.advance(7200)
    assert world.server.sweeper.sweep() == ["plain"]
    actions = [r[3] for r in db_rows(world.data_dir, "audit") if r[4] == "plain"]
    assert "project.expire" in actions and "twoserver.forget" not in actions


def test_encode_two_server_warns_of_a_member_small_enough_for_s2s_view_to_leak(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "project.secret"
    secret.write_text(STRONG_SECRET + "\n")
    export = write_exports(tmp_path, seed=12, size=300)[EXPORTS["west"]]
    common = [str(export.csv), "--schema", str(SCHEMA), "--secret-file", str(secret),
              "--mapping", str(export.mapping)]  # fmt: skip
    assert main(["encode", *common, "--out", str(tmp_path / "shared"), "--two-server"]) == 0
    out = capsys.readouterr().out
    records = read_encoded(tmp_path / "shared").record_count
    assert f"a two-server upload of {records:,} records (under 4,000)" in out
    assert "privacy-check --mode two-server" in out
    assert main(["encode", *common, "--out", str(tmp_path / "clk")]) == 0
    assert "two-server upload of" not in capsys.readouterr().out  # a CLK upload: not said
    # Households of 3,000 records crossed the bar in two runs of four (S2's counts read four
    # ways): warned; from 4,000, where every run stayed under it, not (docs/privacy.md).
    assert small_member_warning(3_000) is not None and small_member_warning(4_000) is None


@pytest.mark.server
def test_a_matcher_served_with_s1_and_s2_makes_two_server_projects_unless_told(
    tmp_path: Path,
) -> None:
    """`blindmatch serve --two-server-s1/-s2 ...` (a real process): `project create` without
    --mode makes a two-server project, so that the matcher holds no CLK unless a project
    asks for one (--mode clk); `--default-mode clk` keeps the old default."""
    from benchmarks.cliflow import blindmatch, serve

    keys = []
    for name in ("combiner.key", "members.key"):
        keys.append(tmp_path / name)
        keys[-1].write_text(f"{name} {secrets.token_hex(8)}\n")
        keys[-1].chmod(0o600)
    combiner, members = (k.read_text().strip() for k in keys)
    s2 = create_role("s2", "127.0.0.1:0", combiner, members)
    s1 = create_role("s1", "127.0.0.1:0", combiner, members, s2=f"127.0.0.1:{s2.port}")
    both = ["--two-server-s1", f"127.0.0.1:{s1.port}", "--two-server-s2", f"127.0.0.1:{s2.port}",
            "--two-server-key-file", str(keys[0]),
            "--two-server-member-key-file", str(keys[1])]  # fmt: skip
    try:
        for extra, modes in (([], ("two-server", "clk")), (["--default-mode", "clk"], ("clk",))):
            with serve(tmp_path / f"data{len(extra)}", *both, *extra) as matcher:
                env = {"BLINDMATCH_ADMIN_TOKEN": matcher.admin_token}
                net = ["--server", matcher.target]
                made = blindmatch("project", "create", "plain", "--members", "north,south",
                                  *net, env=env)  # fmt: skip
                assert f"mode: {modes[0]};" in made
                if len(modes) > 1:
                    asked = blindmatch("project", "create", "asked", "--members",
                                       "north,south", "--mode", "clk", *net, env=env)  # fmt: skip
                    assert "mode: clk;" in asked
    finally:
        s1.stop(grace=None)
        s2.stop(grace=None)
