"""Installing blindmatch anywhere: a built wheel in a fresh virtual environment.

clkhash is not among the wheel's requirements (its metadata caps cryptography<41 and
bitarray<3, so pip could not resolve it beside blindmatch's own); without it the commands
that encode say what to run, and with it installed as they say, they work.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from blindmatch.cli.errors import CLKHASH
from tests.support import NORTH_CSV, NORTH_MAP, PERSON_SCHEMA, ROOT, SOUTH_CSV, SOUTH_MAP


def test_the_makefile_installs_the_clkhash_the_cli_names() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert f"CLKHASH := {CLKHASH}\n" in makefile
    assert f"pip install --no-deps {CLKHASH}" in (ROOT / "README.md").read_text(encoding="utf-8")


BUILT = shutil.ignore_patterns("__pycache__", "*.so", "*.pyc")


def _run(*cmd: str | Path, env: dict[str, str] | None = None, check: bool = True) -> str:
    done = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=900,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)  # pip fetches numpy, gRPC, matplotlib ... from the registry
def test_a_wheel_in_a_fresh_venv_gives_a_working_blindmatch(tmp_path: Path) -> None:
    # Built from a copy of what the wheel is made of: setuptools reuses an old build/ folder,
    # and would ship modules a checkout no longer has.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("blindmatch", "client", "matcher", "protos", "schemas"):
        shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=BUILT)
    _run(sys.executable, "-m", "pip", "wheel", source, "--no-deps", "--no-build-isolation",
         "-q", "-w", tmp_path / "dist")  # fmt: skip
    (wheel,) = (tmp_path / "dist").glob("blindmatch-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    assert all((ROOT / n).exists() for n in shipped)  # nothing the checkout no longer has
    assert "blindmatch/cli/app.py" in shipped and "blindmatch/schemas/person-uk.json" in {
        n for n in zipfile.ZipFile(wheel).namelist()
    }
    # The venv gets no pip of its own (ensurepip's, older and slower): this suite's pip
    # installs into it (`pip --python`), so it holds the wheel and what the wheel's
    # requirements pulled from the registry, not even setuptools. --no-compile: pip does not
    # byte-compile all of numpy, scipy, matplotlib ...; a command compiles what it imports.
    # The venv, the install and four commands took 22-23 s of CPU that way, 5.3-5.5 s this way
    # (docs/architecture.md, "Tests and their run time").
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv)

    def pip_install(*args: str | Path) -> None:
        _run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install",
             "-q", "--no-compile", *args)  # fmt: skip

    pip_install(wheel)  # its requirements from the registry
    bm = venv / "bin" / "blindmatch"
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not {"client", "matcher", "protos"} & {p.name for p in site.iterdir()}

    assert re.fullmatch(r"blindmatch \d+\.\d+\.\d+.*\n", _run(bm, "--version"))
    assert "usage: blindmatch" in _run(bm, "--help")

    work = tmp_path / "work"
    work.mkdir()
    secret = work / "linkage.secret"
    assert "Wrote a new 256-bit secret" in _run(bm, "secret", "new", secret)  # no clkhash needed
    for name, data, mapping in (("north", NORTH_CSV, NORTH_MAP), ("south", SOUTH_CSV, SOUTH_MAP)):
        (work / f"{name}.csv").write_text(data, encoding="utf-8")
        (work / f"{name}.toml").write_text(mapping, encoding="utf-8")

    def encode(name: str, *, check: bool = True) -> str:
        return _run(bm, "encode", work / f"{name}.csv", "--schema", PERSON_SCHEMA,
                    "--secret-file", secret, "--mapping", work / f"{name}.toml",
                    "--out", work / f"{name}.encoded", "--quiet", check=check)  # fmt: skip

    said = encode("north", check=False)
    assert f"pip install --no-deps {CLKHASH}" in said and "Traceback" not in said
    assert not (work / "north.encoded").exists()
    pip_install("--no-deps", CLKHASH)
    encode("north")
    encode("south")

    # The README's walkthrough, with the wheel's own `blindmatch serve`.
    serve = subprocess.Popen(
        [bm, "serve", "--data-dir", work / "data", "--listen", "127.0.0.1:0"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "BLINDMATCH_ADMIN_TOKEN": "bm_op"},
    )  # fmt: skip
    try:
        assert serve.stderr is not None
        port, deadline = None, time.monotonic() + 60
        while port is None and time.monotonic() < deadline:
            line = serve.stderr.readline()
            assert line, f"serve exited {serve.poll()}"
            if m := re.search(r"blindmatch matcher listening on [\d.]+:(\d+)", line):
                port = m.group(1)
        server = ["--server", f"127.0.0.1:{port}"]
        created = _run(bm, "project", "create", "trial", "--members", "north,south", "--json",
                       *server, env={"BLINDMATCH_ADMIN_TOKEN": "bm_op"})  # fmt: skip
        tokens = dict(re.findall(r'"(north|south)": "([^"]+)"', created))
        for name in ("north", "south"):
            _run(bm, "upload", work / f"{name}.encoded", "--project", "trial",
                 "--token", tokens[name], *server)  # fmt: skip
        _run(bm, "run", "--project", "trial", "--token", tokens["north"], *server)
        _run(bm, "results", "--project", "trial", "--token", tokens["north"], *server,
             "--encoded", work / "north.encoded", "--out", work / "hits.csv")  # fmt: skip
    finally:
        serve.terminate()
        serve.communicate(timeout=30)  # and close its pipe
    with open(work / "hits.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [
            ["record_id", "partner"],
            ["N1", "south"],
            ["N4", "south"],
            ["N5", "south"],
        ]
    assert "Against the synthetic truth" in _run(bm, "demo", "--records", "300")
