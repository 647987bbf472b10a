"""Shared fixtures (a real matcher on a free loopback port, small member inputs) and the
test tiers. Everything else the tests share is in tests/support.py.

Three tiers, each test in one, so that `make test-fast` runs the first two in under a
minute and `make test` (what CI runs) runs all three:

    unit     the pure core and local files: no server (every test not in another tier)
    server   against a real matcher in this process (a test that uses a fixture in
             SERVER_FIXTURES, or is marked `server` because it starts its own)
    slow     end to end through separate processes (`blindmatch serve`, the CLI, a fresh
             venv, a browser, a Dask cluster), or on benchmark-sized data (marked `slow`,
             or using a fixture in SLOW_FIXTURES)

    pytest -m unit | -m server | -m "not slow" | -m slow
"""

from __future__ import annotations

import fcntl
import gc
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks import realclks
from benchmarks.messy import ORGS, write_exports
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.matcher.core import exhaustive
from blindmatch.matcher.placement import REQUEST_CPU_ENV
from blindmatch.matcher.server import create_server
from tests.support import (
    ADMIN_TOKEN,
    FALLBACK_SCHEMA,
    MESSY_SECRET,
    NORTH_CSV,
    NORTH_MAP,
    SOUTH_CSV,
    SOUTH_MAP,
    STRONG_SECRET,
    Matcher,
    Org,
)

# Fixtures that start a matcher in this process (a test using one is in the server tier).
SERVER_FIXTURES = {"matcher", "strict_matcher", "tls_server", "mtls_server", "world"}
# Fixtures that start other processes (a test using one is in the slow tier).
SLOW_FIXTURES = {"cluster"}


@pytest.fixture(autouse=True)
def _block_every_pair(monkeypatch: pytest.MonkeyPatch) -> None:
    """S1 blocks every pair of members unless a test gives it a cap (matcher/core/exhaustive.py
    `DEFAULT_PAIRS`, 0 here): the suite's members of 1,000 records would otherwise go through
    the circuit whole, 10^6 pairs each, and its tests of blocking would test nothing. The
    tests of unblocked pairs set the cap (tests/test_twoserver_exhaustive.py)."""
    monkeypatch.setattr(exhaustive, "DEFAULT_PAIRS", 0)
    monkeypatch.setattr(exhaustive, "DEFAULT_SMALL_PAIRS", 0)  # and no smaller-member cap
    # and so every query against a partner is over S1's bounds: its band keys asked for, as
    # under `--query-band-keys allow` (the tests of the shipped "refuse" give it:
    # tests/test_query_whole_pairs.py)
    monkeypatch.setattr(exhaustive, "DEFAULT_QUERY_BAND_KEYS", "allow")


# Where the suite writes (every tmp_path, and through TMPDIR every process and tempfile it
# starts): a RAM filesystem when the host has one with room, unless TMPDIR or --basetemp says
# otherwise. Nearly every server test makes a data dir whose SQLite files are created and
# fsynced; on the 2-core host's disk a matcher's start took ~230 ms of wall time, on tmpfs
# ~20 ms (docs/architecture.md, "Tests and their run time"). A kill -9 loses nothing of either
# (the page cache outlives the process), so the crash tests test the same thing.
RAM_TMP = Path("/dev/shm")
RAM_TMP_FREE = 4 * 1024**3  # a whole run peaks far below this; a small /dev/shm is not used
# Within that place, TMPDIR is a folder of the run's own (RUN_TMP-PID-XXXXXXXX), deleted when
# the run ends: what a test's process or tempfile leaves there (a `tempfile.mkdtemp()` a
# benchmark made and was killed before it deleted, a `pip` build folder, the bytecode below)
# goes with it, in RAM too. pytest's own folders (pytest-of-USER: a failing test's
# tmp_path, kept until the next run, pyproject.toml `tmp_path_retention_count`) stay beside
# it (PYTEST_DEBUG_TEMPROOT). A run killed before its end leaves its folder: the next run
# deletes those whose process is gone.
RUN_TMP = "blindmatch-tests"
_made: list[Path] = []  # the run's folder, deleted at the end by the process that made it


def _tmp_in_ram(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return  # a worker: the controller's choice is in its TMPDIR
    root = os.environ.get("TMPDIR")
    if not root and not config.option.basetemp:
        try:
            if os.access(RAM_TMP, os.W_OK) and shutil.disk_usage(RAM_TMP).free >= RAM_TMP_FREE:
                root = str(RAM_TMP)
        except OSError:
            pass
    tempfile.tempdir = None
    root = root or tempfile.gettempdir()
    _delete_dead_runs(Path(root))
    try:
        run = Path(tempfile.mkdtemp(prefix=f"{RUN_TMP}-{os.getpid()}-", dir=root))
    except OSError:
        return
    _made.append(run)
    os.environ.setdefault("PYTEST_DEBUG_TEMPROOT", root)
    os.environ["TMPDIR"] = str(run)
    tempfile.tempdir = None  # gettempdir() reads TMPDIR again


def _delete_dead_runs(root: Path) -> None:
    """The folders of earlier runs (this user's) whose process is gone: killed before its end."""
    for folder in root.glob(f"{RUN_TMP}-*-*"):
        pid = folder.name.split("-")[2]
        try:
            if not pid.isdigit() or folder.stat().st_uid != os.getuid():
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue


# Compiled bytecode, where the environment says not to write it (PYTHONDONTWRITEBYTECODE, as
# in the CI and helper containers): every process the suite starts (`blindmatch` commands,
# `serve`, benchmarks; hundreds) compiled the project's modules from source again (~0.25 s of
# CPU each), and each xdist worker rewrote and compiled every test module's asserts (~6 s).
# Bytecode is then written, but only under the run's temp folder (PYTHONPYCACHEPREFIX), not
# beside the sources, and it goes with that folder at the run's end: the first process of a
# run compiles, the rest read. Kept between runs, one folder for every checkout and venv on
# the host, it grew without bound (224 MB in /dev/shm); a run that compiles its own costs
# ~2 s more CPU than one that finds it all compiled, and saves ~18 s against none (three
# process-heavy files, docs/architecture.md "Tests and their run time"). A prefix already
# given is kept.
PYCACHE = "pycache"


def _bytecode_in_tmp() -> None:
    if not sys.flags.dont_write_bytecode or os.environ.get("PYTHONPYCACHEPREFIX") or not _made:
        return
    prefix = str(_made[0] / PYCACHE)
    try:
        os.mkdir(prefix, mode=0o700)
    except OSError:
        return
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # for the workers and every process
    os.environ["PYTHONPYCACHEPREFIX"] = prefix
    sys.dont_write_bytecode = False  # and this process: both are read at each import
    sys.pycache_prefix = prefix


ON_DISK = Path("/var/tmp")  # (a test marked `on_disk`; where there is none, the temp dir)


@pytest.fixture
def tmp_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """pytest's own, in RAM where `_tmp_in_ram` put it, but on the disk for a test marked
    `on_disk`: one that kills a process to check what its files hold, or runs churn beside an
    operation to catch a race, whose windows are as wide as the disk's writes are slow.
    tests/test_twoserver_backup_churn.py's stress test caught the old backup (its two files
    read one after the other) in 3 runs of 4 on the host's disk and in 0 of 5 on tmpfs."""
    if not (request.node.get_closest_marker("on_disk") and tmp_path.is_relative_to(RAM_TMP)):
        yield tmp_path
        return
    disk = Path(
        tempfile.mkdtemp(prefix="blindmatch-test-", dir=ON_DISK if ON_DISK.is_dir() else None)
    )
    try:
        yield disk
    finally:
        shutil.rmtree(disk, ignore_errors=True)


def _ctrl_c_as_at_a_terminal() -> None:
    """Python's own Ctrl-C (KeyboardInterrupt) where the run was started with SIGINT ignored:
    a shell without job control starts a background job so (`make test &` in a script, or
    under nohup in one), every process inherits it, and the tests that Ctrl-C a command or
    their own main thread (tests/test_watch_cli.py, test_twoserver_interrupted.py ...) sent
    a signal nobody took: seven failed, after up to 300 s each (pytest-timeout), 14 minutes
    of one run's 20. A process that sets a handler of its own passes SIG_DFL on to what it
    starts, and Python puts its KeyboardInterrupt there."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_configure(config: pytest.Config) -> None:
    """The suite's temporary files in RAM where there is room (`_tmp_in_ram`), its bytecode
    there too where none is written beside the sources (`_bytecode_in_tmp`), Ctrl-C as at a
    terminal (`_ctrl_c_as_at_a_terminal`). Each xdist
    worker's matchers (in this process and the `serve` processes it starts) keep their
    request threads on a CPU of the worker's own: all on the lowest CPU, the workers'
    matchers queued behind each other there (matcher/placement.py)."""
    _tmp_in_ram(config)
    _bytecode_in_tmp()
    _ctrl_c_as_at_a_terminal()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit() and hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        os.environ.setdefault(REQUEST_CPU_ENV, str(cpus[int(worker[2:]) % len(cpus)]))


def pytest_unconfigure(config: pytest.Config) -> None:
    """The run's temp folder (`_tmp_in_ram`) deleted, with what its tests left in it."""
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)


# Every FREEZE_EVERY tests a worker collects its garbage and moves what is still alive out of
# the collector's generations (gc.freeze): what earlier tests left alive (imported modules,
# session fixtures, caches) grows to millions of objects late in the suite, and every full
# collection, automatic or a test's own, walked them all again (seconds each).
FREEZE_EVERY = 50
_finished = 0


def pytest_runtest_logfinish(nodeid: str, location: tuple[str, int | None, str]) -> None:
    global _finished
    _finished += 1
    if _finished % FREEZE_EVERY == 0:
        gc.collect()
        gc.freeze()


# The xdist workers collect one after the other where the run's bytecode is its own
# (`_bytecode_in_tmp`: empty at the start): each worker imports every test module, and
# pytest's assert rewriting and the compiling of them and of the project's modules are most
# of a collection's CPU (~12 s of ~12.5 s here). Side by side, both workers found nothing
# compiled and both did it all; one after the other, the second reads what the first wrote
# (a `-n 2` run of two tests: 28.3-29.2 s of CPU before, see the commit for after).
@pytest.hookimpl(wrapper=True)
def pytest_collection(session: pytest.Session) -> Iterator[object]:
    run = Path(tempfile.gettempdir())
    prefix = os.environ.get("PYTHONPYCACHEPREFIX", "")
    if not (
        os.environ.get("PYTEST_XDIST_WORKER")
        and run.name.startswith(f"{RUN_TMP}-")
        and prefix == str(run / PYCACHE)
    ):
        return (yield)
    with open(run / "collect.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # (released as the file is closed)
        return (yield)


# The modules with the longest tests, longest first (per-file sums of a loaded `-n 2` run,
# 2026-12-07): collected first, each whole (its module fixtures made once a worker), so that
# pytest-xdist's `load` scheduling ends the run on short tests. In file order
# test_walkinprocess.py (one test, 29-52 s) was the 2,577th of 2,583: one worker ran it while
# the other, done, waited.
LONGEST_FIRST = (
    "test_privacy.py",
    "test_privacy_twoserver.py",
    "test_benchmarks.py",
    "test_quality.py",
    "test_privacy_twoserver_partner.py",
    "test_walkinprocess.py",
    "test_out_streamed.py",
    "test_suite_tmp.py",
    "test_rtindex.py",
    "test_install.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # (stable: else file order)
    for item in items:
        if item.get_closest_marker("slow") or item.get_closest_marker("server"):
            continue
        uses = set(getattr(item, "fixturenames", ()))
        if uses & SLOW_FIXTURES:
            item.add_marker(pytest.mark.slow)
        else:
            item.add_marker(pytest.mark.server if uses & SERVER_FIXTURES else pytest.mark.unit)


@pytest.fixture
def matcher(tmp_path: Path) -> Iterator[Matcher]:
    data_dir = tmp_path / "matcher-data"
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN, workers=2)
    try:
        yield Matcher(server, data_dir, ADMIN_TOKEN)
    finally:
        server.stop(grace=None)


@pytest.fixture
def project(matcher: Matcher) -> ProjectTokens:
    """A two-member project, 'north' and 'south', at the default disclosure."""
    with matcher.operator() as op:
        return op.create_project("trial", ["north", "south"])


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "linkage.secret"
    path.write_text(STRONG_SECRET + "\n")  # as `blindmatch secret new` writes one
    return path


@pytest.fixture
def orgs(tmp_path: Path) -> dict[str, Org]:
    """Two small exports of overlapping people, written in different conventions."""
    out = {}
    for name, data, mapping in (("north", NORTH_CSV, NORTH_MAP), ("south", SOUTH_CSV, SOUTH_MAP)):
        csv_path = tmp_path / f"{name}.csv"
        csv_path.write_text(data, encoding="utf-8")
        map_path = tmp_path / f"{name}.toml"
        map_path.write_text(mapping, encoding="utf-8")
        out[name] = Org(csv_path, map_path)
    return out


@pytest.fixture(scope="session")
def messy_members(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[list[npt.NDArray[np.uint8]], int]:
    """Three organisations' exports of 1,000 people (benchmarks/messy.py), encoded as
    `blindmatch encode` does (the default schema under MESSY_SECRET): record-level CLK, then
    the fallback CLK; and the fallback CLK's bits."""
    schema = load_schema(FALLBACK_SCHEMA)
    exports = write_exports(tmp_path_factory.mktemp("messy"), seed=5, size=1000)
    datasets = []
    fallback_bits = 0
    for style in ORGS:
        exp = exports[style.name]
        result = encode_csv(exp.csv, schema, load_mapping(exp.mapping, schema), MESSY_SECRET)
        datasets.append(
            np.frombuffer(result.clks, dtype=np.uint8).reshape(-1, result.clk_bits // 8)
        )
        fallback_bits = result.fallback_bits
    return datasets, fallback_bits


@pytest.fixture(scope="session")
def two_server_members(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tests/twoserver_world.py's members, encoded `--two-server` once for the session, not
    once per module that reads them (seven modules; ~0.5-1 s each)."""
    from tests.twoserver_world import encode_members  # (its imports only where it is used)

    return encode_members(tmp_path_factory.mktemp("members"))


@pytest.fixture(scope="session")
def real_pair_4000() -> realclks.RealPair:
    """4,000 + 4,000 real encodings as uploaded (the shipped schema, messy exports, seed 3,
    30% shared people): tests/test_floorplan.py's, and tests/test_rtplan.py's record-level
    CLKs are their first part. Encoded once a run (some 5 s of CPU, 10-14 s in a loaded
    `-n 2` run), not once in each module: by the first xdist worker to ask, into the run's
    own temp folder (`_tmp_in_ram`), where the other worker reads it (a lock held
    meanwhile); encoded here where the suite has no such folder. No test writes to it."""

    def encode() -> realclks.RealPair:
        return realclks.realistic_pair(4_000, 4_000, seed=3, overlap=0.3, workers=1,
                                       cache=False, quiet=True, whole=True)  # fmt: skip

    run = Path(tempfile.gettempdir())
    if not run.name.startswith(f"{RUN_TMP}-"):
        return encode()
    saved = run / "real-pair-4000.npz"
    with open(run / "real-pair-4000.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # (released as the file is closed)
        if not saved.exists():
            pair = encode()
            np.savez(run / "real-pair-4000.part.npz", **vars(pair))
            os.replace(run / "real-pair-4000.part.npz", saved)
            return pair
        with np.load(saved) as arrays:
            return realclks.RealPair(**{name: arrays[name] for name in arrays.files})
