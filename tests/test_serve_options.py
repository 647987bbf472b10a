"""`serve`'s numeric options out of range are refused before anything starts: exit 2, one
`Error:` line naming the option, no data dir made. `--lookup-threads -1` and
`--max-streams-per-member 0` ended in a traceback from deep in the start (a ValueError of
matcher/placement.py, of the stream limits), and `--workers -1` was taken (freshwalk: each
option of `serve --help` tried as a new operator might)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindmatch.cli.app import main


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (["--lookup-threads", "-1"], "--lookup-threads -1: 0 (no placement) or more"),
        (["--max-streams-per-member", "0"], "--max-streams-per-member 0: at least 1 (a member"),
        (["--max-streams-per-member", "-1"], "--max-streams-per-member -1: at least 1"),
        (["--workers", "-1"], "--workers -1: at least 1 (leave it out for every core)"),
        (["--workers", "0"], "--workers 0: at least 1"),
    ],
    ids=["lookup-threads", "per-member-0", "per-member-neg", "workers", "workers-0"],
)
def test_serve_refuses_an_out_of_range_option_in_one_line_and_makes_no_data_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: list[str], said: str
) -> None:
    data = tmp_path / "data"
    code = main(["serve", "--data-dir", str(data), "--listen", "127.0.0.1:0", *option])
    err = capsys.readouterr().err
    assert (code, err.startswith(f"Error: {said}"), "Traceback" in err) == (2, True, False), err
    assert not data.exists()
