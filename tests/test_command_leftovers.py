"""The commands that make a temporary folder or file (`query`, `privacy-check`, `encode`,
`evaluate`, `results`, `report`, `request`, `audit export` and `report`, `user add`,
`project create` and `rotate-token`, the `secret` commands; `demo` in
test_demo_leftovers.py; `serve`'s operator token, at its stop) leave nothing
behind when a SIGTERM (`kill`, `timeout`, a service manager's stop) ends them part-way: as
at Ctrl-C, their `with TemporaryDirectory` and `except BaseException` clean-ups run, and they
exit 143 saying "Terminated." Before, SIGTERM's default action ended the process on the spot
and left the folder (the synthetic exports, a person's one-row CSV, a half-written ENCODED
folder) or the file written beside --out before it is renamed into place (client/files.py).

The process is each time the command itself, in a process of its own with a TMPDIR of its
own, signalled once its folder exists (waited on, not slept on). Where that folder lives
for milliseconds only (query, encode, evaluate), the step after its making is held (a
stand-in that sleeps until the signal) so that the signal comes while it exists; where
the command makes nothing to wait on (`request` for one record), the stand-in makes a file
that says it is there (HELD_AT)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from blindmatch.client import ProjectTokens
from tests.support import (
    NORTH_CSV,
    NORTH_MAP,
    PERSON_SCHEMA,
    ROOT,
    STRONG_SECRET,
    Matcher,
    Org,
    encode_all,
    uploaded_and_run,
)

pytestmark = pytest.mark.slow  # each a CLI command in a process of its own

TERMINATED = 128 + signal.SIGTERM

# `main` run with one function replaced by a wait for the signal (the step after the
# folder's making: it exists while this waits); with HELD_ON, only a call whose first
# argument names it waits (`serve` renames a file into place before its token's). The wait
# is in short sleeps: the kernel may hand SIGTERM to another thread of the process (gRPC's),
# and then Python runs its handler only when the main thread's sleep ends (a sleep(60) made
# a test wait the whole minute, 61 s in a whole-suite run, where it took 1-2 s when the
# signal came to the main thread).
HELD = """
import importlib, os, sys, time
module, name = sys.argv[1], sys.argv[2]
original = getattr(importlib.import_module(module), name)
def held(*args, **kwargs):
    if os.environ.get("HELD_ON", "") not in (str(args[0]) if args else ""):
        return original(*args, **kwargs)
    if module.endswith(".evaluate"):
        import matplotlib.pyplot  # (its temporary config folder, where it makes one)
    if "HELD_AT" in os.environ:
        open(os.environ["HELD_AT"], "x").close()
    while True:
        time.sleep(0.05)
setattr(importlib.import_module(module), name, held)
from blindmatch.cli.app import main
sys.exit(main(sys.argv[3:]))
"""


def _terminated(
    command: list[str],
    tmp: Path,
    appeared: Callable[[], bool],
    env: dict[str, str] | None = None,
    signum: signal.Signals = signal.SIGTERM,
) -> tuple[int, str]:
    """Run `command`, wait until `appeared()` (and, for a command run through `HELD`, until
    its stand-in holds: the signal is never sent while the step that made the folder is still
    setting up its clean-up, which matplotlib registers just after making its own), send
    `signum`: its exit status and stderr."""
    env = {**os.environ, "TMPDIR": str(tmp), **(env or {})}
    made_marker = HELD in command and "HELD_AT" not in env
    if made_marker:
        fd, marker = tempfile.mkstemp(prefix="blindmatch-held-")
        os.close(fd)
        os.unlink(marker)  # (the stand-in makes it, exclusively, once it holds)
        env["HELD_AT"] = marker
    holding = Path(env["HELD_AT"]).exists if HELD in command else lambda: True
    proc = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        while not (appeared() and holding()):
            assert proc.poll() is None, proc.communicate()[1]
            if HELD in command:  # (the hold lasts: no need to spin a CPU the process needs)
                time.sleep(0.01)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
        if made_marker:
            Path(env["HELD_AT"]).unlink(missing_ok=True)
    return proc.returncode, err


def _assert_ended(code: int, err: str) -> None:
    assert code == TERMINATED, err
    assert "Terminated." in err and "Traceback" not in err


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


@pytest.fixture
def person_files(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A secret, a small export and its mapping."""
    secret = tmp_path / "linkage.secret"
    secret.write_text(STRONG_SECRET + "\n")
    export = tmp_path / "north.csv"
    export.write_text(NORTH_CSV)
    mapping = tmp_path / "north.toml"
    mapping.write_text(NORTH_MAP)
    return secret, export, mapping


def test_a_privacy_check_ended_by_sigterm_leaves_no_folder_in_the_temp_dir(
    tmp: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code, err = _terminated(
        [sys.executable, "-m", "blindmatch", "privacy-check", "--records", "1000",
         "--graph-records", "200", "--seed", "3", "--out", str(out)],
        tmp, lambda: any(tmp.glob("blindmatch-privacy-*")),
    )  # fmt: skip
    _assert_ended(code, err)
    assert list(tmp.iterdir()) == []
    assert not out.exists()


# `main` run with tempfile.mkdtemp held just after it made matplotlib's config folder, where
# matplotlib has none it can write: its own (`matplotlib-*`, whose removal it registers only
# after mkdtemp returns) or ours (cli/plotconfig.py's, made before matplotlib is imported).
# The stand-in says it holds (HELD_AT) and waits until GO_ON exists (made after the signal).
IN_MKDTEMP = """
import os, sys, tempfile, time
made = tempfile.mkdtemp
def held(suffix=None, prefix=None, dir=None):
    path = made(suffix, prefix, dir)
    if str(prefix).startswith(("matplotlib-", "blindmatch-matplotlib-")):
        open(os.environ["HELD_AT"], "x").close()
        while not os.path.exists(os.environ["GO_ON"]):
            time.sleep(0.01)
    return path
tempfile.mkdtemp = held
from blindmatch.cli.app import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_privacy_check_ended_by_sigterm_as_matplotlibs_config_folder_is_made_leaves_none(
    tmp: Path, tmp_path: Path
) -> None:
    """MPLCONFIGDIR under a file: matplotlib's import would make a temporary config folder
    and register its removal only after; the SIGTERM lands just after the folder's making
    (before: matplotlib's own, left behind). Now the command makes it before importing
    matplotlib, the signal held off until its clean-up holds it: gone, exit 143."""
    held_at, go_on, out = tmp_path / "held", tmp_path / "go-on", tmp_path / "out"
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    env = {**os.environ, "TMPDIR": str(tmp), "MPLCONFIGDIR": str(a_file / "mpl"),
           "HELD_AT": str(held_at), "GO_ON": str(go_on)}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-c", IN_MKDTEMP, "privacy-check", "--records", "200",
         "--graph-records", "0", "--seed", "3", "--out", str(out)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        while not held_at.is_file():
            assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGTERM)
        go_on.touch()
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    _assert_ended(proc.returncode, err)
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize(
    "signum, code, said",
    [(signal.SIGTERM, TERMINATED, "Terminated."), (signal.SIGINT, 130, "Interrupted.")],
    ids=["sigterm", "ctrl-c"],
)
def test_a_query_ended_by_sigterm_or_ctrl_c_leaves_no_folder_in_the_temp_dir(
    tmp: Path, person_files: tuple[Path, Path, Path], signum: signal.Signals, code: int, said: str
) -> None:
    secret, _, _ = person_files
    ended, err = _terminated(
        [sys.executable, "-c", HELD, "blindmatch.client.encoding.person", "encode_csv",
         "query", "--server", "localhost:1", "--project", "trial", "--token", "t",
         "--schema", str(PERSON_SCHEMA), "--secret-file", str(secret), "--purpose", "case 1",
         "--surname", "Hughes", "--given-name", "Grace"],
        tmp, lambda: any(tmp.glob("blindmatch-query-*/query.csv")), signum=signum,
    )  # fmt: skip
    assert (ended, said in err, "Traceback" in err) == (code, True, False), err
    assert list(tmp.iterdir()) == []


def test_a_query_that_fails_leaves_no_folder_in_the_temp_dir(
    tmp: Path, person_files: tuple[Path, Path, Path]
) -> None:
    """(Its error exit: nothing listens at its address, after the person was encoded.)"""
    secret, _, _ = person_files
    done = subprocess.run(
        [sys.executable, "-m", "blindmatch", "query", "--server", "127.0.0.1:1", "--project",
         "trial", "--token", "t", "--schema", str(PERSON_SCHEMA), "--secret-file", str(secret),
         "--purpose", "case 1", "--surname", "Hughes"],
        cwd=ROOT, env={**os.environ, "TMPDIR": str(tmp)}, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 4, done.stderr
    assert list(tmp.iterdir()) == []


def test_an_encode_ended_by_sigterm_leaves_no_half_written_folder(
    tmp: Path, tmp_path: Path, person_files: tuple[Path, Path, Path]
) -> None:
    secret, export, mapping = person_files
    before = sorted(tmp_path.iterdir())
    out = tmp_path / "north.encoded"
    code, err = _terminated(
        [sys.executable, "-c", HELD, "blindmatch.client.encoding.encoded", "_fsync_write",
         "encode", str(export), "--schema", str(PERSON_SCHEMA), "--mapping", str(mapping),
         "--secret-file", str(secret), "--out", str(out)],
        tmp, lambda: any(tmp_path.glob(".north.encoded.*/local")),
    )  # fmt: skip
    _assert_ended(code, err)
    assert sorted(tmp_path.iterdir()) == before  # no `.north.encoded.*`, no north.encoded
    assert list(tmp.iterdir()) == []


def test_an_evaluate_ended_by_sigterm_leaves_no_folder_in_the_temp_dir(
    tmp: Path, tmp_path: Path
) -> None:
    """With no config folder of its own to write (here: MPLCONFIGDIR under a file),
    matplotlib made a temporary one that it deleted at exit: a SIGTERM left it. The command
    now makes that folder itself before matplotlib is imported (cli/plotconfig.py), and
    deletes it at the SIGTERM."""
    results, truth = tmp_path / "hits.csv", tmp_path / "truth.csv"
    results.write_text("record_id,partner,partner_ref\n")
    truth.write_text("member,record_id,entity_id\n")
    code, err = _terminated(
        [sys.executable, "-c", HELD, "blindmatch.client.tools.evaluate", "evaluate_files",
         "evaluate", "--results", str(results), "--truth", str(truth)],
        tmp, lambda: any(tmp.glob("blindmatch-matplotlib-*")),
        env={"MPLCONFIGDIR": str(results / "mpl")},
    )  # fmt: skip
    _assert_ended(code, err)
    assert list(tmp.iterdir()) == []


@pytest.fixture
def north(
    matcher: Matcher, project: ProjectTokens, orgs: dict[str, Org], tmp_path: Path
) -> list[str]:
    """north's options at a matcher whose run found its record N1 at south."""
    uploaded_and_run(matcher, project, encode_all(orgs, tmp_path))
    encoded = str(tmp_path / "north.encoded")
    return ["--server", matcher.target, "--project", project.project,
            "--token", project.tokens["north"], "--encoded", encoded]  # fmt: skip


@pytest.mark.parametrize(
    "command, old",
    [(["results"], b"record_id,partner\n"), (["results"], None), (["report"], b"<html>\n"),
     (["request", "--hits", "HITS", "--force"], b"record_id,partner,reference\n")],
    ids=["results", "results-anew", "report", "request-hits"],
)  # fmt: skip
def test_a_command_writing_out_ended_by_sigterm_leaves_the_old_file_and_no_temporary_one(
    tmp: Path, tmp_path: Path, north: list[str], command: list[str], old: bytes | None
) -> None:
    """Held with the new file written whole beside --out, not yet renamed into place
    (`request --hits` replaces an --out there only with --force since clileft)."""
    hits = tmp_path / "hits.csv"
    hits.write_text("record_id,partner\nN1,south\n")
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "written"
    if old is not None:
        out.write_bytes(old)
    code, err = _terminated(
        [sys.executable, "-c", HELD, "os", "replace",
         *[str(hits) if a == "HITS" else a for a in command], "--out", str(out), *north],
        tmp, lambda: any(folder.glob(".written.*")),
    )  # fmt: skip
    _assert_ended(code, err)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == (
        {} if old is None else {"written": old}
    )  # the old file as it was, or none; never a half-written one, nor the temporary file
    assert list(tmp.iterdir()) == []


def test_a_request_for_one_record_ended_by_sigterm_exits_as_terminated(
    tmp: Path, tmp_path: Path, north: list[str]
) -> None:
    """(It writes no file: its references are printed.)"""
    there = tmp_path / "held"
    code, err = _terminated(
        [sys.executable, "-c", HELD, "blindmatch.client.requests", "rows_of",
         "request", "--record-id", "N1", *north],
        tmp, there.exists, env={"HELD_AT": str(there)},
    )  # fmt: skip
    _assert_ended(code, err)
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize(
    "command, written, old, said",
    [(["audit", "export", "--out", "OUT"], "written", b'{"seq": 1}\n', ""),
     (["audit", "report", "--format", "csv", "--out", "OUT"], "written", None, ""),
     (["user", "add", "pc-1", "--out", "OUT"], "written", None,
      "User pc-1 was added but"),
     (["project", "create", "other", "--members", "north,south", "--tokens-dir", "DIR"],
      "north.token", None, "Token files not written for north, south"),
     (["project", "rotate-token", "trial", "--member", "south", "--tokens-dir", "DIR"],
      "south.token", b"bm_old\n", "Token files not written for south")],
    ids=["audit-export", "audit-report", "user-add", "project-create", "rotate-token"],
)  # fmt: skip
def test_a_command_writing_a_token_or_audit_file_ended_by_sigterm_leaves_no_temporary_one(
    tmp: Path, tmp_path: Path, matcher: Matcher, project: ProjectTokens,
    command: list[str], written: str, old: bytes | None, said: str,
) -> None:  # fmt: skip
    """Held with the new file written whole beside its target, not yet renamed into place:
    before, SIGTERM's default action left it there (and the process ended by the signal).
    A token the matcher issued but no file holds is said, with how to get a new one."""
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / written
    if old is not None:
        target.write_bytes(old)
    member = ["--project", project.project, "--token", project.tokens["north"]]
    code, err = _terminated(
        [sys.executable, "-c", HELD, "os", "replace",
         *[{"OUT": str(target), "DIR": str(folder)}.get(a, a) for a in command],
         "--server", matcher.target, *(member if command[0] in ("audit", "user") else [])],
        tmp, lambda: any(folder.glob(f".{written}.*")),
        env={"BLINDMATCH_ADMIN_TOKEN": matcher.admin_token},
    )  # fmt: skip
    _assert_ended(code, err)
    assert said in err
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == (
        {} if old is None else {written: old}
    )  # the old file as it was, or none; never a half-written one, nor the temporary file
    assert list(tmp.iterdir()) == []


def test_serve_stopped_by_sigterm_while_writing_its_operator_token_leaves_no_temporary_file(
    tmp: Path, tmp_path: Path
) -> None:
    """Its SIGTERM stop (exit 0), before it served: the token file absent, not left half
    written nor beside its temporary file (before, the signal's default action ended it
    there, exit -15, and left the temporary file in the data dir)."""
    data = tmp_path / "data"
    code, err = _terminated(
        [sys.executable, "-c", HELD, "os", "replace",
         "serve", "--data-dir", str(data), "--listen", "127.0.0.1:0"],
        tmp, lambda: any(data.glob(".operator.token.*")),
        env={"BLINDMATCH_ADMIN_TOKEN": "", "HELD_ON": ".operator.token."},  # (serve makes one)
    )  # fmt: skip
    assert code == 0, err
    assert "Traceback" not in err
    assert not list(data.glob("*operator.token*"))
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize(
    "command, written",
    [(["secret", "new", "OUT"], "written"),
     (["secret", "keygen", "--private", "OUT", "--public", "DIR/written.pub", "--label", "s"],
      "written"),
     (["secret", "keygen", "--private", "DIR/k", "--public", "OUT", "--label", "s"], "written"),
     (["secret", "seal", "--secret-file", "SECRET", "--to", "PUBLIC", "--out", "OUT"], "written"),
     (["secret", "open", "SEALED", "--key", "PRIVATE", "--out", "OUT"], "written")],
    ids=["new", "keygen-private", "keygen-public", "seal", "open"],
)  # fmt: skip
def test_a_secret_command_ended_by_sigterm_leaves_no_file_half_written_nor_temporary(
    tmp: Path, tmp_path: Path, person_files: tuple[Path, Path, Path], command: list[str],
    written: str,
) -> None:  # fmt: skip
    """Held with the new file written whole beside its target, not yet linked into place:
    before, the target itself was made first and written after, and SIGTERM's default
    action could leave it empty or half written (a second try refused to replace it).
    keygen's two files are a pair: one alone is deleted."""
    from blindmatch.client.encoding.sharedsecret import keygen, read_public, seal

    secret, _, _ = person_files
    keys = tmp_path / "keys"
    keys.mkdir()
    pair = keygen(keys / "south.key", keys / "south.pub", "south")
    sealed = keys / "for-south.sealed"
    sealed.write_bytes(seal(STRONG_SECRET.encode(), *read_public(pair.public)))
    folder = tmp_path / "out"
    folder.mkdir()
    given = {"OUT": str(folder / written), "SECRET": str(secret), "PUBLIC": str(pair.public),
             "PRIVATE": str(pair.private), "SEALED": str(sealed)}  # fmt: skip
    code, err = _terminated(
        [sys.executable, "-c", HELD, "os", "link",
         *[given.get(a, a.replace("DIR", str(folder))) for a in command]],
        tmp, lambda: any(folder.glob(f".{written}.*")), env={"HELD_ON": f".{written}."},
    )  # fmt: skip
    _assert_ended(code, err)
    assert list(folder.iterdir()) == []  # neither file: not the target, nor its pair's
    assert list(tmp.iterdir()) == []


def test_an_index_add_ended_by_sigterm_as_it_makes_its_ref_key_leaves_none(
    tmp: Path, tmp_path: Path, north: list[str]
) -> None:
    """Held with the new key written whole beside its place, not yet linked there: before,
    the key file was made first and written after, and SIGTERM's default action could
    leave it empty ("too short to be a ref key" at every later `index add` or `sync`)."""
    folder = tmp_path / "keys"
    folder.mkdir()
    code, err = _terminated(
        [sys.executable, "-c", HELD, "os", "link",
         "index", "add", *north[-1:], *north[:-2], "--ref-key", str(folder / "north.refkey")],
        tmp, lambda: any(folder.glob(".north.refkey.*")), env={"HELD_ON": ".north.refkey."},
    )  # fmt: skip
    _assert_ended(code, err)
    assert list(folder.iterdir()) == []
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize(
    "dask, held_on", [(False, "server.pem"), (True, "dask-worker.pem")], ids=["trial", "dask"]
)
def test_certs_ended_by_sigterm_part_way_leaves_no_certificate_nor_its_folder(
    tmp: Path, tmp_path: Path, dask: bool, held_on: str
) -> None:
    """Held with the CA's files written and the next one written whole beside its place:
    before, SIGTERM's default action left the CA's files (and the one being written,
    perhaps half), beside which a second try refused to write."""
    out = tmp_path / "certs"
    code, err = _terminated(
        [sys.executable, "-c", HELD, "os", "link",
         "certs", "--out", str(out), *(["--dask"] if dask else [])],
        tmp, lambda: any(out.glob(f".{held_on}.*")), env={"HELD_ON": f".{held_on}."},
    )  # fmt: skip
    _assert_ended(code, err)
    assert not out.exists()  # made by it: gone with its files
    assert list(tmp.iterdir()) == []
