"""A port a server listens on is its own: a second server started on it is refused.

gRPC sets SO_REUSEPORT by default on Linux, so a second matcher (or look-up server, or
two-server role) started on a port a first one of the same user still listened on started
too, and the kernel shared the connections between the two: a client reached either, at
random (found walking docs/operations.md on loopback with the README's matcher still
running: `project create` was refused UNAUTHENTICATED by the other matcher, then not)."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks import ports
from benchmarks.erasure_start import Hung
from blindmatch.matcher.rpc import listen
from blindmatch.matcher.rpc.lookup_service import create_lookup_server
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage import dirlock
from blindmatch.matcher.storage.datadir import OPERATOR_TOKEN_NAME
from blindmatch.matcher.storage.shard_source import LOOKUP_KEY_NAME
from tests.portheld import said_taken, taken_port
from tests.support import ADMIN_TOKEN, ROOT, files_of, free_port


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


def _role_keys(folder: Path) -> list[str]:
    """A role's key file and the members' key file, owner-only, in `folder`."""
    keys = []
    for name in ("key", "member"):
        (folder / name).write_text(name * 11)
        (folder / name).chmod(0o600)
        keys.append(str(folder / name))
    return keys


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
    keys = _role_keys(tmp_path)
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
    keys = _role_keys(tmp_path)
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


@pytest.fixture
def taken_after_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """`127.0.0.1:PORT`, free when a server's start probes it (blindmatch/cli/options.py
    `refuse_taken_port`, the real probe) and taken by another listener at once after: the
    start's bind, after it has read or made its data dir, fails (the gap on a restart, the
    old server still letting the port go). The listener is real; the probe asked once more
    (after the bind failed) answers as it finds the port then."""
    listeners: list[socket.socket] = []
    probe = listen.port_in_use

    def probed_then_taken(host: str, port: int) -> bool:
        found = probe(host, port)
        if not listeners:  # (the first probe: the start's own, early one)
            assert not found, f"port {port} taken before the start (by a parallel test?)"
            listeners.append(socket.socket())
            listeners[0].bind((host, port))
            listeners[0].listen()
        return found

    monkeypatch.setattr(listen, "port_in_use", probed_then_taken)
    try:
        yield f"127.0.0.1:{free_port()}"
    finally:
        for held in listeners:
            held.close()


def _start(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """`main(argv)`, refused with exit 2: its last line on stderr."""
    from blindmatch.cli.app import main

    assert main(argv) == 2
    return capsys.readouterr().err.splitlines()[-1] + "\n"


def test_serve_whose_port_is_taken_after_its_probe_says_so_and_leaves_no_data_dir(
    tmp_path: Path,
    taken_after_probe: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Was: "could not listen on ... (is the port taken, or the address not this
    machine's?)": now the probe's own words, port and all (benchmarks/ports.py
    `said_taken`), the data dir this start made gone and its lock let go."""
    monkeypatch.setenv("BLINDMATCH_ADMIN_TOKEN", ADMIN_TOKEN)
    data = tmp_path / "new-data"
    said = _start(["serve", "--data-dir", str(data), "--listen", taken_after_probe], capsys)
    assert said == said_taken(taken_after_probe, "a matcher", data)
    assert ports.said_taken(said)
    assert not data.exists()


def test_serve_restarted_on_a_port_taken_after_its_probe_leaves_no_token_or_lock(
    tmp_path: Path,
    taken_after_probe: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A restart on a data dir an earlier run made: refused in the probe's words (the data
    dir not said to be left as it was: this start opened it), no operator.token written for
    a matcher that never listened, the data dir's lock let go (the next start is not
    refused as a second server)."""
    data = tmp_path / "data"
    create_server("127.0.0.1:0", data, ADMIN_TOKEN).stop(grace=None)
    monkeypatch.delenv("BLINDMATCH_ADMIN_TOKEN", raising=False)  # (a token would be made)
    said = _start(["serve", "--data-dir", str(data), "--listen", taken_after_probe], capsys)
    assert not (data / OPERATOR_TOKEN_NAME).exists()
    assert not [p.name for p in data.iterdir() if p.name.endswith(("-wal", "-shm"))]
    assert not dirlock.in_use(data)
    assert said == said_taken(taken_after_probe, "a matcher")


def test_a_role_whose_port_is_taken_after_its_probe_leaves_no_data_dir(
    tmp_path: Path, taken_after_probe: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: "could not listen on ...", and the role's data dir this start made (its audit
    log and key) left behind, half-made."""
    keys = _role_keys(tmp_path)
    data = tmp_path / "s2-data"
    said = _start(["two-server", "role", "--role", "s2", "--listen", taken_after_probe,
                   "--key-file", keys[0], "--member-key-file", keys[1], "--data-dir",
                   str(data)], capsys)  # fmt: skip
    assert not data.exists()
    assert said == said_taken(taken_after_probe, "a two-server role", data)


def test_a_lookup_server_whose_port_is_taken_after_its_probe_makes_no_lookup_key(
    tmp_path: Path, taken_after_probe: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: "could not listen on ...", and the matcher's data dir given a lookup.key by a
    look-up server that never listened (it made the key, then bound)."""
    data = tmp_path / "data"
    create_server("127.0.0.1:0", data, ADMIN_TOKEN).stop(grace=None)  # (no look-up servers)
    before = files_of(data)
    assert LOOKUP_KEY_NAME not in before
    said = _start(["lookup-server", "--data-dir", str(data), "--shard", "0/1", "--listen",
                   taken_after_probe], capsys)  # fmt: skip
    assert files_of(data) == before
    assert said == said_taken(taken_after_probe, "a look-up server", data)
