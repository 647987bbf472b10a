"""Two-server mode walked as a new user would (twowalk, 2026-12-07: docs/operations.md "A
project in two-server mode", on loopback): what S1, S2 and the matcher say where their keys
or addresses disagree. Each case on real roles and a real matcher on loopback.

- `serve` started with a --two-server-key-file that is not S1's and S2's key served and said
  nothing; a member's run then failed `S1 answers Propose only with the combiner's key`,
  and a query exit 3 the same, neither saying which key. The start-up probe warns now, and
  a role's refusal of an unknown key names the flags to compare.
- A matcher whose --two-server-member-key-file is not S1's --member-key-file: each upload
  and query refused `S1 refused the upload: an upload ticket not signed with the members'
  key`, naming no flag. It names both now.
- S1 or S2 down (or a wrong address): `cannot reach S1 at ADDR: failed to connect ...`,
  saying nothing of what to do. It says to check that the role is started and its address.
"""

from __future__ import annotations

import logging
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import numpy as np
import pytest

from blindmatch.client import ProjectTokens
from blindmatch.client.encoding import sharing
from blindmatch.client.errors import MatcherError, UnavailableError
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core import tickets
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.server import create_server
from tests.portheld import dead_port, port_held
from tests.support import ADMIN_TOKEN
from tests.test_twoserver_kept_channels import key_files, serve_args
from tests.test_twoserver_standing_life import until
from tests.twoserver_world import NAMES, Ahead, World, create

pytestmark = pytest.mark.server

MEMBER_KEY = "the members' key of the twowalk roles"
FORGED = "an upload ticket not signed with the members' key"  # (core/tickets.py)


def small_upload() -> sharing.SharedUpload:
    clks = np.random.default_rng(5).integers(0, 256, (4, 128), dtype=np.uint8)
    return sharing.shared_upload(clks, b"s", sharing.BandPlan(4, 4))


@contextmanager
def roles(key: str) -> Iterator[tuple[str, str]]:
    """S2 and S1 on loopback, started with the parties' `key`: their addresses."""
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}")
    try:
        yield f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}"
    finally:
        s1.stop(grace=None)
        s2.stop(grace=None)


def test_serves_probe_warns_where_s1_and_s2_refuse_the_matchers_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from blindmatch.cli import twoserveropts

    caplog.set_level(logging.INFO, logger="blindmatch.matcher")

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
                and "two-server projects: " in r.getMessage()]  # fmt: skip

    with roles(secrets.token_urlsafe(16)) as (s1, s2):  # (key_files: other keys)
        setup = twoserveropts.serve_setup(serve_args(s1, s2, key_files(tmp_path)))
        assert setup is not None  # (its probe on a thread of its own)
        server = create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, two_server=setup)
        try:
            until(lambda: len(warned()) == 2)
        finally:
            server.stop(grace=None)
    assert len(warned()) == 2, warned()
    for who, line in zip(("S1", "S2"), sorted(warned()), strict=True):
        assert line.startswith(f"two-server projects: {who} (127.0.0.1:"), line
        assert (
            f"{who} answers Holds only with the combiner's key: the key presented is none "
            f"that {who} was started with" in line
        ), line
        assert "--two-server-key-file" in line and "runs and queries fail" in line, line


def test_serves_probe_says_nothing_where_s1_and_s2_take_its_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from blindmatch.cli import twoserveropts
    from blindmatch.matcher.rpc.twoserver_project import combiner_setup

    key = secrets.token_urlsafe(16)
    caplog.set_level(logging.INFO, logger="blindmatch.matcher")
    with roles(key) as (s1, s2):
        setup = combiner_setup(s1, s2, key, MEMBER_KEY)
        server = create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, two_server=setup)
        try:
            twoserveropts.warn_unreachable(setup)
        finally:
            server.stop(grace=None)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_ticket_of_another_members_key_names_both_flags() -> None:
    s2 = create_role("s2", "127.0.0.1:0", secrets.token_urlsafe(16), MEMBER_KEY)
    name = "p/north/00ff00ff"
    ticket = tickets.issue("the matcher's other members' key", name, 2**40)
    try:
        with (
            RoleClient("s2", f"127.0.0.1:{s2.port}", ticket) as client,
            pytest.raises(MatcherError) as refused,
        ):
            client.upload(name, small_upload())
    finally:
        s2.stop(grace=None)
    said = str(refused.value)
    assert said.startswith(f"S2 refused the upload: {FORGED} that S2 holds: "), said
    assert "--member-key-file" in said and "--two-server-member-key-file" in said, said


def test_an_s1_nobody_answers_at_says_what_to_check() -> None:
    with dead_port() as port:
        target = f"127.0.0.1:{port}"
        with (
            RoleClient("s1", target, MEMBER_KEY) as client,
            pytest.raises(UnavailableError) as refused,
        ):
            client.upload("north", small_upload())
    said = str(refused.value)
    assert said.startswith(f"cannot reach S1 at {target}: "), said
    assert f"Is S1 started (`blindmatch two-server role --role s1`), and is {target} its " in said
    assert "--two-server-s1" in said and said.endswith("[UNAVAILABLE]"), said


def test_a_run_refused_for_an_s1_nobody_answers_at_says_what_to_do() -> None:
    """`blindmatch run` with S1 down: `S1 (ADDR) is unreachable: a two-server run needs it
    (...); nothing was started`, six times over its retries, and no word of what to do."""
    from blindmatch.matcher import errors
    from blindmatch.matcher.rpc.twoserver_project import reachable

    with dead_port() as port, pytest.raises(errors.Unavailable) as refused:
        reachable(f"127.0.0.1:{port}", "S1", None)
    said = str(refused.value)
    assert said.startswith(f"S1 (127.0.0.1:{port}) is unreachable: a two-server run needs it")
    assert said.endswith(
        "; nothing was started: run again once S1 answers (is it started, and at the "
        "matcher's --two-server-s1?)"
    ), said


def test_s1_started_with_a_wrong_s2_warns_in_its_log(caplog: pytest.LogCaptureFixture) -> None:
    """`two-server role --role s1 --s2 WRONG` started and said nothing; a member's run then
    failed `S1 (...): S2 (WRONG) is unreachable`. Its start-up probe warns now, as `serve`'s
    (the function the role's start runs on a thread of its own, cli/twoserver.py)."""
    from blindmatch.cli.twoparties import warn_peers_unreachable

    caplog.set_level(logging.INFO, logger="blindmatch.matcher")
    with dead_port() as port:
        warn_peers_unreachable("s1", "", f"127.0.0.1:{port}", "S1's key", None)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warned == [
        f"S2 (127.0.0.1:{port}) is unreachable: a two-server run needs it (every connection "
        "failed for 2 s: refused, reset or its TLS handshake failed); runs and queries fail "
        "until it answers (check --s2 and that S2 is started)"
    ]


def test_a_combiner_role_whose_s1_and_s2_answer_says_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from blindmatch.cli.twoparties import warn_peers_unreachable

    caplog.set_level(logging.INFO, logger="blindmatch.matcher")
    key = secrets.token_urlsafe(16)
    with roles(key) as (s1, s2):
        warn_peers_unreachable("combiner", s1, s2, key, None)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_combiner_role_whose_key_s1_and_s2_do_not_hold_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from blindmatch.cli.twoparties import warn_peers_unreachable

    caplog.set_level(logging.INFO, logger="blindmatch.matcher")
    with roles(secrets.token_urlsafe(16)) as (s1, s2):
        warn_peers_unreachable("combiner", s1, s2, "another key", None)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert [w.split(" (127.0.0.1:")[0] for w in warned] == ["S1", "S2"], warned
    for who, line in zip(("S1", "S2"), warned, strict=True):
        assert (
            f"{who} answers Holds only with the combiner's key: the key presented is none " in line
        )
        assert line.endswith("runs and queries fail until it takes this role's --key-file"), line


@pytest.mark.parametrize("right", [True, False])
def test_s1_whose_key_s2_does_not_hold_for_it_warns_at_its_start(
    right: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Each party its own key: S1's --key-file not the one S2 holds for it (`--party-key
    s1=`). Nothing said at any start; the first run failed at S2's Exchange, having spent the
    pairs of the batch that was out (every pair's member uploads again). S1's start asks S2
    an Exchange of no messages with its key: refused for the key, a warning; with the right
    key S2 refuses the empty exchange itself, and nothing is said."""
    from blindmatch.cli.twoparties import warn_peers_unreachable

    s1_key, combiner_key = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", secrets.token_urlsafe(16), MEMBER_KEY,
                     keys={"s1": s1_key, "combiner": combiner_key})  # fmt: skip
    caplog.set_level(logging.INFO, logger="blindmatch.matcher")
    try:
        address = f"127.0.0.1:{s2.port}"
        warn_peers_unreachable("s1", "", address, s1_key if right else "not S1's key", None)
    finally:
        s2.stop(grace=None)
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
              and r.getMessage().startswith("S2 (")]  # fmt: skip
    if right:
        assert not warned
        return
    assert warned == [
        f"S2 ({address}): S2 answers Exchange only with S1's key: the key presented is none "
        "that S2 was started with (its --key-file and --party-key; the matcher's is its "
        "--two-server-key-file); runs and queries fail until it takes this role's --key-file"
    ]


def test_encode_of_a_small_export_says_its_privacy_check_is_of_synthetic_people(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`encode --two-server` of households' probation export (160 records) said `Run
    `blindmatch privacy-check --mode two-server` on this export before uploading`; that bare
    command attacks synthetic people, and the export itself is too small for a verdict
    (`NO VERDICT: 160 records ... are too few`). It says so."""
    from benchmarks.messy import write_exports
    from blindmatch.cli.app import main
    from blindmatch.client.encoding.encoded import read_encoded
    from tests.support import STRONG_SECRET
    from tests.twoserver_world import EXPORTS, SCHEMA

    secret = tmp_path / "project.secret"
    secret.write_text(STRONG_SECRET + "\n")
    export = write_exports(tmp_path, seed=12, size=300)[EXPORTS["west"]]
    out = tmp_path / "west"
    assert main(["encode", str(export.csv), "--schema", str(SCHEMA), "--secret-file",
                 str(secret), "--mapping", str(export.mapping), "--out", str(out),
                 "--two-server"]) == 0  # fmt: skip
    said = capsys.readouterr().out
    records = read_encoded(out).record_count
    assert records < 500
    assert "on this export before uploading" not in said
    assert (
        "Run `blindmatch privacy-check --mode two-server` before uploading (without DATA: "
        f"synthetic people; this export's {records:,} records are under the 500 a check of it "
        "needs)"
    ) in " ".join(said.split()), said


@contextmanager
def matcher_of(tmp_path: Path, key: str, s1: str, s2: str) -> Iterator[World]:
    """A matcher, the combiner of S1 and S2 at these addresses, with `key`."""
    from blindmatch.matcher.rpc.twoserver_project import combiner_setup

    setup = combiner_setup(s1, s2, key, MEMBER_KEY)
    server = create_server("127.0.0.1:0", tmp_path / "matcher-data", ADMIN_TOKEN,
                           two_server=setup)  # fmt: skip
    try:
        yield World({}, server, tmp_path / "matcher-data", tmp_path, Ahead())
    finally:
        server.stop(grace=None)


def uploaded(world: World, project: str, encoded: dict[str, Path]) -> ProjectTokens:
    """`project`, each member's upload to it sent (`encoded`: conftest.py's
    `two_server_members`)."""
    made = create(world, project, "two-server")
    for name in NAMES:
        assert world.cli("upload", str(encoded[name]), "--project", project, "--quiet",
                         token=made.tokens[name]) == 0  # fmt: skip
    return made


def test_a_run_s1_refuses_the_key_of_says_which_flags_agree_not_run_again(
    tmp_path: Path, two_server_members: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The matcher's --two-server-key-file not S1's and S2's key: each member's `run` failed
    `S1 (...): S1 answers Propose only with the combiner's key: ...; Nothing this run learned
    is lost: the outcomes of the 0 pairs of members it finished are kept, and a plain rerun
    ... sends only the others`: a rerun fails the same way until the keys agree."""
    with (
        roles(secrets.token_urlsafe(16)) as (s1, s2),
        matcher_of(tmp_path, "not the key S1 and S2 were started with", s1, s2) as world,
    ):
        project = uploaded(world, "keys", two_server_members)
        capsys.readouterr()
        assert world.cli("run", "--project", "keys", token=project.tokens["north"]) != 0
    err = " ".join(capsys.readouterr().err.split())
    assert "S1 answers Propose only with the combiner's key: the key presented is none" in err
    assert "--two-server-key-file" in err, err
    assert "run again" not in err and "plain rerun" not in err, err
    assert "0 pairs" not in err and "are kept" not in err, err
    assert err.endswith(
        "(its --key-file and --party-key; the matcher's is its --two-server-key-file). A rerun "
        "fails the same way until those keys agree"
    ), err


def test_a_run_failed_before_it_finished_a_pair_says_nothing_of_kept_outcomes(
    tmp_path: Path,
) -> None:
    """A run failed before it finished any pair of members said `Nothing this run learned
    is lost: the outcomes of the 0 pairs of members it finished are kept`."""
    from blindmatch.matcher.storage.store import Store
    from blindmatch.matcher.usecases.twojournal import StoreJournal

    store = Store(tmp_path / "data")
    try:
        journal = StoreJournal(store, "keys", "keys-run-1", (0.9,), "", ["north", "south"],
                               ["keys/north/00", "keys/south/11"])  # fmt: skip
        said = journal.after_failure("S2 (127.0.0.1:1) is unreachable (UNAVAILABLE: down)")
        again = journal.after_failure("north's upload is not whole", ["north"])
    finally:
        store.close()
    assert said == (
        "S2 (127.0.0.1:1) is unreachable (UNAVAILABLE: down). S1 and S2 evaluated no pair of "
        "members whose outcome the matcher lacks: a plain rerun (`blindmatch run`, no upload "
        "needed) starts it again"
    )
    assert again == "north's upload is not whole. Once north uploaded again, run again"


@contextmanager
def silent_port(port: int = 0) -> Iterator[int]:
    """A loopback port (`port`, a stopped server's; 0: a free one) that accepts connections
    (the kernel's backlog) and never answers."""
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        until(lambda: _bound(held, port))
        held.listen(16)
        yield held.getsockname()[1]


def _bound(held: socket.socket, port: int) -> bool:
    try:
        held.bind(("127.0.0.1", port))
    except OSError:  # (the stopped server's socket not gone yet)
        return False
    return True


def test_an_upload_to_an_s1_that_never_answers_says_what_it_waits_for() -> None:
    """An S1 address that accepts connections but never answers: a member's `upload` (and a
    query's records, the same `RoleClient.upload`) waited gRPC's ~20 s handshake with nothing
    said, then failed `cannot reach S1 at ADDR`. It says once what it waits for first. (The
    channel here gives up after 3 s, not gRPC's 20: `grpc.min_reconnect_backoff_ms` is the
    connect timeout.)"""
    said: list[str] = []
    with silent_port() as port:
        target = f"127.0.0.1:{port}"
        channel = grpc.insecure_channel(target, options=[("grpc.min_reconnect_backoff_ms", 3000)])
        try:
            with (
                RoleClient("s1", target, MEMBER_KEY, channel=channel, on_wait=said.append) as c,
                pytest.raises(UnavailableError) as refused,
            ):
                c.upload("north", small_upload())
        finally:
            channel.close()
    assert said == [
        f"waiting for S1 at {target} (it accepted the connection but has not answered yet; "
        "gRPC gives up after about 20 s) ..."
    ]
    assert str(refused.value).startswith(f"cannot reach S1 at {target}: "), refused.value
    assert "Is S1 started (`blindmatch two-server role --role s1`)" in str(refused.value)


def test_an_upload_to_an_s1_that_answers_says_no_wait() -> None:
    said: list[str] = []
    with roles(secrets.token_urlsafe(16)) as (s1, _):
        ticket = tickets.issue(MEMBER_KEY, "p/north/00ff00ff", 2**40)
        with RoleClient("s1", s1, ticket, on_wait=said.append) as client:
            assert client.upload("p/north/00ff00ff", small_upload()) == 4
    assert said == []


@contextmanager
def s1_stopped(
    tmp_path: Path, encoded: dict[str, Path]
) -> Iterator[tuple[World, dict[str, str], int]]:
    """S1, S2 and their matcher; project "down" with every member's upload; then S1 stopped:
    the matcher, the members' tokens and S1's port (nothing listens there)."""
    key = secrets.token_urlsafe(16)
    s2 = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
    s1 = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=f"127.0.0.1:{s2.port}")
    try:
        with matcher_of(tmp_path, key, f"127.0.0.1:{s1.port}", f"127.0.0.1:{s2.port}") as world:
            project = uploaded(world, "down", encoded)
            s1.stop(grace=None)
            yield world, project.tokens, s1.port
    finally:
        s1.stop(grace=None)
        s2.stop(grace=None)


def test_a_run_with_s1_down_says_its_retries_once(
    tmp_path: Path, two_server_members: dict[str, Path]
) -> None:
    """`blindmatch run` with S1 down printed `Warning: start run: S1 (ADDR) is unreachable:
    ...; retrying in ...` at each of its retries, the same line over ~20 s. Said once now."""
    from blindmatch.client.remote.client import MatcherClient
    from blindmatch.client.remote.retry import RetryPolicy

    retries: list[str] = []
    quick = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02)
    with (
        s1_stopped(tmp_path, two_server_members) as (world, tokens, port), port_held(port),
        MatcherClient(world.target, tokens["north"], retry=quick,
                      on_retry=retries.append) as north,
        pytest.raises(UnavailableError, match=r"S1 .* is unreachable"),
    ):  # fmt: skip
        north.start_run("down")
    assert len(retries) == 1, retries
    assert retries[0].startswith("start run: S1 (127.0.0.1:"), retries
    assert retries[0].endswith("(attempt 2 of 3; said again only if the failure changes)")


def test_a_run_whose_s1_never_answers_says_what_it_waits_for(
    tmp_path: Path, two_server_members: dict[str, Path]
) -> None:
    """`blindmatch run` with S1's address accepting connections but never answering: the
    matcher waits for S1 (its REACH_SECONDS, each try) and nothing was said until the first
    retry's warning. The wait is said once first, then the matcher's refusal as before."""
    from blindmatch.client.remote.client import MatcherClient
    from blindmatch.client.remote.retry import NO_RETRY

    said: list[str] = []
    with (
        s1_stopped(tmp_path, two_server_members) as (world, tokens, port), silent_port(port),
        MatcherClient(world.target, tokens["north"], retry=NO_RETRY,
                      on_wait=said.append) as north,
        pytest.raises(UnavailableError, match=r"S1 \(127.0.0.1:\d+\) is unreachable"),
    ):  # fmt: skip
        north.start_run("down")
    assert said == [
        "run: waiting for the matcher to start it (in a two-server project it first reaches "
        "S1 and S2, and gives up on one that does not answer in 5 s) ..."
    ]
