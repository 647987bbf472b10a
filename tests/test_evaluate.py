"""`blindmatch evaluate`: precision, recall, F1, threshold sweeps and plots from truth."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import pytest

from blindmatch.cli import main
from blindmatch.client.errors import InputError
from blindmatch.client.tools.evaluate import quality, read_results, read_truth, recommend, sweep

# Entity e1 is held by all three members, e2 by north and south, e3 by north only.
TRUTH = """member,record_id,entity_id
north,N1,e1
north,N2,e2
north,N3,e3
south,S1,e1
south,S2,e2
retail,R1,e1
"""

HITS = """record_id,partner
N1,south
N1,retail
N2,south
N3,retail
"""

SCORES = """record_id,partner,partner_row,score
N1,south,0,0.99
N1,retail,0,0.95
N2,south,1,0.70
N3,retail,0,0.60
"""


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name, text in (("truth", TRUTH), ("hits", HITS), ("scores", SCORES)):
        out[name] = tmp_path / f"{name}.csv"
        out[name].write_text(text)
    return out


def test_truth_lists_the_hits_a_perfect_matcher_reports(files: dict[str, Path]) -> None:
    truth = read_truth(files["truth"])
    assert truth.true_hits("north") == {
        ("north", "N1", "south"),
        ("north", "N1", "retail"),
        ("north", "N2", "south"),
    }
    assert len(truth.true_hits()) == 3 + 3 + 2  # north's, south's, retail's


def test_precision_recall_and_f1_of_a_hits_file(files: dict[str, Path]) -> None:
    truth = read_truth(files["truth"])
    found = [s.hit for s in read_results(files["hits"], "north")]
    q = quality(found, truth, "north")
    assert (q.true_positives, q.predicted, q.actual) == (3, 4, 3)
    assert q.precision == 0.75 and q.recall == 1.0
    assert q.f1 == pytest.approx(2 * 0.75 / 1.75)


def test_the_sweep_recommends_the_best_threshold_with_high_precision(
    files: dict[str, Path],
) -> None:
    truth = read_truth(files["truth"])
    points = sweep(read_results(files["scores"], "north"), truth, "north")
    assert [p.threshold for p in points] == [0.99, 0.95, 0.70, 0.60]
    best = recommend(points)
    assert best is not None and best.threshold == 0.70
    assert best.quality.precision == 1.0 and best.quality.recall == 1.0


def test_the_cli_reports_quality_for_hits_and_says_scores_are_needed_for_a_sweep(
    files: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--results", str(files["hits"]), "--truth", str(files["truth"])]) == 0
    out = capsys.readouterr().out
    assert "(north): precision 0.7500, recall 1.0000, F1 0.8571" in out  # member inferred
    assert "--disclose scores" in out


def test_the_cli_writes_a_sweep_and_two_png_plots_for_scores(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "eval"
    args = ["evaluate", "--results", str(files["scores"]), "--truth", str(files["truth"])]
    assert main([*args, "--member", "north", "--out-dir", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "recommended threshold: 0.7000" in out
    assert (out_dir / "sweep.csv").read_text().startswith("threshold,precision,recall,f1")
    for png in ("scores.png", "precision-recall.png"):
        data = (out_dir / png).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_ids_the_truth_does_not_know_are_an_error(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "other.csv"
    results.write_text("record_id,partner\nX9,south\n")
    assert main(["evaluate", "--results", str(results), "--truth", str(files["truth"])]) == 2
    err = capsys.readouterr().err
    assert "no member in the truth file holds all these record ids (1; none holds any)" in err
    assert "of the same project?" in err


def test_a_truth_file_without_its_header_is_an_error(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("id,entity\nN1,e1\n")
    assert main(["evaluate", "--results", str(files["hits"]), "--truth", str(bad)]) == 2
    assert "member, record_id, entity_id missing" in capsys.readouterr().err


def test_a_truth_or_results_file_saved_with_semicolons_is_told_to_use_commas(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A spreadsheet's `member;record_id;entity_id` was told only that all three columns
    were missing."""
    for name, sep, said in (("truth", ";", "';'"), ("hits", "\t", "tab")):
        other = tmp_path / f"other-{name}.csv"
        other.write_text(files[name].read_text().replace(",", sep))
        given = {**files, name: other}
        argv = ["evaluate", "--results", str(given["hits"]), "--truth", str(given["truth"])]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{other}: column" in err, err
        assert f"; the file looks {said}-separated: save it comma-separated" in err, err


def test_a_bad_row_is_named_by_its_line_in_the_file_blank_lines_counted(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Row numbers counted data rows (from 2), so a blank line above the bad row made them
    name a line before it; they are now the file's lines as an editor shows them."""
    truth = tmp_path / "joined-truth.csv"
    truth.write_text(TRUTH.replace("north,N2,e2\n", "\n\nnorth,N2,e2\n") + "\nnorth,N1,e9\n")
    assert main(["evaluate", "--results", str(files["hits"]), "--truth", str(truth)]) == 2
    assert f"{truth}: row 11: record 'N1' of north listed twice" in capsys.readouterr().err
    results = tmp_path / "results.csv"
    results.write_text('record_id,partner,score\n\nN1,south,0.9\n"N1\n",retail,0.8\n\nN1,south,1\n')
    cli = ["evaluate", "--results", str(results), "--truth", str(files["truth"])]
    assert main([*cli, "--member", "north"]) == 2
    assert f"{results}: row 7: record 'N1' with south is already on row 3" in (
        capsys.readouterr().err
    )
    results.write_text("record_id,partner,score\n\nN1,south,0.9\n\nN9,retail,0.8\n")
    assert main([*cli, "--member", "north"]) == 2
    assert f"{results}: row 5: record id 'N9' is not in the truth" in capsys.readouterr().err
    results.write_text("record_id,partner,score\n\nN1,south,0.9\nN2,south,\n")
    assert main([*cli, "--member", "north"]) == 2
    assert f"{results}: row 4: no score, but row 3 has one" in capsys.readouterr().err


def test_a_large_truth_file_is_read_in_little_memory(tmp_path: Path) -> None:
    """Every row was held as Python tuples, strings and dicts (758 bytes a row at the peak,
    975 MiB for the 1,172,600 rows of docs/performance.md's walk); ids and entities are now
    packed into arrays while the file is read (client/tools/truth.py)."""
    rows = 40_000
    truth = tmp_path / "truth.csv"
    with open(truth, "w", encoding="utf-8") as fh:
        fh.write("member,record_id,entity_id\n")
        fh.writelines(f"{'north' if i % 5 else 'retail'},ID{i:07d},person-{i * 7 % 30_011}\n"
                      for i in range(rows))  # fmt: skip
    tracemalloc.start()
    try:
        read = read_truth(truth)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak / rows < 250, f"{peak / rows:.0f} bytes a row at the peak"
    # The same truth: every record's entity, and who else holds it.
    assert len(read.entity) == rows and read.entity["retail", "ID0000005"] == "person-35"
    held: dict[str, set[str]] = {}
    for (member, _), ent in read.entity.items():
        held.setdefault(ent, set()).add(member)
    expected = {(m, r, p) for (m, r), e in read.entity.items() for p in held[e] if p != m}
    assert read.true_hits() == expected and len(expected) > 1_000


def test_a_truth_file_names_its_first_bad_row_a_repeat_or_a_gap(tmp_path: Path) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text(TRUTH + "south,S1,e7\nnorth,N9,\nnorth,N2,e2\n")
    with pytest.raises(InputError, match=r"row 8: record 'S1' of south listed twice"):
        read_truth(truth)
    truth.write_text(TRUTH + "north,,e7\nsouth,S1,e7\n")
    with pytest.raises(InputError, match="row 8: member, record_id and entity_id are required"):
        read_truth(truth)


def test_a_truth_file_with_a_header_and_no_rows_is_refused(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """It was a traceback (`max() arg is an empty sequence`) while guessing whose the
    results are (walk21, 2026-12-06)."""
    empty = tmp_path / "empty-truth.csv"
    empty.write_text("member,record_id,entity_id\n")
    assert main(["evaluate", "--results", str(files["hits"]), "--truth", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Error: {empty}: a header and no rows; the truth file lists every")


def test_an_unwritable_output_is_refused_before_anything_is_written(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plot that cannot be written used to fail after sweep.csv was (a half-done --out-dir),
    and a file given as --out-dir said only `File exists` (walk21, 2026-12-06)."""
    args = ["evaluate", "--results", str(files["scores"]), "--truth", str(files["truth"])]
    out_dir = tmp_path / "eval"
    (out_dir / "scores.png").mkdir(parents=True)
    assert main([*args, "--out-dir", str(out_dir)]) == 2
    assert "scores.png: is a folder" in capsys.readouterr().err
    assert [p.name for p in out_dir.iterdir()] == ["scores.png"]
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    assert main([*args, "--out-dir", str(a_file)]) == 2
    assert f"{a_file}: is a file; --out-dir names the folder" in capsys.readouterr().err


def test_count_level_results_are_said_to_be_unscorable_not_missing_a_column(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: "column(s) record_id missing; the header must start with record_id,partner (it is
    partner,shared_subjects)", as if the file were damaged."""
    counts = tmp_path / "count.csv"
    counts.write_text("partner,shared_subjects\nsouth,3\n", encoding="utf-8")
    assert main(["evaluate", "--results", str(counts), "--truth", str(files["truth"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"Error: {counts}: count-level results (partner,shared_subjects: how many of your records "
        "each partner shares, the project's `count` disclosure) name no record, so they cannot "
        "be scored against a truth file. evaluate scores results at the hits, mapping or scores "
        "level"
    )
    assert "missing" not in err


def test_a_row_naming_the_member_itself_as_its_partner_is_refused_not_counted_false(
    files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Was: scored as a false hit (precision 0.6000), the truth file holding north's own
    records: a results file of north lists hits with the other members only."""
    results = tmp_path / "north.csv"
    results.write_text(HITS + "N2,north\n", encoding="utf-8")
    assert main(["evaluate", "--results", str(results), "--truth", str(files["truth"])]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"Error: {results}: row 6: record 'N2' names north itself as its partner; a results "
        "file of north lists hits with the other members only"
    )
    assert "Traceback" not in err and not (tmp_path / "north-evaluation").exists()
