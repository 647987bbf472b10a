"""The two-server world the project tests share (tests/test_twoserver_project*.py and the
others that import it): S1, S2 and a real matcher that is their combiner on loopback ports,
each role with a data dir of its own, and the members' realistic exports (benchmarks/messy.py)
encoded `--two-server`."""

from __future__ import annotations

import contextlib
import csv
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from benchmarks.messy import write_exports
from blindmatch.cli.app import main
from blindmatch.client import ProjectTokens
from blindmatch.client.remote.client import MatcherClient
from blindmatch.matcher.core import tickets
from blindmatch.matcher.domain import WATCH_WAIT_SECONDS
from blindmatch.matcher.rpc.twoserver_project import combiner_setup
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.rpc.twoserver_uploadguard import IN_ALL, PER_MEMBER
from blindmatch.matcher.server import RunningServer, create_server
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import ADMIN_TOKEN, ROOT, STRONG_SECRET

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
    with started(tmp_path) as made:
        yield made


@contextmanager
def started(
    tmp_path: Path,
    exhaustive: int | None = None,
    small_member: int | None = None,
    query_whole: int | None = None,
    convert_ahead: bool = True,
    watch_wait: float = WATCH_WAIT_SECONDS,
    query_band_keys: str | None = None,
) -> Iterator[World]:
    """The world, S1 started with these caps (create_role's; None: S1's defaults); the
    matcher's conversions ahead of queries off where not `convert_ahead` (`combiner_setup`'s,
    `serve --no-two-server-convert-ahead`: a partner's first query starts its conversion);
    `watch_wait`: `serve --two-server-watch-wait-seconds`; `query_band_keys`: S1's
    `--query-band-keys` (None: the default, "allow" in the suite: conftest.py)."""
    key = secrets.token_urlsafe(16)
    # As operations.md deploys them: each role keeps its uploads in a data dir of its own.
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY, data_dir=tmp_path / "s2-data")
    s1_role = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}",
                          data_dir=tmp_path / "s1-data", exhaustive=exhaustive,
                          small_member=small_member, query_whole=query_whole,
                          query_band_keys=query_band_keys)  # fmt: skip
    roles = {"s1": s1_role, "s2": s2}
    setup = combiner_setup(f"127.0.0.1:{s1_role.port}", f"127.0.0.1:{s2.port}", key, MEMBER_KEY,
                           convert_ahead=convert_ahead, watch_wait=watch_wait)  # fmt: skip
    data_dir, clock = tmp_path / "matcher-data", Ahead()
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=2, two_server=setup,
                           clock=clock)  # fmt: skip
    try:
        yield World(roles, server, data_dir, tmp_path, clock)
    finally:
        server.stop(grace=None)
        for role in roles.values():
            role.stop(grace=None)


def encode_members(folder: Path) -> dict[str, Path]:
    """The three organisations' exports of 400 people, each encoded by `blindmatch encode
    --two-server` (its CLKs, and its two-server upload beside them), in `folder`."""
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


@pytest.fixture(scope="module")
def encoded(two_server_members: dict[str, Path]) -> dict[str, Path]:
    """`encode_members`' folders, made once for the session (tests/conftest.py
    `two_server_members`): the test modules that import this fixture read them, none
    writes there."""
    return two_server_members


def create(world: World, name: str, mode: str) -> ProjectTokens:
    with world.operator() as op:
        return op.create_project(name, list(NAMES), mode=mode)


def hits(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return sorted(csv.reader(f))


def flow(world: World, project: ProjectTokens, encoded: dict[str, Path]) -> dict[str, Path]:
    """Every member uploads (to a CLK project with --clk: the folders are two-server ones);
    north runs; every member writes its hits.csv."""
    clk = ["--clk"] if project.mode == "clk" else []
    for name in NAMES:
        token = project.tokens[name]
        assert world.cli("upload", str(encoded[name]), "--project", project.project, *clk,
                         token=token) == 0  # fmt: skip
    assert world.cli("run", "--project", project.project, token=project.tokens["north"]) == 0
    out = {}
    for name in NAMES:
        out[name] = world.folder / f"{project.project}-{name}-hits.csv"
        assert world.cli("results", "--project", project.project, "--encoded",
                         str(encoded[name]), "--out", str(out[name]),
                         token=project.tokens[name]) == 0  # fmt: skip
    return out


def held(world: World, project: str) -> dict[str, list[str]]:
    """Whose uploads of `project` S1 and S2 hold (the member of each project/member/tag)."""
    return {role: sorted(m.split("/")[1] for m in r.service.held if m.startswith(project + "/"))
            for role, r in world.roles.items()}  # fmt: skip


def member_ticket(name: str) -> str:
    """The matcher's ticket for `name` (project/member/tag), as it signs one."""
    return tickets.issue(MEMBER_KEY, name, time.time() + tickets.TTL_SECONDS)


@contextmanager
def uploads_held_open(s1: RunningRole) -> Iterator[threading.Event]:
    """IN_ALL members' uploads held open at `s1` (many members' queries at once, say), so
    that the next is refused as busy, until the block ends; yields an event to wait on."""
    done = threading.Event()

    def idle(name: str) -> Iterator[pb.SharedPart]:
        yield pb.SharedPart(member=name, clk=0, clk_bits=1024, bands=1)
        done.wait()

    with grpc.insecure_channel(f"127.0.0.1:{s1.port}") as ch:
        stub = pb_grpc.TwoServerBlockingStub(ch)
        names = [f"one/m{k // PER_MEMBER}/{k:08x}" for k in range(IN_ALL)]
        auth = [(("authorization", f"Bearer {member_ticket(n)}"),) for n in names]
        opened = [stub.Upload.future(idle(n), metadata=a) for n, a in zip(names, auth, strict=True)]
        try:
            # The guard is made at the role's first upload: these may not have reached it yet.
            while (guard := getattr(s1.service, "upload_guard", None)) is None or (
                guard.open_uploads() < IN_ALL
            ):
                done.wait(0.05)
            yield done
        finally:
            done.set()
            for f in opened:
                with contextlib.suppress(grpc.RpcError):
                    f.result()
