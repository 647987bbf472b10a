"""Ctrl-C at a terminal during an encode of 10,000 records or more, where clkhash encodes on
worker processes: the terminal sends SIGINT to every process of the command, so each worker
printed its KeyboardInterrupt's traceback below "Interrupted.", and the command then never
exited (clkhash's thread feeding the workers waited on a queue no worker read any more).
Now the workers end without a word and the command exits 130 at once, leaving no ENCODED
folder (blindmatch/cli/errors.py). Found walking the README as a new user (freshwalk)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import NORTH_MAP, PERSON_SCHEMA, ROOT, STRONG_SECRET

pytestmark = pytest.mark.slow  # the command in a process group of its own

# The command as a terminal runs it (SIGINT raising KeyboardInterrupt, whatever the test
# runner's own handling), with clkhash's per-chunk encoding replaced, in the workers it
# forks, by a wait that says it has begun: the signal comes while every worker is alive.
# Two workers whatever the host's cores, so that 50,000 records (5 chunks) fill their queue
# of 2 and clkhash's feeder thread is waiting to put the fifth when the signal comes.
HELD = """
import multiprocessing, os, signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)
multiprocessing.cpu_count = lambda: 2
import clkhash.clk
def held(*args, **kwargs):
    open(os.environ["HELD_AT"], "a").close()
    while True:
        time.sleep(0.05)
clkhash.clk.hash_chunk = held
from blindmatch.cli.app import main
sys.exit(main(sys.argv[1:]))
"""

NAMES = ["Ann", "Bob", "Cara", "Dev", "Eve", "Finn", "Gus", "Hana", "Ivan", "Jo"]


def test_ctrl_c_in_an_encode_on_workers_exits_130_at_once_without_a_traceback(
    tmp_path: Path,
) -> None:
    export = tmp_path / "north.csv"
    rows = [
        f"N{i},{NAMES[i % 10]},{NAMES[i // 10 % 10]}son,{i % 28 + 1:02d}/{i % 12 + 1:02d}/"
        f"{1940 + i % 60},{'MF'[i % 2]},LS{i % 29 + 1} {i % 9 + 1}AB"
        for i in range(50_000)  # five of clkhash's 10,000-record chunks: on workers
    ]
    export.write_text("URN,Forenames,Surname,DOB,Sex,Postcode\n" + "\n".join(rows) + "\n")
    (tmp_path / "north.toml").write_text(NORTH_MAP)
    (tmp_path / "linkage.secret").write_text(STRONG_SECRET + "\n")
    held_at = tmp_path / "held"
    proc = subprocess.Popen(
        [sys.executable, "-c", HELD, "encode", str(export), "--schema", str(PERSON_SCHEMA),
         "--secret-file", str(tmp_path / "linkage.secret"), "--mapping",
         str(tmp_path / "north.toml"), "--out", str(tmp_path / "north.encoded")],
        cwd=ROOT, env={**os.environ, "HELD_AT": str(held_at)}, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        while not held_at.exists():
            assert proc.poll() is None, proc.communicate()[1]
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the whole process group
        _, err = proc.communicate(timeout=60)  # (before: for ever)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    said = (proc.returncode, "Interrupted." in err, "Traceback" in err)
    assert said == (130, True, False), err
    left = sorted(p.name for p in tmp_path.iterdir())  # no north.encoded, nor .north.encoded.*
    assert left == ["held", "linkage.secret", "north.csv", "north.toml"]
