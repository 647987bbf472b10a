"""`blindmatch demo`: the main job on the embedded default, as `make demo` runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client.encoding import sharedfiles
from blindmatch.client.errors import InputError
from blindmatch.client.tools.demo import encode_members
from blindmatch.matcher.core import exhaustive

# The demo starts its own matcher in this process.
pytestmark = pytest.mark.server


def test_demo_runs_the_whole_flow_and_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "Run demo-run-1: done" in out
    for org in ("north-police", "south-police", "retail-bcrp"):
        assert f"{org}" in out
    assert "also held by: retail-bcrp" in out
    assert "A few hits from north-police's point of view" in out
    f1 = float(out.split("F1 ")[1].split()[0])
    assert f1 >= 0.9


def test_demo_two_server_runs_the_flow_and_the_matcher_holds_no_clk_or_share(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    keep = tmp_path / "demo"

    def whole(folder: object) -> None:
        raise AssertionError(f"{folder} read whole: the demo uploads as `upload` does")

    # Its uploads read the share files a part at a time (open_shared), as `upload` does;
    # they were read whole (read_shared).
    monkeypatch.setattr(sharedfiles, "load_shared", whole)
    # S1 as shipped, as `make demo` runs it (the suite's conftest makes S1 block every pair
    # and allow a query's band keys): its pairs and its queries compared whole, no band keys.
    monkeypatch.setattr(exhaustive, "DEFAULT_PAIRS", exhaustive.SHIPPED_PAIRS)
    monkeypatch.setattr(exhaustive, "DEFAULT_SMALL_PAIRS", exhaustive.SHIPPED_SMALL_PAIRS)
    monkeypatch.setattr(exhaustive, "DEFAULT_QUERY_BAND_KEYS", "refuse")
    assert main(["demo", "--two-server", "--records", "200", "--keep", str(keep)]) == 0
    out = capsys.readouterr().out
    # It says that the three parties share this process for the demo only.
    assert "all run in\nthis one process" in out and "three hosts\noperated independently" in out
    assert "Project demo created in two-server mode" in out
    assert "Run demo-run-1: done (two-server)" in out
    assert "A few hits from north-police's point of view" in out
    assert float(out.split("F1 ")[1].split()[0]) >= 0.9
    # A real-time query in the project: two people partners hold, one no partner holds.
    asked = out.split("A real-time query in the two-server project: north-police asks")[1]
    answers = [line.split(" -> ")[1] for line in asked.splitlines()[1:4]]
    assert answers[2] == "no partner match disclosed", answers  # (was "held by no partner")
    assert all(a.startswith("held by ") for a in answers[:2]), answers
    # What each party held: the matcher how many records, S1 and S2 the shares.
    assert "the matcher (combiner): how many records (" in out
    assert "(its upload files: 0 bytes in all)" in out
    assert "S1: sealed band keys" in out and "S2: the second XOR shares" in out
    assert "the combiner (the matcher) learned: the link bit" in out
    # The same encodings in a CLK project beside it: the same hits, each step's time.
    assert "hits: the CLK project's, all" in out
    for step in ("encode", "upload", "run", "results", "total"):
        assert f"\n  {step} " in out
    # The matcher's data dir, left in --keep: an upload file a member, each empty; the CLK
    # project's matcher beside it holds the CLKs.
    uploads = list((keep / "matcher-data" / "clks").iterdir())
    assert len(uploads) == 3 and all(f.stat().st_size == 0 for f in uploads)
    clks = list((keep / "clk-matcher-data" / "clks").iterdir())
    assert len(clks) == 3 and all(f.stat().st_size > 0 for f in clks)
    assert all((keep / f"{org}.encoded" / "twoserver" / "s1.npz").is_file()
               for org in ("north-police", "south-police", "retail-bcrp"))  # fmt: skip


def test_demo_keep_refuses_a_folder_that_is_not_empty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "something").write_text("mine")
    assert main(["demo", "--keep", str(tmp_path)]) != 0
    assert f"--keep {tmp_path}: not an empty folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["something"]


def test_demo_of_too_few_people_for_every_organisation_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--records 5` left retail-bcrp's export empty, and the demo ended in a StopIteration's
    traceback (freshwalk): under 100 is refused as a usage error (inputwalk), and an
    organisation left without records by a count the option allows is told so, not a
    traceback."""
    for few in ("5", "0"):
        with pytest.raises(SystemExit):
            main(["demo", "--records", few])
        assert f"--records: {few}: give a whole number of at least 100" in capsys.readouterr().err
    with pytest.raises(InputError, match="retail-bcrp's synthetic export holds none") as said:
        encode_members(tmp_path, 5, seed=7)
    assert "give --records 200 or more" in str(said.value)
