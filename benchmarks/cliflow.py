"""Drive the documented CLI flow with real processes: serve, project create, encode,
upload, run, results. Used by the Febrl4 benchmark and its end-to-end test."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.ports import PortTaken, said_taken

BLINDMATCH = [sys.executable, "-m", "blindmatch"]
ROOT = Path(__file__).resolve().parent.parent


LOG_LINES = 10_000  # of the server's log kept in `Served.log`
# How long a server is given to exit after SIGTERM; one still running then is asked for its
# threads' stacks (SIGUSR1), killed, and reported with them.
STOP_SECONDS = 30


@dataclass
class Served:
    target: str
    admin_token: str
    process: subprocess.Popen[str]
    # The server's log (its stderr) since start-up, the latest LOG_LINES lines, read as it
    # comes by a thread of `serve`: a talkative server never blocks on a full pipe.
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))


def blindmatch(*args: str, env: dict[str, str] | None = None) -> str:
    """Run one CLI command; raise with its stderr if it fails."""
    done = subprocess.run(
        [*BLINDMATCH, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"blindmatch {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return done.stdout


@contextmanager
def serve(
    data_dir: Path, *extra: str, listen: str = "127.0.0.1:0", cpus: set[int] | None = None
) -> Iterator[Served]:
    """`blindmatch serve` on a free port (loopback unless `listen` says otherwise), with
    `extra` arguments (TLS files, say), on `cpus` only if given (as `taskset` would),
    stopped with SIGTERM afterwards."""
    admin = "bm_admin_" + secrets.token_urlsafe(16)
    with _started(
        [*BLINDMATCH, "serve", "--data-dir", str(data_dir), "--listen", listen, *extra],
        admin,
        cpus,
    ) as served:
        yield served


@contextmanager
def two_server_serve(workdir: Path) -> Iterator[Served]:
    """S2 and S1 as `blindmatch two-server role` processes (fresh combiner and members' keys,
    owner-only files in `workdir`), and a `blindmatch serve --two-server-s1/-s2 ...` matcher,
    their combiner, over `workdir`/matcher-data (docs/operations.md "A project in two-server
    mode"); all on free loopback ports, stopped in turn afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    keys = []
    for name in ("parties.key", "members.key"):
        keys.append(workdir / name)
        keys[-1].write_text(secrets.token_urlsafe(24) + "\n")
        keys[-1].chmod(0o600)
    role = [*BLINDMATCH, "two-server", "role", "--key-file", str(keys[0]), "--member-key-file",
            str(keys[1]), "--listen", "127.0.0.1:0"]  # fmt: skip
    with (
        _started([*role, "--role", "s2"], "", None) as s2,
        _started([*role, "--role", "s1", "--s2", s2.target], "", None) as s1,
        serve(workdir / "matcher-data", "--two-server-s1", s1.target, "--two-server-s2",
              s2.target, "--two-server-key-file", str(keys[0]),
              "--two-server-member-key-file", str(keys[1])) as matcher,
    ):  # fmt: skip
        yield matcher


@contextmanager
def lookup_server(
    data_dir: Path,
    shard: str,
    *extra: str,
    listen: str = "127.0.0.1:0",
    cpus: set[int] | None = None,
    key_file: Path | None = None,
) -> Iterator[Served]:
    """`blindmatch lookup-server --shard SHARD` (I/N) over the matcher's `data_dir`, as
    `serve` starts the matcher (its `admin_token` is unused); with `key_file` (a copy of
    the matcher's lookup.key), without a data dir, loaded by the matcher."""
    source = ["--key-file", str(key_file)] if key_file else ["--data-dir", str(data_dir)]
    with _started(
        [*BLINDMATCH, "lookup-server", *source, "--shard", shard, "--listen", listen, *extra],
        "",
        cpus,
    ) as served:  # fmt: skip
        yield served


@contextmanager
def _started(argv: list[str], admin: str, cpus: set[int] | None) -> Iterator[Served]:
    env = {**os.environ, "BLINDMATCH_ADMIN_TOKEN": admin}
    if cpus is not None:  # placed within `cpus` (a request CPU named outside them is refused)
        env.pop("BLINDMATCH_REQUEST_CPU", None)
    proc = subprocess.Popen(
        argv,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env=env,
        preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    port, taken = None, False
    what = " ".join(argv[len(BLINDMATCH) : len(BLINDMATCH) + 1])
    while port is None and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line and proc.poll() is not None:
            proc.stderr.close()
            if taken and proc.returncode == 2:  # (benchmarks/ports.py `on_free_ports` retries)
                raise PortTaken(f"blindmatch {what}: {' '.join(argv[len(BLINDMATCH) :])}")
            raise RuntimeError(f"blindmatch {what} exited {proc.returncode}")
        taken = taken or said_taken(line)
        if m := re.search(r"listening on [\d.]+:(\d+)", line):
            port = int(m.group(1))
    if port is None:
        proc.kill()
        raise RuntimeError(f"blindmatch {what} did not start within 60s")
    served = Served(f"127.0.0.1:{port}", admin, proc)
    err = proc.stderr
    reader = threading.Thread(target=lambda: served.log.extend(err), daemon=True)
    reader.start()
    try:
        yield served
    finally:
        proc.terminate()
        hung = False
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            hung = True
            # Every thread's stack (`serve_forever` registers SIGUSR1 with faulthandler),
            # into the log the reader keeps, then the kill.
            proc.send_signal(signal.SIGUSR1)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=2)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            reader.join(timeout=10)  # the pipe's end: the server (and its children) exited
            err.close()
        if hung:
            raise RuntimeError(
                f"blindmatch {what} did not exit within {STOP_SECONDS}s of SIGTERM (killed); "
                "its log's end, with its threads' stacks:\n" + "".join(list(served.log)[-300:])
            )


def link(
    served: Served,
    workdir: Path,
    project: str,
    members: dict[str, tuple[Path, Path]],
    schema: Path,
    *,
    disclose: str = "hits",
    threshold: float | None = None,
    secret_hex: str | None = None,
    mode: str | None = None,
) -> dict[str, Path]:
    """Run the whole member flow; returns each member's results CSV (under a fresh secret
    unless `secret_hex` is given). With `mode` (`clk` or `two-server`), the project is
    created in that mode; in `two-server` mode the members `encode --two-server`."""
    server = ["--server", served.target]
    extra = ["--threshold", str(threshold)] if threshold is not None else []
    extra += ["--mode", mode] if mode is not None else []
    two_server = ["--two-server"] if mode == "two-server" else []
    created = json.loads(
        blindmatch(
            "project", "create", project, "--members", ",".join(members),
            "--disclose", disclose, "--json", *extra, *server,
            env={"BLINDMATCH_ADMIN_TOKEN": served.admin_token},
        )
    )  # fmt: skip
    tokens = created["tokens"]
    secret = workdir / "linkage.secret"
    secret.write_text(secret_hex or secrets.token_hex(32))
    for name, (data, mapping) in members.items():
        out = workdir / f"{name}.encoded"
        blindmatch(
            "encode", str(data), "--schema", str(schema), "--secret-file", str(secret),
            "--mapping", str(mapping), "--out", str(out), "--quiet", *two_server,
        )  # fmt: skip
        blindmatch("upload", str(out), "--project", project, "--token", tokens[name], *server)
    first = next(iter(members))
    blindmatch("run", "--project", project, "--token", tokens[first], *server)
    results = {}
    for name in members:
        results[name] = workdir / f"{name}-hits.csv"
        blindmatch(
            "results", "--project", project, "--token", tokens[name],
            "--encoded", str(workdir / f"{name}.encoded"), "--out", str(results[name]), *server,
        )  # fmt: skip
    return results
