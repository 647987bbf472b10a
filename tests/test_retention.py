"""Retention and erasure: expired projects' data and erased uploads are gone from the data
dir - files and rows - while the audit log keeps the fact."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from benchmarks.knownclks import population, write
from blindmatch.cli import main
from blindmatch.cli.projectargs import parse_expiry
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import AuthError, InputError, NotFoundError, RejectedError
from blindmatch.client.remote.retry import NO_RETRY
from blindmatch.matcher.server import RunningServer
from blindmatch.matcher.storage.retention_store import ERASED_DURING_RUN
from tests.support import HOUR, Clock, Matcher, Org, db_rows, encode_all, start, uploaded_and_run

pytestmark = pytest.mark.on_disk  # kills or races: tmp_path on the disk (tests/conftest.py)


@pytest.fixture
def encoded(orgs: dict[str, Org], tmp_path: Path) -> dict[str, Encoded]:
    return encode_all(orgs, tmp_path)


def clk_files(data_dir: Path) -> list[Path]:
    return sorted((data_dir / "clks").iterdir())


def project_rows(data_dir: Path, project: str) -> dict[str, int]:
    """How many rows of each kind of data the project still has."""
    runs = [r for r in db_rows(data_dir, "runs") if r[1] == project]
    run_ids = {r[0] for r in runs}
    return {
        "uploads": sum(1 for r in db_rows(data_dir, "uploads") if r[1] == project),
        "runs": len(runs),
        "run_inputs": sum(1 for r in db_rows(data_dir, "run_inputs") if r[0] in run_ids),
        "links": sum(1 for r in db_rows(data_dir, "links") if r[0] in run_ids),
    }


def audit_actions(data_dir: Path) -> list[str]:
    return [r[3] for r in db_rows(data_dir, "audit")]


def add_user(matcher: Matcher, admin_token: str, project: str, user: str) -> str:
    with matcher.member(admin_token) as admin:
        return admin.add_user(project, user)


def user_rows(data_dir: Path) -> list[tuple[str, str, str]]:
    """(project, member, name) of every named user the matcher still keeps."""
    return sorted((r[0], r[1], r[2]) for r in db_rows(data_dir, "users"))


def expiring_project(matcher: Matcher, clock: Clock, encoded: dict[str, Encoded]) -> ProjectTokens:
    with matcher.operator() as op:
        project = op.create_project(
            "short", ["north", "south"], expires_unix=int(clock.now + 2 * HOUR)
        )
    uploaded_and_run(matcher, project, encoded)
    assert len(clk_files(matcher.data_dir)) == 2
    assert project_rows(matcher.data_dir, "short")["links"] == 6
    return project


# -- expiry ---------------------------------------------------------------------------------


@pytest.mark.server
def test_the_sweep_deletes_expired_projects_data(
    tmp_path: Path, encoded: dict[str, Encoded]
) -> None:
    clock = Clock()
    matcher = start(tmp_path / "data", clock, sweep_interval=0.05)
    try:
        project = expiring_project(matcher, clock, encoded)
        with matcher.operator() as op:
            keep = op.create_project("long", ["north", "south"])  # the default: 180 days
        pc = add_user(matcher, project.tokens["north"], "short", "pc-4471")
        kept = add_user(matcher, keep.tokens["north"], "long", "pc-4471")
        with matcher.member(pc) as north:
            north.results("short")  # a disclosure the log names pc-4471 for
        clock.advance(3 * HOUR)
        deadline = time.monotonic() + 10
        while clk_files(matcher.data_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert clk_files(matcher.data_dir) == []
        assert project_rows(matcher.data_dir, "short") == dict.fromkeys(
            ("uploads", "runs", "run_inputs", "links"), 0
        )
        with (
            matcher.member(project.tokens["north"]) as north,
            pytest.raises(NotFoundError, match=r"'short' expired at .*deleted"),
        ):
            north.describe("short")
        with matcher.member(keep.tokens["north"]) as north:
            assert north.describe("long").project == "long"
        # Officers' names are personal data: the expired project's users went with its data
        # (the other project's stay); the log's entries naming them stay as they were.
        assert user_rows(matcher.data_dir) == [("long", "north", "pc-4471")]
        with matcher.member(pc) as north, pytest.raises(AuthError):
            north.describe("short")
        with matcher.member(kept) as north:
            assert north.describe("long").user == "pc-4471"
        expired = [r for r in db_rows(matcher.data_dir, "audit") if r[3] == "project.expire"]
        assert len(expired) == 1
        assert '"uploads": 2' in expired[0][8] and '"links": 6' in expired[0][8]
        assert '"users": 1' in expired[0][8]
        named = [r for r in db_rows(matcher.data_dir, "audit") if r[4] == "short" and r[11]]
        assert {(r[3], r[11]) for r in named} == {("results.disclose", "pc-4471")}
        with matcher.operator() as op, pytest.raises(RejectedError, match="already exists"):
            op.create_project("short", ["a", "b"])  # the name is not reused
    finally:
        matcher.server.stop(grace=None)


@pytest.mark.server
def test_an_expired_project_is_refused_before_the_sweep_comes(
    tmp_path: Path, encoded: dict[str, Encoded]
) -> None:
    clock = Clock()
    other = start(tmp_path / "other", clock)  # sweeps only hourly
    try:
        project = expiring_project(other, clock, encoded)
        clock.advance(3 * HOUR)
        with (
            other.member(project.tokens["north"]) as north,
            pytest.raises(NotFoundError, match="expired"),
        ):
            north.results("short")
        assert other.server.sweeper.sweep() == ["short"]
        assert clk_files(other.data_dir) == []
    finally:
        other.server.stop(grace=None)


@pytest.mark.server
def test_expired_data_is_deleted_at_start_up(tmp_path: Path, encoded: dict[str, Encoded]) -> None:
    clock = Clock()
    data = tmp_path / "data"
    matcher = start(data, clock)
    expiring_project(matcher, clock, encoded)
    matcher.server.stop(grace=None)

    clock.advance(3 * HOUR)
    matcher = start(data, clock)
    try:  # gone before the first request could be served
        assert clk_files(data) == []
        assert project_rows(data, "short")["links"] == 0
    finally:
        matcher.server.stop(grace=None)


@pytest.mark.server
def test_deleted_rows_leave_the_write_ahead_log(
    tmp_path: Path, encoded: dict[str, Encoded]
) -> None:
    clock = Clock()
    matcher = start(tmp_path / "data", clock)
    try:
        expiring_project(matcher, clock, encoded)
        clock.advance(3 * HOUR)
        matcher.server.sweeper.sweep()
        wal = tmp_path / "data" / "blindmatch.sqlite-wal"
        assert not wal.exists() or wal.stat().st_size == 0
    finally:
        matcher.server.stop(grace=None)


def test_an_expiry_must_lie_ahead(matcher: Matcher) -> None:
    with matcher.operator() as op, pytest.raises(RejectedError, match="expires_unix"):
        op.create_project("past", ["a", "b"], expires_unix=int(time.time()) - 10)


# -- parsing --expires-in -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"), [("12h", 12 * HOUR), ("90d", 90 * 24 * HOUR), ("2w", 14 * 24 * HOUR),
                          ("1y", 365 * 24 * HOUR), (" 3D ", 3 * 24 * HOUR)],
)  # fmt: skip
def test_expires_in_takes_a_duration(text: str, seconds: int) -> None:
    assert parse_expiry(text, now=1_000_000.0) == 1_000_000 + seconds


def test_expires_in_takes_a_utc_date() -> None:
    assert parse_expiry("2030-01-01", now=1_800_000_000) == 1893456000  # (now: 2027)


@pytest.mark.parametrize("text", ["0d", "soon", "90", "2001-01-01", "2030-13-01"])
def test_expires_in_refuses_nonsense(text: str) -> None:
    with pytest.raises(InputError, match="--expires-in"):
        parse_expiry(text)


@pytest.mark.parametrize("text", ["11y", "3660d", "2099-01-01"])
def test_expires_in_past_ten_years_is_a_usage_error(text: str) -> None:
    """It went to the matcher, which refused it in unix seconds (`expires_unix: 2427373826 is
    not between now and ten years from now`, exit 3)."""
    with pytest.raises(InputError, match=rf"--expires-in {text}: a project's data is kept at most"):
        parse_expiry(text)


def test_project_create_shows_the_expiry(
    matcher: Matcher, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", matcher.admin_token)
    args = ["project", "create", "dated", "--members", "a,b", "--expires-in", "2030-01-01",
            "--require-purpose", "--server", matcher.target]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "data deleted at 2030-01-01 00:00 UTC; results need --purpose" in out
    bad = ["project", "create", "bad", "--members", "a,b", "--expires-in", "yesterday"]
    assert main([*bad, "--server", matcher.target]) == 2
    assert "--expires-in 'yesterday': give a duration" in capsys.readouterr().err


# -- erasure by a member -------------------------------------------------------------------


def test_a_member_erases_its_uploads_and_results(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, project, encoded)
    files_before = clk_files(matcher.data_dir)
    pc = add_user(matcher, project.tokens["north"], "trial", "pc-4471")
    add_user(matcher, project.tokens["south"], "trial", "analyst-2")
    with matcher.member(pc) as north:
        north.upload("trial", encoded["north"])  # a second upload: both must go
    north_files = set(clk_files(matcher.data_dir)) - set(files_before)
    north_files |= {f for f in files_before if f.stem in _uploads_of(matcher, "north")}

    args = ["erase", "--project", "trial", "--token", project.tokens["north"]]
    # Nobody to ask (standard input is not a terminal) and no --yes: refused, nothing erased.
    assert main([*args, "--server", matcher.target, "--quiet"]) == 2
    assert "pass --yes to confirm" in capsys.readouterr().err
    assert _uploads_of(matcher, "north")
    assert main([*args, "--server", matcher.target, "--quiet", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "2 uploads, 6 result rows involving your records and 1 named user" in out
    # The user it counted is gone: its token no longer works.
    with matcher.member(pc) as gone, pytest.raises(AuthError):
        gone.describe("trial")

    remaining = set(clk_files(matcher.data_dir))
    assert remaining and not remaining & north_files  # south's upload stays, north's are gone
    assert _uploads_of(matcher, "north") == set()
    assert [r for r in db_rows(matcher.data_dir, "links") if "north" in (r[1], r[3])] == []
    with matcher.member(project.tokens["south"]) as south:
        assert south.results("trial").hits == []  # partners no longer learn about north
    with (
        matcher.member(project.tokens["north"]) as north,
        pytest.raises(RejectedError, match="holds no data of yours"),
    ):
        north.results("trial")
    erased = [r for r in db_rows(matcher.data_dir, "audit") if r[3] == "erase"]
    assert len(erased) == 1 and erased[0][2] == "north"
    assert '"uploads": 2' in erased[0][8] and '"users": 1' in erased[0][8]
    # North's officers' names went with its data (south's stay) and their tokens stop
    # working; the log's entries naming them stay as they were.
    assert user_rows(matcher.data_dir) == [("trial", "south", "analyst-2")]
    with matcher.member(pc) as north, pytest.raises(AuthError):
        north.describe("trial")
    uploads = [r for r in db_rows(matcher.data_dir, "audit") if r[3] == "upload" and r[11]]
    assert [(r[2], r[11]) for r in uploads] == [("north", "pc-4471")]

    with matcher.member(project.tokens["north"]) as north:  # and it may come back
        north.upload("trial", encoded["north"])
        run = north.start_run("trial")
        assert list(north.watch_run("trial", run.run_id))[-1].groups == 3


def _uploads_of(matcher: Matcher, member: str) -> set[str]:
    return {r[0] for r in db_rows(matcher.data_dir, "uploads") if r[2] == member}


def test_erasure_cancels_a_queued_run(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    for name, enc in encoded.items():
        with matcher.member(project.tokens[name]) as member:
            member.upload("trial", enc)
    run, _ = matcher.server.store.create_run("trial")  # queued, never handed to the runs
    with matcher.member(project.tokens["north"]) as north:
        assert north.erase("trial").uploads == 1  # it was refused until issue 16
        cancelled = north.watch_run("trial", run.id)
        assert [(r.state, r.message) for r in cancelled] == [("failed", ERASED_DURING_RUN)]
    assert len(clk_files(matcher.data_dir)) == 1
    failed = [r for r in db_rows(matcher.data_dir, "audit") if r[3] == "run.failed"]
    # The operator's entry names the member whose erasure cancelled it (members' do not:
    # tests/test_member_failure_words.py).
    assert len(failed) == 1 and '"erased_by": "north"' in failed[0][8]


@pytest.mark.server
def test_a_member_starting_runs_in_a_loop_cannot_hold_off_an_erasure(
    tmp_path: Path, matcher: Matcher, project: ProjectTokens
) -> None:
    """Issue 16: erasure was refused while any run was queued or running."""
    north_data, south_data = population(2, 4000, 0.5, seed=9)
    for name, data in (("north", north_data), ("south", south_data)):
        with matcher.member(project.tokens[name]) as member:
            member.upload("trial", write(data, tmp_path / f"{name}.encoded"))
    stop = threading.Event()
    started: list[str] = []

    def loop() -> None:
        with MatcherClient(matcher.target, project.tokens["south"], retry=NO_RETRY) as south:
            while not stop.is_set():
                try:
                    started.append(south.start_run("trial").run_id)
                    list(south.watch_run("trial", started[-1]))
                except RejectedError:  # north's data is gone: nothing left to run
                    time.sleep(0.01)

    looper = threading.Thread(target=loop)
    looper.start()
    try:
        deadline = time.monotonic() + 60
        while len(started) < 3:  # the loop is under way, a run always queued or running
            assert time.monotonic() < deadline, "the loop started no runs"
            time.sleep(0.01)
        with MatcherClient(matcher.target, project.tokens["north"], retry=NO_RETRY) as north:
            erased = north.erase("trial")  # at once: not refused, not retried
        assert erased.uploads == 1
    finally:
        stop.set()
        looper.join(timeout=60)
    matcher.server.runs.wait_for_change(0.5)
    deadline = time.monotonic() + 30  # a cancelled run still computing stores nothing
    while matcher.server.store.unfinished_runs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r for r in db_rows(matcher.data_dir, "links") if "north" in (r[1], r[3])] == []
    assert _uploads_of(matcher, "north") == set()
    with matcher.member(project.tokens["south"]) as south, pytest.raises(RejectedError):
        south.start_run("trial")  # waiting for north: its data is gone


def test_erasing_when_there_is_nothing_is_fine(matcher: Matcher, project: ProjectTokens) -> None:
    with MatcherClient(matcher.target, project.tokens["south"]) as south:
        erased = south.erase("trial")
    assert (erased.uploads, erased.links) == (0, 0)


def test_revoked_members_cannot_erase_or_read(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    uploaded_and_run(matcher, project, encoded)
    with matcher.operator() as op:
        op.revoke_token("trial", "north")
    with matcher.member(project.tokens["north"]) as north, pytest.raises(AuthError):
        north.erase("trial")
    with matcher.operator() as op:
        fresh = op.rotate_token("trial", "north")
    with matcher.member(fresh) as north:
        assert len(north.results("trial").hits) == 3  # its data stayed through the revocation


def _running(server: RunningServer) -> bool:
    return server.sweeper._thread.is_alive()


@pytest.mark.server
def test_the_sweeper_stops_with_the_server(tmp_path: Path) -> None:
    matcher = start(tmp_path / "data", Clock(), sweep_interval=0.01)
    assert _running(matcher.server)
    matcher.server.stop(grace=None)
    assert not _running(matcher.server)
