"""`results --out`, `audit export --out` and `audit report --out` write their files a row at a
time (client/files.py `write_csv` and `write_chunks`, through `atomic_open`), as
`two-server run --out` writes its links: the bytes main wrote (2026-12-07, before the
streaming: each file made whole in memory, twice over, then written at once), owner-only,
and never more than a few rows held. Where a file is refused part-way (a result row beyond
the id list, a file-size limit, SIGTERM) the old file is left as it was and no temporary one.

The golden digests are of the files main's code (`join_results` and `write_csv`;
`auditfiles.entries_csv`, `entries_html`, `to_csv`, `who_text`, `who_html`) wrote for the
same data, its pages made at the same instant."""

from __future__ import annotations

import hashlib
import shutil
import stat
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from blindmatch.cli.app import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import InputError
from blindmatch.client.files import write_chunks, write_csv
from blindmatch.client.remote.model import ResultHit, Results
from blindmatch.client.results import HEADERS, result_rows
from blindmatch.client.tools import auditfiles
from blindmatch.matcher.server import create_server
from tests.support import (
    ADMIN_TOKEN,
    NORTH_CSV,
    NORTH_MAP,
    ROOT,
    SOUTH_CSV,
    SOUTH_MAP,
    Matcher,
    Org,
    encode_all,
    uploaded_and_run,
)
from tests.test_command_leftovers import tmp  # noqa: F401
from tests.test_twoserver_run_out import LIMITED, terminated_at_rows

RESULT_ROWS = 200_000
AUDIT_ENTRIES = 50_000
ACTIONS = ("query", "results.disclose", "watch.notify", "upload", "request.resolve", "audit.export")
MADE = 1_780_000_000.0  # the instant the pages say they were made
OLD = b"an older file\n"


def many_results(disclosure: str) -> Results:
    """`RESULT_ROWS` hits of north's `RESULT_ROWS` records (at the hits and mapping levels
    each record twice, once a partner), south at the project's level, west at hits only."""
    hits = [ResultHit(i % RESULT_ROWS if disclosure == "scores" else i // 2,
                      ("south", "west")[i % 2], (i * 7919) % RESULT_ROWS, 0.8 + (i % 997) / 5000)
            for i in range(RESULT_ROWS)]  # fmt: skip
    return Results("run-1", disclosure, "ab" * 32, RESULT_ROWS,
                   {"south": RESULT_ROWS // 2, "west": RESULT_ROWS // 2}, hits,
                   {"south": disclosure, "west": "hits"})  # fmt: skip


def many_entries() -> Iterator[dict[str, object]]:
    """`AUDIT_ENTRIES` entries as `MatcherClient.audit` yields them, made as they are taken
    (as the matcher's stream gives them): consultations and not, by members (some of their
    lines about others), the operator and named users, a purpose a spreadsheet would run."""
    for i in range(AUDIT_ENTRIES):
        actor = ("north", "south", "operator")[i % 3]
        yield {
            "seq": i + 1, "time": 1_780_000_000 + i * 37.5, "actor": actor,
            "action": ACTIONS[i % len(ACTIONS)], "project": "trial",
            "member": ("", "north", "south", actor)[i % 4],
            "purpose": ("=HYPERLINK(\"x\")", "OP-2291 é", "")[i % 3] + str(i % 11),
            "disclosed": {"south": i % 5} if i % 2 else {},
            "detail": {"records": i % 9, "counts": {"south": i % 4}} if i % 5 else {},
            "prev_hash": f"{i:064x}", "hash": f"{i + 1:064x}", "user": ("", "pc-1")[i % 2],
        }  # fmt: skip


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> Encoded:
    """An ENCODED folder of north's `RESULT_ROWS` records (its id list; the CLKs unread).
    Made once for the module: the tests only read it, and write their files elsewhere."""
    folder = tmp_path_factory.mktemp("uploaded") / "north.encoded"
    (folder / "local").mkdir(parents=True)
    ids = "".join(f"{i},R{i:06d}\n" for i in range(RESULT_ROWS))
    (folder / "local" / "ids.csv").write_text("row,record_id\n" + ids)
    return Encoded(folder, 1024, RESULT_ROWS, b"", "ab" * 32)


def _peak(write: Callable[[], object]) -> int:
    """Python's most allocated at once (beyond what was) while `write` runs."""
    tracemalloc.start()
    try:
        write()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "disclosure, golden, bounded",
    [("scores", "57ecbc04c9e2dbe3c151b429dc8a5a5a8e2c28d56dde98ea8c01075d1ff47995", True),
     ("mapping", "3b5b6ce83e225957fbd3c115c36c0cd5ab24591b70af7e1201233b18e4796659", True),
     ("hits", "8c33eb7e95db596930a30fa646462b6222d4d1efec5065ab8ffc2bdcaf6a7430", False)],
)  # fmt: skip
def test_a_results_file_is_written_as_main_wrote_it_a_few_rows_held(
    uploaded: Encoded, tmp_path: Path, disclosure: str, golden: str, bounded: bool
) -> None:
    """200,000 rows (a CSV of 2.7 to 4.2 MB), as `blindmatch results` writes them: the bytes
    main wrote, owner-only, over the old file. Python's allocations while they are written
    stay under 2 MB (some 0.4 MB measured), where main's rows and CSV took some 60 MB. (At
    the hits level a record is written once a partner: the pairs seen are held.)"""
    out = tmp_path / "hits.csv"
    out.write_bytes(OLD)
    results = many_results(disclosure)
    rows = result_rows(results, uploaded)  # (the id list read here: the folder's, not the file's)
    if bounded:
        peak = _peak(lambda: write_csv(out, HEADERS[disclosure], rows))
        assert peak < 2_000_000, peak
    else:  # (no peak to check: tracing every allocation made the write 4 times slower)
        write_csv(out, HEADERS[disclosure], rows)
    assert _digest(out) == golden
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "kind, golden",
    [("jsonl", "d05a79cb5c9a3c9330951635ee0faec9f3c958e7a2e4b93101bbd038bedc82c7"),
     ("csv", "8e1d972dfb138ba85be77b2d098ad71f45789d33da597486ccae53a7832b2b6c"),
     ("report-csv", "8c10a485550824856c80e761a1baa6b2e02136a0a7cf0753302f2f58f2337714")],
)  # fmt: skip
def test_an_audit_file_is_written_as_main_wrote_it_as_the_entries_come(
    tmp_path: Path, kind: str, golden: str
) -> None:
    """50,000 entries taken one at a time, as the matcher streams them, each written as it
    comes (cli/audit.py: `audit export` as JSON lines or CSV, `audit report --format csv`):
    main's bytes (a spreadsheet's formula made text), and under 2 MB allocated at once
    (0.2 to 0.6 MB measured), where main held every entry and the whole file twice over
    (some 70 MB for the CSV)."""
    out = tmp_path / "audit"
    out.write_bytes(OLD)
    if kind == "jsonl":
        peak = _peak(lambda: write_chunks(out, auditfiles.jsonl_lines(many_entries())))
    elif kind == "csv":
        peak = _peak(lambda: write_csv(out, auditfiles.COLUMNS,
                                       auditfiles.entry_rows(many_entries())))  # fmt: skip
    else:
        rows = auditfiles.safe_rows(auditfiles.who_looked(many_entries()))
        peak = _peak(lambda: write_csv(out, auditfiles.WHO_COLUMNS, rows))
    assert _digest(out) == golden
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert peak < 2_000_000, peak


@pytest.mark.parametrize(
    "kind, golden",
    [("export-html", "f75c318cbe11376af9ecabf214dcf93f4e36bd901a95c83611265ee24f563bfd"),
     ("report-text", "3133bb15d662adde24f310511a5326fb47715ec361541aa273de30681f9a6eb9"),
     ("report-html", "dd69ed60679128a0ad8a553e7db0f060a65d183874a91b7a603e05268071f32c")],
)  # fmt: skip
def test_an_audit_page_or_table_is_written_as_main_wrote_it(
    tmp_path: Path, kind: str, golden: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The formats that say how many, or align their columns, before the first row: the
    entries (or rows) are held, their page written a row at a time; main's bytes."""
    monkeypatch.setattr(time, "time", lambda: MADE)
    out = tmp_path / "audit"
    if kind == "export-html":
        write_chunks(out, auditfiles.entries_html(list(many_entries()), "project trial"))
    else:
        rows = list(auditfiles.who_looked(many_entries()))
        page = auditfiles.who_html(rows, "project trial") if kind == "report-html" else None
        write_chunks(out, page or auditfiles.who_text(rows))
    assert _digest(out) == golden
    write_chunks(out, auditfiles.who_text([]))
    assert out.read_text() == "No consultations or disclosures recorded.\n"


def test_a_results_row_beyond_the_id_list_part_way_leaves_the_old_file_and_no_temporary_one(
    uploaded: Encoded, tmp_path: Path
) -> None:
    """The 100,001st hit names a record the folder has not: refused once 100,000 rows are
    written to the temporary file, which is deleted; the old file kept."""
    results = many_results("scores")
    results.hits.insert(100_000, ResultHit(RESULT_ROWS, "south", 0, 0.9))
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "hits.csv").write_bytes(OLD)
    with pytest.raises(InputError, match=f"result row {RESULT_ROWS} is beyond the id list"):
        write_csv(folder / "hits.csv", HEADERS["scores"], result_rows(results, uploaded))
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {"hits.csv": OLD}


@pytest.fixture(scope="module")
def stocked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ProjectTokens, Path]:
    """A stopped matcher's data dir whose project `trial` has north's and south's uploads
    (tests/support.py's two small exports, encoded) and a finished run, made once for the
    module (the encoding, uploads and run were most of each test's set-up); its tokens, and
    the folder of the members' ENCODED folders (only read)."""
    folder = tmp_path_factory.mktemp("stocked")
    orgs = {}
    for name, data, mapping in (("north", NORTH_CSV, NORTH_MAP), ("south", SOUTH_CSV, SOUTH_MAP)):
        (folder / f"{name}.csv").write_text(data, encoding="utf-8")
        (folder / f"{name}.toml").write_text(mapping, encoding="utf-8")
        orgs[name] = Org(folder / f"{name}.csv", folder / f"{name}.toml")
    server = create_server("127.0.0.1:0", folder / "data", ADMIN_TOKEN, workers=2)
    try:
        matcher = Matcher(server, folder / "data", ADMIN_TOKEN)
        with matcher.operator() as op:
            project = op.create_project("trial", ["north", "south"])
        uploaded_and_run(matcher, project, encode_all(orgs, folder))
    finally:
        server.stop(grace=None)
    return folder / "data", project, folder


@pytest.fixture
def member(stocked: tuple[Path, ProjectTokens, Path], tmp_path: Path) -> Iterator[list[str]]:
    """north's options at a matcher with an audit log (an upload, a run, its results
    fetched: `results --out` at a real matcher, its three hits written as main wrote them):
    the matcher serves the test's own copy of `stocked`'s data dir (modes and all)."""
    source, project, folder = stocked
    shutil.copytree(source, tmp_path / "data", symlinks=True)
    server = create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, workers=2)
    try:
        options = ["--server", f"127.0.0.1:{server.port}", "--project", project.project,
                   "--token", project.tokens["north"]]  # fmt: skip
        hits = tmp_path / "hits.csv"
        encoded = folder / "north.encoded"
        assert main(["results", *options, "--encoded", str(encoded), "--out", str(hits)]) == 0
        assert hits.read_bytes() == b"record_id,partner\nN1,south\nN4,south\nN5,south\n"
        yield options
    finally:
        server.stop(grace=None)


@pytest.mark.parametrize("command", [["export", "--format", "csv"], ["export"],
                                     ["report", "--format", "csv"]])  # fmt: skip
def test_an_audit_file_written_to_out_is_what_standard_output_shows(
    member: list[str], tmp_path: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Both a row at a time, as the matcher streams the entries; the export written second
    holds the first export's own entry (`audit.export`) too, after the same lines."""
    out = tmp_path / "audit"
    out.write_bytes(OLD)
    assert main(["audit", *command, *member, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["audit", *command, *member]) == 0
    shown = capsys.readouterr().out.encode()
    written = out.read_bytes()
    assert written.count(b"\n") > 1 and shown.startswith(written), (written, shown)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


@pytest.mark.slow  # the command in a process of its own
def test_an_audit_export_ended_by_sigterm_as_its_rows_are_written_leaves_the_old_file(
    member: list[str],
    tmp: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Held as its CSV writer is made, the matcher's stream begun: the rows go to an
    owner-only file of its own beside --out, already there (before, the entries were all
    fetched and the file made only once it was whole). SIGTERM deletes it: exit 143, the
    old --out as it was."""
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "audit.csv"
    out.write_bytes(OLD)
    command = ["audit", "export", "--format", "csv", "--out", str(out), *member]
    terminated_at_rows(command, out, tmp, tmp_path)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {"audit.csv": OLD}
    assert list(tmp.iterdir()) == []


@pytest.mark.slow  # the command in a process of its own
@pytest.mark.parametrize("command", [["audit", "export"], ["audit", "report", "--format", "csv"]])
def test_an_audit_file_whose_write_fails_part_way_leaves_the_old_file(
    member: list[str], tmp_path: Path, command: list[str]
) -> None:
    """A file-size limit of 100 bytes (a full disk, as it were): the write refused (EFBIG)
    part-way; the temporary file deleted, the old --out kept, the error naming it."""
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "audit"
    out.write_bytes(OLD)
    done = subprocess.run(
        [sys.executable, "-c", LIMITED, "100", *command, "--out", str(out), *member],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (1, f"Error: {out}: File too large\n")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {"audit": OLD}
