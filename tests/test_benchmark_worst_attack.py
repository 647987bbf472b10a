"""The benchmarks that report a privacy-check's worst attack (benchmarks/quality.py,
recall.py, privacy.py) rank and say it as `blindmatch privacy-check` does: by the share of
all the member's records it re-identified (`CheckReport.share_of_all`), not of the records
that attack tried. Before 2026-12-08 they ranked by the latter, so a graph attack on a sample,
or a bit-level attack on a field few records fill, was their worst where privacy-check's
verdict named another, and their figures disagreed with its verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import quality, recall
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.privacy import check
from blindmatch.client.tools.privacy.attacks import AttackResult
from blindmatch.client.tools.privacy.report import CheckReport

# 120 records. A field 10 of them fill, 9 re-identified: 90% of those tried, 7.5% of all;
# one every record fills, 48 re-identified: 40% of all; graph matching on a sample of 120
# (50 known pairs), 69 of the 70 left: 98.6% of those tried, 57.5% of all.
SPARSE = AttackResult("frequency alignment", "field", "middle_name", "-", 10, 9, 5, 4)
FULL = AttackResult("frequency alignment", "field", "surname", "-", 120, 48, 60, 20)
GRAPH = AttackResult("graph matching, 50 known pairs", "record", "(record)", "-", 70, 69, 70,
                     69, claims=70, sample=120)  # fmt: skip


def checked(results: list[AttackResult]) -> CheckReport:
    return CheckReport("export.csv", 120, "none", results, [])


@pytest.fixture
def check_returns(monkeypatch: pytest.MonkeyPatch) -> list[CheckReport]:
    """`check_csv` answering with the report put in the list (the attacks are not the
    benchmarks' to run here: their ranking is)."""
    reports: list[CheckReport] = []
    monkeypatch.setattr(check, "check_csv", lambda *args, **kwargs: reports[0])
    return reports


def test_quality_reports_the_worst_attacks_share_of_all_records_as_privacy_check_does(
    check_returns: list[CheckReport], tmp_path: Path
) -> None:
    report = checked([FULL, GRAPH])
    check_returns.append(report)
    share, where = quality.privacy(tmp_path, "messy")
    assert report.worst is GRAPH and share == report.share_of_all(GRAPH) == 69 / 120
    assert where == "graph matching, 50 known pairs, record (record)"
    assert "57.5% of all 120" in report.reidentified(GRAPH)  # as its verdict says it


def test_recall_ranks_each_encodings_worst_attack_by_share_of_all_records(
    check_returns: list[CheckReport], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    check_returns.append(checked([FULL, SPARSE]))
    schema = load_schema(quality.SCHEMA)
    names = ("default", "phonetic", "swap", "phonetic+swap", "no-postcode", "no-surname",
             "dob-bigrams", "dob-bigrams+swap", "dob-bigrams+phonetic+swap")  # fmt: skip
    recall.privacy(tmp_path, "messy", dict.fromkeys(names, schema), b"k" * 32)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(names)
    assert all(line.endswith("120 records: field: 40.00% (frequency alignment surname)")
               for line in lines)  # fmt: skip
