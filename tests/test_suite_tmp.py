"""The suite leaves nothing in the temp dir but pytest's own folder (tests/conftest.py
`_tmp_in_ram`): what its tests and the processes they start write under TMPDIR, the
bytecode of the run included, goes with the run's folder at its end."""

from __future__ import annotations

import getpass
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

# A test module for the inner run: a tempfile folder left behind, a process that leaves one
# too, and the bytecode every process the run starts writes (tests/conftest.py).
LEAVES = """
import subprocess, sys, tempfile

def test_leaves_a_folder_and_starts_a_process_that_does() -> None:
    tempfile.mkdtemp()
    subprocess.run([sys.executable, "-c", "import tempfile, blindmatch.cli; tempfile.mkdtemp()"],
                   check=True)
"""


def _inner_run(
    tmp_path: Path,
    *args: str,
    modules: tuple[str, ...] = (LEAVES,),
    sigint: object = signal.SIG_DFL,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """A pytest run of LEAVES (or `modules`, each a test module) under this suite's conftest
    and settings, with TMPDIR `tmp_path`/tmp, no bytecode written beside the sources, and
    SIGINT's disposition `sigint` (signal.SIG_IGN: as a shell without job control starts a
    background job): the run, and that folder."""
    tmp, inner = tmp_path / "tmp", tmp_path / "inner"
    tmp.mkdir()
    inner.mkdir()
    (inner / "conftest.py").write_text("from tests.conftest import *  # noqa: F403\n")
    for i, module in enumerate(modules):
        (inner / f"test_leaves{i}.py").write_text(module, encoding="utf-8")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PYTEST_", "PYTHONPYCACHEPREFIX"))}  # fmt: skip
    env.update(TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c",
         str(ROOT / "pyproject.toml"), "--rootdir", str(inner), *args, str(inner)],
        cwd=inner, env=env, capture_output=True, text=True, timeout=240,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),  # type: ignore[arg-type]
    )  # fmt: skip
    return done, tmp


# A test module for the inner run: Ctrl-C is Python's own in the test's process and in a
# command it starts, whatever the run was started with.
CTRL_C = """
import signal, subprocess, sys

def test_ctrl_c_is_a_keyboard_interrupt_here_and_in_a_command() -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    said = subprocess.run([sys.executable, "-c", "import signal; print(signal.getsignal(2))"],
                          capture_output=True, text=True, check=True).stdout
    assert "default_int_handler" in said, said
"""


@pytest.fixture(scope="module")
def started_with_ctrl_c_ignored(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One in-process run of LEAVES and CTRL_C, started with SIGINT ignored, read by both
    tests below (each inner run compiles every module it imports afresh, its bytecode its
    own: 18-28 s of a loaded machine's wall time a run). Its SIGINT disposition does not
    reach the temp dir's clean-up: the suite's conftest gives its tests Python's own."""
    return _inner_run(tmp_path_factory.mktemp("inner-run"), modules=(LEAVES, CTRL_C),
                      sigint=signal.SIG_IGN)  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("workers", [[], ["-n", "1"]], ids=["in-process", "xdist"])
def test_a_run_leaves_only_pytests_own_folder_in_the_temp_dir(
    tmp_path: Path, workers: list[str], request: pytest.FixtureRequest
) -> None:
    if workers:
        done, tmp = _inner_run(tmp_path, *workers)
    else:
        done, tmp = request.getfixturevalue("started_with_ctrl_c_ignored")
    assert done.returncode == 0, done.stdout + done.stderr
    own = f"pytest-of-{getpass.getuser()}"  # (made where a test used tmp_path: xdist's do)
    assert {p.name for p in tmp.iterdir()} <= {own}
    assert not (tmp / own).exists() or list((tmp / own).iterdir()) == []  # a green run's


@pytest.mark.slow
def test_a_run_started_with_ctrl_c_ignored_gives_its_tests_ctrl_c(
    started_with_ctrl_c_ignored: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """`make test &` in a script (or nohup in one) starts the run with SIGINT ignored, and
    every process inherits that: the tests that Ctrl-C a command or their own main thread
    waited for an end that never came, up to 300 s each (tests/conftest.py
    `_ctrl_c_as_at_a_terminal`)."""
    done, _tmp = started_with_ctrl_c_ignored
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout  # CTRL_C's test among them
