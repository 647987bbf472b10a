"""Progress where stderr is not a terminal (a log, cron, CI, systemd, `nohup`): plain lines,
throttled (client/progress.py). Before, `encode` printed nothing until it ended (minutes at
1,000,000 rows) and `run` only `queued`, then `done`: a long run looked like a hung one."""

from __future__ import annotations

import io
import itertools
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from blindmatch.cli.app import main
from blindmatch.client import ProjectTokens, progress
from blindmatch.client.progress import LINE_EVERY_S, Progress
from tests.support import (
    NORTH_MAP,
    PERSON_SCHEMA,
    Matcher,
    Org,
    encode_all,
    encode_cli,
    low_change_limit,
)


def _ticking_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock that moves a throttle interval and more at each look: only the
    share-of-the-total rule holds lines back."""
    ticks = itertools.count()
    monkeypatch.setattr(progress, "clock", lambda: next(ticks) * (LINE_EVERY_S + 1))


def test_many_ticks_give_a_few_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """100,000 ticks of one stage: at most ~20 lines however often the clock allows one,
    two (its start, its end) when it never does; a stage without a total, one a look. A
    stage with a total starts with what begins and its total, not mid-step (it said
    `encoding: 1/100000` and, a stage of one tick, only its 100%)."""
    stream = io.StringIO()
    bar = Progress("encoding", 100_000, unit="CLKs", stream=stream)
    for _ in range(100_000):
        bar.update(1)
    bar.close()
    lines = stream.getvalue().splitlines()  # the test takes far less than 30 s
    assert lines[0] == "encoding: 0/100000 CLKs (0%)"  # as it first moves: its start
    assert lines[1].startswith("encoding: 100000/100000 CLKs (100%) after ")
    assert len(lines) == 2

    _ticking_clock(monkeypatch)
    stream = io.StringIO()
    bar = Progress("encoding", 100_000, unit="CLKs", stream=stream)
    for _ in range(100_000):
        bar.update(1)
    bar.stage("waiting")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert 20 <= len(lines) <= 23  # start, every 5%, "waiting"
    assert "encoding: 50000/100000 CLKs (50%) after " in stream.getvalue()  # 5% from 0
    assert lines[-1] == "waiting"

    stream = io.StringIO()
    reading = Progress("reading", unit="rows", stream=stream, prefix="encode")
    for _ in range(5):
        reading.update(1000)
    reading.close()
    lines = stream.getvalue().splitlines()
    assert lines[0] == "encode: reading: 1000 rows" and len(lines) == 5  # one a look
    assert lines[1].startswith("encode: reading: 2000 rows after 1m")

    stream = io.StringIO()
    Progress("encoding", 10, stream=stream, enabled=False).update(10)
    assert stream.getvalue() == ""


def test_encode_piped_prints_progress_lines_and_quiet_none(
    tmp_path: Path,
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _ticking_clock(monkeypatch)
    rows = 4000  # 4 ticks of reading, 8 of encoding (1,000 CLKs each, the fallback's too)
    org = Org(tmp_path / "north.csv", tmp_path / "north.toml")
    org.csv.write_text(
        "URN,Forenames,Surname,DOB,Sex,Postcode\n"
        + "".join(f"N{i},Grace,Hughes{i},12/12/2001,F,EH1 9ZZ\n" for i in range(rows)),
        encoding="utf-8",
    )
    org.mapping.write_text(NORTH_MAP, encoding="utf-8")
    assert encode_cli(org, secret_file, tmp_path / "north.encoded") == 0
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert lines[0] == "reading: 1000 rows"  # once the first rows are read
    assert lines[1].startswith("reading: 2000 rows after ")
    assert sum(line.startswith("reading: 4000 rows after ") for line in lines) == 1
    # Rows, as the report counts them (was "/8000 CLKs": both CLKs, beside "Encoded 4000 of
    # 4000 rows"): each of a row's two CLKs half a row.
    assert lines[4] == "encoding: 0/4000 rows (0%)"  # its start and total (was "4/8 ...")
    assert sum(line.startswith("encoding: 4000/4000 rows (100%)") for line in lines) == 1
    assert "Encoded 4000 of 4000 rows" in out
    assert "encoding:" not in out and "reading" not in out  # stdout: the report alone
    assert "Wrote " in out

    quiet = ["encode", str(org.csv), "--schema", str(PERSON_SCHEMA), "--secret-file",
             str(secret_file), "--mapping", str(org.mapping), "--out", str(tmp_path / "q"),
             "-q"]  # fmt: skip
    assert main(quiet) == 0
    out, err = capsys.readouterr()
    assert "encoding" not in err and "reading" not in err and out == ""


def test_upload_and_run_piped_print_progress_lines(
    matcher: Matcher,
    project: ProjectTokens,
    orgs: dict[str, Org],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    folders = {name: tmp_path / f"{name}.encoded" for name in orgs}
    encode_all(orgs, tmp_path)
    server = ["--project", project.project, "--server", matcher.target]
    for name, folder in folders.items():
        assert main(["upload", str(folder), *server, "--token", project.tokens[name]]) == 0
    out, err = capsys.readouterr()
    # rows, as encode's lines and report count them (it said "5/5 rec"); a start line with
    # the total, then the end (it said only "uploading: 5/5 rows (100%)", no start)
    assert err.splitlines()[0] == "uploading: 0/5 rows (0%)", err
    assert err.splitlines()[1].startswith("uploading: 5/5 rows (100%) after "), err
    assert err.splitlines()[2] == "waiting for the matcher to store it", err
    assert "uploading" not in out
    # -q: nothing at all, as `encode -q` and `two-server upload -q` (it still said `Uploaded
    # 5 encodings to ...`; opsleft, 2026-12-07); exit 0 says it is stored
    quiet = ["upload", str(folders["north"]), *server, "--token", project.tokens["north"], "-q"]
    assert main(quiet) == 0
    assert capsys.readouterr() == ("", "")

    assert main(["run", *server, "--token", project.tokens["north"]]) == 0
    out, err = capsys.readouterr()
    # the last stage's line at least: a run of five records can pass its comparing stage
    # between two of the watch's looks on a loaded host (seen in CI: queued, then done)
    assert "run: done" in err.splitlines() or "run: comparing" in err
    assert all(line.startswith(("Run ", "run: ")) for line in err.splitlines()), err
    assert out.startswith("Run ") and "run: " not in out

    assert main(["run", *server, "--token", project.tokens["north"], "-q"]) == 0
    out, err = capsys.readouterr()
    assert "run: " not in err

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: the bar
    assert main(["run", *server, "--token", project.tokens["north"]]) == 0
    err = capsys.readouterr().err
    # the bar (tqdm's, "|" its frame) names the stages the watch saw: a five-record run can
    # pass its comparing stage between two looks (1 run in about 15 on a loaded host; more
    # with the suite's files in RAM), and the bar then names only the last, "done"
    assert "|" in err and any(s in err for s in ("comparing", "solve", "store", "done:")), err
    assert "run: " not in err
    assert ": :" not in err  # was "comparing: :  50%": tqdm's {desc} ends in ": " already


def test_index_sync_says_its_changes_as_throttled_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`index sync`'s "Change N of M stored" lines, one a change before (a large index over a
    low `--max-index-change-mib`: hundreds of lines), go by progress.py's rule: the first and
    the last here, where the clock never allows one in between."""
    monkeypatch.setattr(progress, "clock", lambda: 0.0)
    with low_change_limit(tmp_path) as (target, token, folder):
        sync = ["index", "sync", str(folder.path), "--project", "trial", "--token", token,
                "--ref-key", str(tmp_path / "south.refkey"), "--server", target]  # fmt: skip
        assert main(sync) == 0
    said = capsys.readouterr()
    parts = int(said.out.split("Index synced in ")[1].split(" changes")[0])
    assert parts >= 3, said.out  # 2,000 records of 160 bytes, under 64 KiB a change
    changes = [line for line in said.err.splitlines() if line.startswith("Change ")]
    assert [c.split(" stored")[0] for c in changes] == [
        f"Change 1 of {parts}",
        f"Change {parts} of {parts}",
    ], said.err


def test_a_runs_counted_stage_it_moved_on_from_ends_at_100(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The watch sees a run's progress at its looks: a two-server run's last batches, its
    solving and its end can fall between two (seen: `run: comparing: 75% after 0s`, then
    `run: done`). The stage a run moved on from, or ended in, is shown whole."""
    from blindmatch.cli.batch import _follow
    from blindmatch.client.remote.model import RunProgress

    def status(state: str, stage: str, done: int = 0, total: int = 0) -> RunProgress:
        return RunProgress("r1", state, stage, done, total, 0, "")

    for last in ([status("running", "solve", 0, 1), status("done", "done")],
                 [status("done", "")], [status("done", "compare", 3, 4)]):  # fmt: skip
        stream = io.StringIO()
        bar = Progress("", prefix="run", counts=False, stream=stream)
        seen = [status("running", "block", 1, 1), status("running", "compare", 0, 4),
                status("running", "compare", 3, 4), *last]  # fmt: skip
        assert _follow(bar, seen) == seen[-1]
        bar.close()
        lines = stream.getvalue().splitlines()
        comparing = [line for line in lines if line.startswith("run: comparing")]
        assert comparing[-1].startswith("run: comparing: 100% after "), lines

    stream = io.StringIO()  # a run that failed comparing: its count as it was
    bar = Progress("", prefix="run", counts=False, stream=stream)
    _follow(bar, [status("running", "compare", 3, 4), status("failed", "compare", 3, 4)])
    bar.close()
    assert stream.getvalue().splitlines()[-1].startswith("run: comparing: 75% after ")


def test_a_run_seen_only_as_running_still_shows_it_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A member's watch says `running` once and nothing more until the run ends (srvleft: the
    stages' times told it what others share), so `run` piped to a log printed `run: running`
    and then nothing, for minutes, as a hung command would. While no status comes it says
    how long the run has gone on: a line at most every `LINE_EVERY_S` seconds, rarer as the
    wait grows, none after the run ends."""
    import time

    from blindmatch.cli import batch
    from blindmatch.client.remote.model import RunProgress

    monkeypatch.setattr(batch, "PAUSE_S", 0.02)
    monkeypatch.setattr(progress, "LINE_EVERY_S", 0.1)

    def statuses() -> Iterator[RunProgress]:
        yield RunProgress("r1", "running", "running", 0, 0, 0, "")
        time.sleep(1.0)  # the run goes on at the matcher; the watch says nothing
        yield RunProgress("r1", "done", "done", 0, 0, 3, "")

    stream = io.StringIO()
    bar = Progress("", prefix="run", counts=False, stream=stream)
    final = batch._follow(bar, statuses())
    bar.close()
    assert final is not None and final.state == "done"
    lines = stream.getvalue().splitlines()
    assert lines[0] == "run: running", lines
    goes_on = [line for line in lines[1:] if line.startswith("run: running after ")]
    assert 2 <= len(goes_on) <= 10, lines  # about every 0.1 s, then a fifth of the time
    assert lines[-1] == "run: done", lines


def test_a_failed_watch_is_raised_where_run_follows_it() -> None:
    """The watch is read on a thread (so the wait can be shown): its error still ends
    `run` as before, not the thread alone."""
    from blindmatch.cli import batch
    from blindmatch.client.errors import MatcherError
    from blindmatch.client.remote.model import RunProgress

    def statuses() -> Iterator[RunProgress]:
        yield RunProgress("r1", "running", "running", 0, 0, 0, "")
        raise MatcherError("the matcher at 127.0.0.1:1 is unreachable")

    bar = Progress("", prefix="run", counts=False, stream=io.StringIO())
    with pytest.raises(MatcherError, match="unreachable"):
        batch._follow(bar, statuses())
