"""`blindmatch watch` (docs/realtime.md "Watching from the command line"): the people given as
`query` takes them, a real matcher on loopback, and events produced by a partner's real
index change (or, in a two-server project, its real upload at S1 and S2). Printed as they
arrive (a line, a JSON line, CSV rows appended), the watch closed at --count, --timeout or
Ctrl-C (exit 0, the matcher no longer holding it), unreadable input refused before anything
is sent (exit 2), and a watch the matcher ends reported with why (exit non-zero)."""

from __future__ import annotations

import csv
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.exports import Export
from benchmarks.messy import write_exports
from blindmatch.cli import main
from blindmatch.cli.watch import CSV_HEADER
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encode import read_secret
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.remote.index import remove_from_index
from blindmatch.matcher.core import exhaustive
from blindmatch.matcher.core.querylimit import Limit, QueryLimits
from blindmatch.matcher.rpc.twoserver_queries import RoleQueries
from tests.support import (
    GRACE,
    KEY,
    PERSON_SCHEMA,
    PURPOSE,
    ROOT,
    STRONG_SECRET,
    Matcher,
    Org,
    db_rows,
    encode,
    index_all,
)
from tests.test_twoserver_project import SCHEMA, World, create, world  # noqa: F401


def until(done: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


class Running:
    """`blindmatch ARGS` run by `main` on a thread of its own, as a shell would run it; its
    exit status once it returns."""

    def __init__(self, args: list[str]) -> None:
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, args=(args,), daemon=True)
        self.thread.start()

    def _run(self, args: list[str]) -> None:
        self.code = main(args)

    def wait(self, seconds: float = 60.0) -> int:
        self.thread.join(seconds)
        assert self.code is not None, "the watch did not return"
        return self.code


def watch_args(matcher: Matcher, token: str, secret_file: Path, *extra: str) -> list[str]:
    return ["watch", "--project", "trial", "--token", token, "--server", matcher.target,
            "--schema", str(PERSON_SCHEMA), "--secret-file", str(secret_file),
            "--purpose", PURPOSE, *extra]  # fmt: skip


def grace_args() -> list[str]:
    return ["--given-name", GRACE["given_name"], "--surname", GRACE["surname"],
            "--dob", "12/12/2001", "--sex", GRACE["sex"]]  # fmt: skip


def open_watches(matcher: Matcher) -> int:
    return len(matcher.server.realtime.watches)


def watch_entries(matcher: Matcher) -> list[str]:
    with matcher.operator() as op:
        return [str(e["action"]) for e in op.audit("trial") if str(e["action"]).startswith("watch")]


@pytest.fixture
def south(orgs: dict[str, Org], secret_file: Path, tmp_path: Path) -> Encoded:
    return encode(orgs["south"], tmp_path / "south.encoded", read_secret(secret_file))


@pytest.fixture
def watching(matcher: Matcher, project: ProjectTokens) -> ProjectTokens:
    with matcher.operator() as op:
        op.set_query_limits("trial", allow_watch=True)
    return project


def test_a_csv_of_people_is_watched_and_each_partner_match_printed_as_a_json_line_and_csv_row(
    matcher: Matcher,
    watching: ProjectTokens,
    south: Encoded,
    orgs: dict[str, Org],
    secret_file: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "watch-hits.csv"
    args = watch_args(matcher, watching.tokens["north"], secret_file, str(orgs["north"].csv),
                      "--mapping", str(orgs["north"].mapping), "--json", "--out", str(out),
                      "--count", "3", "--timeout", "60")  # fmt: skip
    # N3's date of birth (30/02/1970) cannot be read: refused before anything is sent, the
    # row and field named, no watch opened, nothing audited, no --out written.
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {orgs['north'].csv}: cannot read the records to watch: ")
    assert "row 4, column DOB (dob): '30/02/1970'" in err
    # An impossible day, not a format (was "is not a date"): no date_format advice.
    assert "matches %d/%m/%Y but is not a real date" in err and "nothing was sent" in err
    assert err.endswith(f"(fix or blank those values in {orgs['north'].csv})\n")
    assert open_watches(matcher) == 0 and watch_entries(matcher) == []
    assert not out.exists()

    text = orgs["north"].csv.read_text(encoding="utf-8").replace("30/02/1970", "")
    orgs["north"].csv.write_text(text, encoding="utf-8")
    running = Running(args)
    until(lambda: open_watches(matcher) == 1 or running.code is not None)
    assert running.code is None, capsys.readouterr().err
    # South indexes its records later: north's N1, N4 and N5 are among them.
    with matcher.member(watching.tokens["south"]) as client:
        index_all(client, "trial", south)
    assert running.wait() == 0  # --count 3: closed after the third event
    captured = capsys.readouterr()
    events = [json.loads(line) for line in captured.out.splitlines()]
    assert sorted(e["record_id"] for e in events) == ["N1", "N4", "N5"]
    assert all(e["partner"] == "south" and e["refs"] == [] == e["scores"] for e in events)
    assert all(time.strptime(e["time"], "%Y-%m-%dT%H:%M:%SZ") for e in events)
    assert "Watching 5 records in trial" in captured.err
    assert "Watch closed: 3 events, as --count asked; 3 events received." in captured.err
    with open(out, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == CSV_HEADER
    assert sorted((r[1], r[2], r[3], r[4]) for r in rows[1:]) == [
        ("N1", "south", "", ""), ("N4", "south", "", ""), ("N5", "south", "", "")
    ]  # fmt: skip
    until(lambda: open_watches(matcher) == 0)  # closed at the matcher too
    assert watch_entries(matcher) == ["watch", "watch.notify", "watch.notify", "watch.notify"]

    # A second watch appends to the same CSV; one with another header is refused, unsent.
    other = tmp_path / "other.csv"
    other.write_text("record_id,partner\n", encoding="utf-8")
    bad = [a if a != str(out) else str(other) for a in args]
    assert main(bad) == 2
    assert f"--out {other}: exists with another header" in capsys.readouterr().err
    assert watch_entries(matcher)[-1] == "watch.notify" and open_watches(matcher) == 0


def test_a_watch_ends_at_its_timeout_and_says_why_when_the_matcher_ends_it(
    matcher: Matcher,
    project: ProjectTokens,
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = watch_args(matcher, project.tokens["north"], secret_file, *grace_args())
    # A date of birth not in the format given: the field and the format named, exit 2.
    assert main([*args, "--dob-format", "%Y-%m-%d"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Error: cannot read the person to watch: dob: '12/12/2001' is not a")
    assert "in the format %Y-%m-%d" in err and "nothing was sent" in err
    # Watching is off by default: the matcher's refusal, mapped as any (exit 3).
    assert main(args) == 3
    err = capsys.readouterr().err
    assert err.startswith("Error: watching is not allowed") and "Watching" not in err
    with matcher.operator() as op:
        op.set_query_limits("trial", allow_watch=True)
    # --timeout: closed without an event, exit 0, the matcher no longer holding it.
    assert main([*args, "--timeout", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "Watch closed: --timeout 1 s reached; 0 events received." in captured.err
    until(lambda: open_watches(matcher) == 0)
    # The operator rotates north's token: the matcher ends the watch; said, exit 3.
    running = Running(args)
    until(lambda: open_watches(matcher) == 1 or running.code is not None)
    with matcher.operator() as op:
        op.rotate_token("trial", "north")
    assert running.wait() == 3
    err = capsys.readouterr().err
    assert "Error: the watch ended after 0 events: " in err and "rotated" in err
    # The matcher stops (to restart, say): it ends the watch at once, UNAVAILABLE (not after
    # the 5 s grace given to calls in flight); said, exit non-zero.
    until(lambda: open_watches(matcher) == 0)
    running = Running(watch_args(matcher, project.tokens["south"], secret_file, *grace_args()))
    until(lambda: open_watches(matcher) == 1 or running.code is not None)
    matcher.server.stop(grace=5)
    assert running.wait() == 4  # as any matcher that cannot be reached
    err = capsys.readouterr().err
    assert "Error: the watch ended after 0 events: the matcher is stopping; the watch is " in err
    assert "open it again once the matcher is back [UNAVAILABLE]" in err
    assert "Traceback" not in err


@pytest.mark.slow
@pytest.mark.parametrize("stop, said", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_a_watch_in_a_shell_prints_each_match_and_ctrl_c_or_sigterm_closes_it(
    stop: signal.Signals,
    said: str,
    matcher: Matcher,
    watching: ProjectTokens,
    south: Encoded,
    secret_file: Path,
    tmp_path: Path,
) -> None:
    """The command itself, in a process of its own: a line per event as it arrives (not
    when the process ends), and SIGINT (Ctrl-C) closes the watch at the matcher, exit 0; and
    SIGTERM (a service manager's stop, `kill`) the same."""
    token = tmp_path / "north.token"
    token.write_text(watching.tokens["north"] + "\n")
    args = watch_args(matcher, watching.tokens["north"], secret_file, *grace_args())
    args[args.index("--token") : args.index("--token") + 2] = ["--token-file", str(token)]
    lines: list[str] = []
    command = [sys.executable, "-m", "blindmatch", *args]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    with subprocess.Popen(command, cwd=ROOT, text=True, **pipes) as proc:  # type: ignore[call-overload]
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None
        reader = threading.Thread(target=lambda: lines.extend(iter(stdout.readline, "")))
        reader.start()
        try:
            until(lambda: open_watches(matcher) == 1 or proc.poll() is not None)
            assert proc.poll() is None, stderr.read()
            with matcher.member(watching.tokens["south"]) as client:
                index_all(client, "trial", south)
            until(lambda: len(lines) >= 1)  # printed while the watch is still open
            assert proc.poll() is None
            proc.send_signal(stop)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(30)
            err = stderr.read()
    assert len(lines) == 1 and lines[0].rstrip().endswith("  query: now held by south")
    assert f"Watch closed: stopped ({said}); 1 event received." in err
    assert "Traceback" not in err
    until(lambda: open_watches(matcher) == 0)  # the matcher no longer holds it
    assert watch_entries(matcher) == ["watch", "watch.notify"]


@pytest.mark.slow
def test_a_watch_whose_output_is_closed_closes_the_watch(
    matcher: Matcher,
    watching: ProjectTokens,
    south: Encoded,
    secret_file: Path,
) -> None:
    """`blindmatch watch ... | head -1`: the reader gone, the next event closes the watch
    (exit 0, no traceback), and the matcher no longer holds it."""
    args = watch_args(matcher, watching.tokens["north"], secret_file, *grace_args(), "--json")
    command = [sys.executable, "-m", "blindmatch", *args]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    first: list[str] = []
    with subprocess.Popen(command, cwd=ROOT, text=True, **pipes) as proc:  # type: ignore[call-overload]
        stdout, stderr = proc.stdout, proc.stderr
        assert stdout is not None and stderr is not None

        def head_1() -> None:
            first.append(stdout.readline())
            stdout.close()

        reader = threading.Thread(target=head_1)
        reader.start()
        try:
            until(lambda: open_watches(matcher) == 1 or proc.poll() is not None)
            assert proc.poll() is None, stderr.read()
            with matcher.member(watching.tokens["south"]) as client:
                index_all(client, "trial", south)  # the first event: read, then closed
                until(lambda: not reader.is_alive())
                remove_from_index(client, "trial", KEY, ["S-13"])
                index_all(client, "trial", south)  # Grace again: a second event
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(30)
            err = stderr.read()
    assert json.loads(first[0])["partner"] == "south"
    assert "Watch closed: standard output closed; 2 events received." in err
    assert "Traceback" not in err and "BrokenPipe" not in err
    until(lambda: open_watches(matcher) == 0)


# -- in a two-server project --------------------------------------------------------------


@pytest.fixture(scope="module")
def south_export(tmp_path_factory: pytest.TempPathFactory) -> tuple[Export, Path]:
    """South's export of 300 people, encoded `--two-server`."""
    folder = tmp_path_factory.mktemp("members")
    (folder / "linkage.secret").write_text(STRONG_SECRET + "\n")
    export = write_exports(folder, seed=7, size=300)["south-police"]
    encoded = folder / "south.encoded"
    assert main(["encode", str(export.csv), "--schema", str(SCHEMA), "--secret-file",
                 str(folder / "linkage.secret"), "--mapping", str(export.mapping),
                 "--out", str(encoded), "--two-server", "--quiet"]) == 0  # fmt: skip
    return export, encoded


@pytest.mark.server
def test_in_a_two_server_project_a_watch_is_told_of_a_partners_later_upload(
    world: World,  # noqa: F811
    south_export: tuple[Export, Path],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    export, folder = south_export
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    # North watches two people south holds, as rows of a CSV in south's layout.
    watched = sorted(export.truth)[:2]
    with open(export.csv, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    people = world.folder / "people.csv"
    with open(people, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([rows[0], *(r for r in rows[1:] if r[0] in watched)])
    out = world.folder / "hits.csv"
    args = ["watch", str(people), "--mapping", str(export.mapping), "--project", "shares",
            "--schema", str(SCHEMA), "--secret-file", str(folder.parent / "linkage.secret"),
            "--purpose", "case 24/118", "--count", "2", "--out", str(out), "--timeout", "120",
            "--allow-band-keys",  # (the suite's S1 asks for them)
            "--server", world.target, "--token", two.tokens["north"]]  # fmt: skip
    running = Running(args)
    realtime = world.server.realtime
    until(lambda: len(realtime.watches) == 1 or running.code is not None)
    assert running.code is None, capsys.readouterr().err
    assert world.cli("upload", str(folder), "--project", "shares",
                     token=two.tokens["south"]) == 0  # fmt: skip
    assert running.wait(120) == 0
    captured = capsys.readouterr()
    assert "Watching 2 records in shares" in captured.err
    # S1 blocks every pair in the suite: the watch, sent without band keys, was opened again
    # with them at south's upload, and a query of the same records caught up on it.
    assert "south's new upload is over S1's unblocked bound" in captured.err
    assert "Caught up on south's upload: 2 events" in captured.err
    told = [line.split("  ", 1)[1] for line in captured.out.splitlines() if "now held" in line]
    assert sorted(told) == [f"{i}: now held by south (caught up by a query)" for i in watched]
    with open(out, newline="", encoding="utf-8") as fh:
        assert sorted(r[1] for r in list(csv.reader(fh))[1:]) == sorted(watched)
    # Closed: the matcher holds no watch, S1 and S2 forget the watched records.
    until(lambda: len(realtime.watches) == 0 and not realtime.two_watches._names)
    # `watch` asked the project's mode alone (DescribeProject settings_only): north was not
    # recorded looking at its partners' upload status (it was, once a watch, walk2s).
    assert not [r for r in db_rows(world.data_dir, "audit") if r[3] == "project.describe"]
    for role in ("s1", "s2"):
        until(lambda: not [n for n in world.roles[role].service.held if "@" in n])  # noqa: B023
    # A comparison that cannot be made ends the watch: here S1's own query limit (1 record a
    # day) refuses the two watched records at south's next upload, which S1 compares whole
    # (its shipped cap: the watch stays without band keys). Said, exit 3.
    world.roles["s1"].service.queries = RoleQueries("S1", QueryLimits(Limit(1, "day")))
    monkeypatch.setattr(world.roles["s1"].service, "exhaustive", exhaustive.SHIPPED_PAIRS)
    running = Running(args)
    until(lambda: len(realtime.watches) == 1 or running.code is not None)
    assert world.cli("upload", str(folder), "--project", "shares",
                     token=two.tokens["south"]) == 0  # fmt: skip
    assert running.wait(120) == 3
    err = capsys.readouterr().err
    assert "Error: the watch ended after 0 events: " in err and "--query-limit 1/day" in err, err
    until(lambda: len(realtime.watches) == 0 and not realtime.two_watches._names)
