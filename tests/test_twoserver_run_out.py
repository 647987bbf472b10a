"""`two-server run` writes its links CSV as the other commands write theirs (client/files.py
`atomic_open`): owner-only, under a name of its own beside --out, a row at a time as each is
made (cli/twoserver.py `write_links`), then fsynced and renamed into place. Before
(2026-12-07) it wrote a fixed `OUT.tmp`, which a failure or a SIGTERM left beside the old
--out (the process ended by the signal, exit -15), and which a run took over and renamed
away whoever had made it (an older run's, another file of the user's); and until the
streaming, later that day, it made the whole CSV in memory first (some 45 bytes a link,
twice or three times over) and wrote it at once (`write_bytes`).

Real S1, S2 and combiner on loopback (tests/test_twoserver_rpc.py's), each holding the two
small exports' uploads; the command in this process, or, where it is signalled or its files
are limited, in a process of its own, held at a step (tests/test_command_leftovers.py's
hold) or under a file-size limit (RLIMIT_FSIZE: a write that fails part-way, as on a full
disk)."""

from __future__ import annotations

import csv
import errno
import io
import os
import stat
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blindmatch.cli.app import main
from blindmatch.cli.twoserver import write_links
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.encoding.sharing import shared_upload
from blindmatch.client.remote.twoserver import TwoServerLinks
from blindmatch.matcher.rpc.twoserver_service import RunningRole
from tests.support import MESSY_SECRET, PERSON_SCHEMA, ROOT, Org
from tests.test_command_leftovers import HELD, _assert_ended, _terminated, tmp  # noqa: F401
from tests.test_twoserver_rpc import PLAN, key, roles, send  # noqa: F401

pytestmark = pytest.mark.server

HEADER = b"member,row,partner,partner_row,score\r\n"
OLD = b"member,row,partner,partner_row,score\r\nan older run's links\r\n"
# The small exports' run at 0.8, as written before the rows were streamed (main at c90ef45).
LINKS = HEADER + b"".join(
    b"%s,%d,%s,%d,0.950000\r\n" % row
    for row in [(b"north", 0, b"south", 0), (b"north", 3, b"south", 1), (b"north", 4, b"south", 3),
                (b"south", 0, b"north", 0), (b"south", 1, b"north", 3), (b"south", 3, b"north", 4)]
)  # fmt: skip
# `main` under a file-size limit (its first argument, in bytes): a write past it fails
# (EFBIG; Python ignores SIGXFSZ), part-way through the file, as a full disk's would.
LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from blindmatch.cli.app import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture
def run(
    roles: dict[str, RunningRole],  # noqa: F811
    key: str,  # noqa: F811
    orgs: dict[str, Org],
    tmp_path: Path,
) -> list[str]:
    """`two-server run`'s options (all but --out) at roles that hold north's and south's
    uploads; each a run's pairs once (a fresh set of roles for each test)."""
    schema = load_schema(PERSON_SCHEMA)
    for name, org in orgs.items():
        result = encode_csv(org.csv, schema, load_mapping(org.mapping, schema), MESSY_SECRET)
        clks = np.frombuffer(result.clks, dtype=np.uint8).reshape(-1, result.clk_bits // 8)
        send(roles, key, name, shared_upload(clks, MESSY_SECRET, PLAN, result.fallback_bits))
    key_file = tmp_path / "parties.key"
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return ["two-server", "run", "--combiner", f"127.0.0.1:{roles['combiner'].port}",
            "--key-file", str(key_file), "--threshold", "0.8", "--quiet"]  # fmt: skip


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    made = tmp_path / "out"
    made.mkdir()
    return made


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_run_whose_rename_fails_leaves_the_old_links_and_no_temporary_file(
    run: list[str], folder: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """The file system refuses the rename (a full disk's ENOSPC) once the new file is whole:
    before, `links.csv.tmp` was left beside the old file."""
    out = folder / "links.csv"
    out.write_bytes(OLD)

    def full(src: Any, dst: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))

    monkeypatch.setattr(os, "replace", full)
    assert main([*run, "--out", str(out), "--force"]) == 1
    assert f"{out}: No space left on device" in capsys.readouterr().err
    assert _files(folder) == {"links.csv": OLD}


def test_a_run_with_a_role_stopped_fails_naming_it_and_leaves_the_old_links(
    run: list[str],
    roles: dict[str, RunningRole],  # noqa: F811
    folder: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = folder / "links.csv"
    out.write_bytes(OLD)
    roles["s2"].stop(grace=None)
    assert main([*run, "--out", str(out), "--force"]) == 4
    assert f"S2 (127.0.0.1:{roles['s2'].port}) is unreachable" in capsys.readouterr().err
    assert _files(folder) == {"links.csv": OLD}


@pytest.mark.slow  # the command in a process of its own
@pytest.mark.parametrize(
    "held, old", [("replace", OLD), ("link", None)], ids=["over-the-old", "anew"]
)
def test_a_run_ended_by_sigterm_leaves_the_old_links_and_no_temporary_file(
    run: list[str],
    tmp: Path,  # noqa: F811
    tmp_path: Path,
    folder: Path,
    held: str,
    old: bytes | None,
) -> None:
    """Held with the new CSV whole beside --out, not yet renamed (--force) or linked (a new
    file) into place: before, SIGTERM's default action ended it there (exit -15) and left
    `links.csv.tmp` beside the old file."""
    out = folder / "links.csv"
    if old is not None:
        out.write_bytes(old)
    there = tmp_path / "held"
    code, err = _terminated(
        [sys.executable, "-c", HELD, "os", held,
         *run, "--out", str(out), *(["--force"] if old else [])],
        tmp, there.exists, env={"HELD_ON": "links.csv.", "HELD_AT": str(there)},
    )  # fmt: skip
    _assert_ended(code, err)
    assert _files(folder) == ({} if old is None else {"links.csv": old})
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("old", [OLD, None], ids=["over-the-old", "anew"])
def test_a_stale_out_tmp_is_neither_taken_over_nor_deleted(
    run: list[str], folder: Path, old: bytes | None
) -> None:
    """`links.csv.tmp` as an older version left it (or any file of that name): not this run's,
    so left as it is; the links written beside it, owner-only. Before, the run wrote into it
    and renamed it over --out (and followed it where it was a link)."""
    out = folder / "links.csv"
    stale = folder / "links.csv.tmp"
    stale.write_bytes(b"member,row\r\nhalf a row of an older run")
    if old is not None:
        out.write_bytes(old)
    assert main([*run, "--out", str(out), *(["--force"] if old else [])]) == 0
    written = _files(folder)
    assert written.keys() == {"links.csv", "links.csv.tmp"}
    assert written["links.csv.tmp"] == b"member,row\r\nhalf a row of an older run"
    assert written["links.csv"].startswith(HEADER)
    assert written["links.csv"].count(b"\r\n") > 1  # links, each a whole row
    assert written["links.csv"].endswith(b"\r\n")
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.parametrize("old", [OLD, None], ids=["over-the-old", "anew"])
def test_a_run_writes_the_same_links_csv_as_before_owner_only(
    run: list[str], folder: Path, old: bytes | None
) -> None:
    """The streamed CSV is byte for byte the one made in memory before (its header, CRLF
    rows in the combiner's order, scores to six places), and owner-only."""
    out = folder / "links.csv"
    if old is not None:
        out.write_bytes(old)
    assert main([*run, "--out", str(out), *(["--force"] if old else [])]) == 0
    assert _files(folder) == {"links.csv": LINKS}
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.slow  # the command in a process of its own
@pytest.mark.parametrize("old", [OLD, None], ids=["over-the-old", "anew"])
def test_a_run_whose_write_fails_part_way_leaves_the_old_links_and_no_temporary_file(
    run: list[str], folder: Path, old: bytes | None
) -> None:
    """A file-size limit of 100 bytes: the header and two rows are written, the third is
    refused (EFBIG), a real failure part-way through the file. The temporary file is
    deleted, the old --out kept; the error names --out (before, a write's OSError named no
    file and the command ended in a traceback)."""
    out = folder / "links.csv"
    if old is not None:
        out.write_bytes(old)
    done = subprocess.run(
        [sys.executable, "-c", LIMITED, "100", *run, "--out", str(out),
         *(["--force"] if old else [])],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (1, f"Error: {out}: File too large\n")
    assert _files(folder) == ({} if old is None else {"links.csv": old})


@pytest.mark.slow  # the command in a process of its own
def test_a_run_ended_by_sigterm_as_its_rows_are_written_leaves_the_old_links(
    run: list[str],
    tmp: Path,  # noqa: F811
    tmp_path: Path,
    folder: Path,
) -> None:
    """Held as its CSV writer is made, once the run's links are in: the rows go to an
    owner-only file of its own beside --out, already there (before, the CSV was made in
    memory and that file made only once it was whole). SIGTERM then deletes it: exit 143,
    the old --out as it was."""
    out = folder / "links.csv"
    out.write_bytes(OLD)
    terminated_at_rows([*run, "--out", str(out), "--force"], out, tmp, tmp_path)
    assert _files(folder) == {"links.csv": OLD}
    assert list(tmp.iterdir()) == []


def terminated_at_rows(command: list[str], out: Path, tmpdir: Path, held: Path) -> None:
    """`command` (writing `out`) run in a process of its own, held as its CSV writer is
    made and sent SIGTERM there (its TMPDIR `tmpdir`; `held` a folder for the hold's
    marker): it ended as terminated, having made its owner-only file beside `out` (and only
    that: the one `atomic_open` writes the rows to)."""
    there = held / "held"
    beside: list[list[tuple[str, int]]] = []

    def holding() -> bool:
        if not there.exists():
            return False
        beside.append([(p.name, stat.S_IMODE(p.stat().st_mode)) for p in out.parent.iterdir()])
        return True

    code, err = _terminated([sys.executable, "-c", HELD, "csv", "writer", *command],
                            tmpdir, holding, env={"HELD_AT": str(there)})  # fmt: skip
    _assert_ended(code, err)
    [(name, mode)] = [f for f in beside[-1] if f[0] != out.name]
    assert (name.startswith(f".{out.name}."), mode) == (True, 0o600)


def test_writing_many_links_holds_a_few_rows_not_the_whole_csv(tmp_path: Path) -> None:
    """200,000 links (a CSV of some 8.5 MB): Python's allocations while they are written stay
    under 2 MB (a chunk of rows at a time, `LINKS_A_CHUNK`: some 0.7 MB), where the CSV made
    in memory took twice its size; the bytes are those it made."""
    n = 200_000
    rng = np.random.default_rng(7)
    links = TwoServerLinks(
        ["north", "south", "west"], rng.integers(0, 3, n, dtype=np.uint32),
        rng.integers(0, 2**32, n, dtype=np.uint32), rng.integers(0, 3, n, dtype=np.uint32),
        rng.integers(0, 2**32, n, dtype=np.uint32), rng.choice([0.8, 0.85, 0.9, 0.95], n),
        groups=1, comparisons=n, method="pairs", bytes_sent={}, rounds=1,
    )  # fmt: skip
    out = tmp_path / "links.csv"
    tracemalloc.start()
    try:
        write_links(out, links, replace=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    text = io.StringIO()  # the CSV as made in memory before
    before = csv.writer(text)
    before.writerow(["member", "row", "partner", "partner_row", "score"])
    for d, r, p, pr, s in zip(links.dset, links.row, links.partner, links.partner_row,
                              links.score, strict=True):  # fmt: skip
        before.writerow([links.members[d], int(r), links.members[p], int(pr), f"{s:.6f}"])
    written = out.read_bytes()
    assert written == text.getvalue().encode("utf-8")
    assert len(written) > 8_000_000 and peak < 2_000_000, peak
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
