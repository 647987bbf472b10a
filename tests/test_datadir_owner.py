"""A server started on another server's data dir refuses to start (storage/dirowner.py):
the matcher (`serve`) on S1's, S1 on S2's or on the matcher's, the combiner role on S1's,
each naming whose dir it is and the command that serves it, leaving the dir as it was. Real
S1, S2 and matcher on loopback, each first on its own dir; a new or empty dir still starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from blindmatch.cli.app import main
from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.server import create_server
from tests.support import ADMIN_TOKEN

pytestmark = pytest.mark.server
PARTIES, MEMBERS = "the parties' key of this test", "the members' key of this test"
NOWHERE = "127.0.0.1:1"  # a peer never called: the roles here are only started


def _role(role: str, data_dir: Path) -> RunningRole:
    peers = {"s1": {"s2": NOWHERE}, "combiner": {"s1": NOWHERE, "s2": NOWHERE}}.get(role, {})
    return create_role(role, "127.0.0.1:0", PARTIES, MEMBERS, data_dir=data_dir, **peers)


def _files(root: Path) -> dict[str, list[str]]:
    return {d.name: sorted(p.name for p in d.iterdir()) for d in sorted(root.iterdir())}


@pytest.fixture
def dirs(tmp_path: Path) -> Path:
    """S1's, S2's and the matcher's data dirs, each made by its own server's start."""
    for running in (_role("s2", tmp_path / "s2"), _role("s1", tmp_path / "s1"),
                    create_server("127.0.0.1:0", tmp_path / "matcher", ADMIN_TOKEN)):  # fmt: skip
        running.stop(grace=None)
    for folder in tmp_path.rglob("*"):  # (before 2026-12-06 a role's batch folders took the
        if folder.is_dir():  # umask's mode: as under umask 077, so that no refusal of a dir
            folder.chmod(0o700)  # open to others hides this one on the old code)
    return tmp_path


def test_a_server_on_another_servers_data_dir_refuses_to_start_naming_whose_it_is(
    dirs: Path,
) -> None:
    before = _files(dirs)
    s1, s2, matcher = dirs / "s1", dirs / "s2", dirs / "matcher"
    for start, said in (
        (lambda: create_server("127.0.0.1:0", s1, ADMIN_TOKEN),
         f"{s1} is S1's data dir (it holds twoserver-s1-held.sqlite), not the matcher's: "
         f"started on it, the matcher would hold none of what is there. Serve it with "
         f"`blindmatch two-server role --role s1 --data-dir {s1}`, and give `blindmatch serve "
         "--data-dir` a folder of its own"),
        (lambda: _role("s1", s2),
         f"{s2} is S2's data dir (it holds twoserver-s2-held.sqlite), not S1's"),
        (lambda: _role("s2", matcher),
         f"{matcher} is the matcher's data dir (it holds blindmatch.sqlite), not S2's: started "
         f"on it, S2 would hold none of what is there. Serve it with `blindmatch serve "
         f"--data-dir {matcher}`, and give `blindmatch two-server role --role s2 --data-dir`"),
        (lambda: _role("combiner", s1), f"{s1} is S1's data dir"),
    ):  # fmt: skip
        with pytest.raises(StartupRefused) as refused:
            start().stop(grace=None)  # (the old code started, holding nothing)
        assert said in str(refused.value)
    assert _files(dirs) == before  # nothing written beside the other's files
    # Its own dir, and a new or empty one, start as before.
    (dirs / "empty").mkdir(mode=0o700)
    for running in (_role("s1", s1), _role("s2", dirs / "empty"),
                    create_server("127.0.0.1:0", matcher, ADMIN_TOKEN)):  # fmt: skip
        running.stop(grace=None)


def test_serve_on_s1s_data_dir_exits_2_naming_the_role_and_its_command(dirs: Path) -> None:
    env = {**os.environ, "BLINDMATCH_ADMIN_TOKEN": ADMIN_TOKEN}
    s1 = dirs / "s1"
    # (the timeout only guards the old code, which started and served on it)
    done = subprocess.run(
        [sys.executable, "-m", "blindmatch", "serve", "--data-dir", str(s1), "--listen",
         "127.0.0.1:0"], env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr.startswith(f"Error: {s1} is S1's data dir") and "Traceback" not in done.stderr
    )
    assert f"`blindmatch two-server role --role s1 --data-dir {s1}`" in done.stderr


def test_a_data_dir_given_as_a_file_is_refused_naming_it_not_the_listen_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    below = a_file / "s2"
    for data_dir, said in (
        (a_file, f"{a_file}: it is a file, not a folder"),
        (below, f"{below}: {a_file} is a file, not a folder"),
    ):
        with pytest.raises(StartupRefused, match="give `blindmatch two-server role --role s2"):
            _role("s2", data_dir).stop(grace=None)
        monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
        assert main(["serve", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0"]) == 2
        err = capsys.readouterr().err  # (it said `--listen 127.0.0.1:0: [Errno 20] ...`)
        assert err.startswith(f"Error: {said}; give `blindmatch serve --data-dir` a folder")
    assert a_file.read_text() == "x"
