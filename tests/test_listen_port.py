"""A port a server listens on is its own: a second server started on it is refused.

gRPC sets SO_REUSEPORT by default on Linux, so a second matcher (or look-up server, or
two-server role) started on a port a first one of the same user still listened on started
too, and the kernel shared the connections between the two: a client reached either, at
random (found walking docs/operations.md on loopback with the README's matcher still
running: `project create` was refused UNAUTHENTICATED by the other matcher, then not)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import ports
from benchmarks.erasure_start import Hung
from blindmatch.matcher.rpc.lookup_service import create_lookup_server
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.server import create_server
from tests.portheld import said_taken, taken_port
from tests.support import ADMIN_TOKEN, ROOT


def test_a_second_server_on_a_port_in_use_is_refused(tmp_path: Path) -> None:
    first = create_server("127.0.0.1:0", tmp_path / "first", ADMIN_TOKEN)
    try:
        taken = f"127.0.0.1:{first.port}"
        with pytest.raises(OSError, match="could not listen on"):
            create_server(taken, tmp_path / "second", ADMIN_TOKEN).stop()
        with pytest.raises(OSError, match="could not listen on"):
            create_role("s2", taken, "k" * 43, "m" * 43).stop()
        with pytest.raises(OSError, match="could not listen on"):
            create_lookup_server(taken, None, 0, 1, key="k" * 43).stop()
    finally:
        first.stop()


def test_a_benchmarks_hung_server_on_a_port_in_use_is_refused() -> None:
    """benchmarks/erasure_start.py `Hung` (a server that takes every call and answers none,
    the tests' and benchmarks' stuck S2 or look-up server) bound with gRPC's default
    SO_REUSEPORT: a second one on its port listened too. It binds as the servers do."""
    first = Hung(0)
    try:
        with pytest.raises(OSError, match="could not listen on") as refused:
            Hung(first.port).close()
        assert ports.taken(refused.value)  # what a group started on picked ports retries on
    finally:
        first.close()


@pytest.mark.parametrize(
    ("role", "called"), [("s1", "S1 (blocking)"), ("s2", "S2 (shares)"), ("combiner", "combiner")]
)
def test_each_two_server_role_says_where_it_listens_in_one_plain_line(
    role: str,
    called: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`two-server role` started for real on a free port, and stopped at its ready cue (in
    place of waiting for a signal). The combiner's line read "blindmatch two-server the
    combiner listening on ..."."""
    from blindmatch.cli.app import main
    from blindmatch.matcher import server

    def announce_then_stop(running: server.Stoppable, ready: Any = None) -> None:
        ready()
        running.stop(grace=None)

    monkeypatch.setattr(server, "serve_forever", announce_then_stop)
    keys = []
    for name in ("key", "member"):
        (tmp_path / name).write_text(name * 11)
        (tmp_path / name).chmod(0o600)
        keys.append(str(tmp_path / name))
    peers = {"s1": ["--s2", "127.0.0.1:1"], "s2": [],
             "combiner": ["--s1", "127.0.0.1:1", "--s2", "127.0.0.1:1"]}[role]  # fmt: skip
    assert main(["two-server", "role", "--role", role, "--listen", "127.0.0.1:0", "--key-file",
                 keys[0], "--member-key-file", keys[1], *peers]) == 0  # fmt: skip
    line = capsys.readouterr().err.splitlines()[-1]
    assert re.fullmatch(rf"blindmatch two-server {re.escape(called)} listening on "
                        r"127\.0\.0\.1:\d+", line), line  # fmt: skip


@pytest.mark.parametrize("data_dir", [True, False])
def test_a_two_server_role_on_a_port_in_use_says_so_and_makes_no_data_dir(
    tmp_path: Path, data_dir: bool
) -> None:
    """Was: the role's data dir made (its audit log and key, what it holds), then gRPC's own
    line (`E1207 ... add_port.cc:83] Failed to add port ...`) and "could not listen": as
    `serve`, said before anything is made."""
    keys = []
    for name in ("key", "member"):
        (tmp_path / name).write_text(name * 11)
        (tmp_path / name).chmod(0o600)
        keys.append(str(tmp_path / name))
    data = tmp_path / "s2-data"
    with taken_port() as listen:
        done = subprocess.run(
            [sys.executable, "-m", "blindmatch", "two-server", "role", "--role", "s2",
             "--listen", listen, "--key-file", keys[0], "--member-key-file", keys[1],
             *(["--data-dir", str(data)] if data_dir else [])],
            capture_output=True, text=True, cwd=ROOT, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr == said_taken(listen, "a two-server role", data if data_dir else None)
    assert not data.exists()
