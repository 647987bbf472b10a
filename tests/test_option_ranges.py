"""Numeric options out of range are refused before anything starts or is sent: exit 2, one
line naming the option. `serve --lookup-threads -1` and `--max-streams-per-member 0` ended in
a traceback from deep in the start (a ValueError of matcher/placement.py, of the stream
limits), `--workers -1` was taken; `admin query-limits --per-minute -1`, `admin query-report
--hours -1` and `audit export --after -1` ended in protobuf's `ValueError: Value out of
range` as the request was built (freshwalk: each option of `--help` tried as a new user
might). `--workers` and `--lookup-threads` out of range are usage errors now, as the option's
type reads them (tests/test_input_mistakes.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindmatch.cli.app import main


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (["--max-streams-per-member", "0"], "--max-streams-per-member 0: at least 1 (a member"),
        (["--max-streams-per-member", "-1"], "--max-streams-per-member -1: at least 1"),
    ],
    ids=["per-member-0", "per-member-neg"],
)
def test_serve_refuses_an_out_of_range_option_in_one_line_and_makes_no_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], said: str
) -> None:
    data = tmp_path / "data"
    code = main(["serve", "--data-dir", str(data), "--listen", "127.0.0.1:0", *option])
    err = capsys.readouterr().err
    assert (code, err.startswith(f"Error: {said}"), "Traceback" in err) == (2, True, False), err
    assert not data.exists()


@pytest.mark.parametrize(
    ("command", "said"),
    [
        (["admin", "query-limits", "--per-minute", "-1"], "--per-minute: -1: give a whole number"),
        (["admin", "query-limits", "--per-day", "0"], "--per-day: 0: give a whole number of at"),
        (["admin", "query-report", "--hours", "-1"], "--hours: -1: give a whole number of at"),
        (["audit", "export", "--after", "-1"], "--after: -1: give a whole number of at least 0"),
    ],
    ids=["per-minute", "per-day", "hours", "after"],
)
def test_an_operator_count_out_of_range_is_a_usage_error_not_a_traceback(
    capsys: pytest.CaptureFixture[str], command: list[str], said: str
) -> None:
    with pytest.raises(SystemExit) as ended:
        main([*command, "--project", "trial", "--server", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert (ended.value.code, said in err, "Traceback" in err) == (2, True, False), err
