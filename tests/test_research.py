"""Research use: quality per partner, a warning when a recommended threshold rests on few
labelled pairs, a threshold sweep from one scores project whose threshold is a floor, and a
privacy-check that gives no verdict on a sample too small and advice that fits the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.messy import write_exports
from blindmatch.cli import main
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.encoded import Encoded, write_encoded
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.results import join_results
from blindmatch.client.tools.evaluate import (
    evaluate_files,
    quality,
    read_results,
    read_truth,
    recommend,
    sweep,
    thin_evidence,
)
from blindmatch.client.tools.privacy.attacks import AttackResult
from blindmatch.client.tools.privacy.report import CheckReport
from tests.support import PERSON_SCHEMA, Matcher, Org

TRUTH = """member,record_id,entity_id
north,N1,e1
north,N2,e2
north,N3,e3
south,S1,e1
south,S2,e2
retail,R1,e1
retail,R3,e3
"""

# N1 is held by south and retail; N2 by south; N3 by retail.
HITS = "record_id,partner\nN1,south\nN1,retail\nN2,retail\nN3,retail\n"


def test_evaluate_reports_each_partner_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "truth.csv").write_text(TRUTH)
    (tmp_path / "hits.csv").write_text(HITS)
    args = ["evaluate", "--results", str(tmp_path / "hits.csv")]
    assert main([*args, "--truth", str(tmp_path / "truth.csv")]) == 0
    out = capsys.readouterr().out
    assert "(north): precision 0.7500, recall 0.7500" in out
    assert "with retail: precision 0.6667, recall 1.0000" in out  # N2,retail is false
    assert "with south: precision 1.0000, recall 0.5000" in out  # N2,south was missed


def scores_file(tmp_path: Path, true: int, false: int) -> Path:
    """A scores file of `true` true hits (scores 0.99..) and `false` false ones (0.70..)."""
    truth = ["member,record_id,entity_id"]
    rows = ["record_id,partner,partner_row,score"]
    for i in range(true + false):
        entity = f"e{i}" if i < true else f"x{i}"
        truth += [f"north,N{i},e{i}", f"south,S{i},{entity}"]
        score = 0.99 - 0.0001 * i if i < true else 0.70 - 0.0001 * i
        rows.append(f"N{i},south,{i},{score:.4f}")
    (tmp_path / "truth.csv").write_text("\n".join(truth) + "\n")
    path = tmp_path / "scores.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_a_threshold_recommended_from_few_labelled_pairs_comes_with_a_warning(
    tmp_path: Path,
) -> None:
    few = evaluate_files(scores_file(tmp_path, 12, 3), tmp_path / "truth.csv", member="north")
    assert few.recommended is not None
    assert "rests on few labelled pairs (15 scored results: 12 true, 3 false" in few.render()
    many = evaluate_files(scores_file(tmp_path, 400, 40), tmp_path / "truth.csv", member="north")
    assert many.warning == "" and "warning" not in many.render()


def test_no_warning_needs_a_precision_whose_lower_bound_meets_the_target(tmp_path: Path) -> None:
    path = scores_file(tmp_path, 300, 20)
    truth = read_truth(tmp_path / "truth.csv")
    points = sweep(read_results(path, "north"), truth, "north")
    best = recommend(points)
    assert best is not None and best.quality.precision == 1.0
    assert thin_evidence(points, best) == ""
    # 300 true of 300 reported: the 95% lower bound is about 0.987, under a 0.99 target.
    uncertain = thin_evidence(points, best, min_precision=0.99)
    assert "could be as low as 0.9874" in uncertain
    # 320 scored, 20 false: enough pairs overall, so not "few" and no "at least 100" advice.
    assert uncertain.startswith("the recommended threshold's precision may be under 0.99 (")
    assert "few labelled" not in uncertain and "at least 100" not in uncertain


def encode_export(csv_path: Path, mapping: Path, out: Path) -> Encoded:
    schema = load_schema(PERSON_SCHEMA)
    result = encode_csv(csv_path, schema, load_mapping(mapping, schema), b"one shared secret")
    return write_encoded(
        out, clks=result.clks, clk_bits=result.clk_bits, fingerprint=result.fingerprint,
        ids=result.ids, report={}, fallback_bits=result.fallback_bits, rule=result.rule,
    )  # fmt: skip


def north_hits(
    matcher: Matcher, name: str, encoded: dict[str, Encoded], **options: Any
) -> set[tuple[str, str, float]]:
    """(record, partner, score) of north's results in a new project over `encoded`."""
    with matcher.operator() as op:
        project = op.create_project(name, list(encoded), **options)
    for member, enc in encoded.items():
        with matcher.member(project.tokens[member]) as client:
            client.upload(name, enc)
    with matcher.member(project.tokens["north"]) as client:
        run = client.start_run(name)
        assert [s.state for s in client.watch_run(name, run.run_id)][-1] == "done"
        rows = join_results(client.results(name), encoded["north"])
    return {(r[0], r[1], float(r[3]) if len(r) > 3 else 1.0) for r in rows}


@pytest.mark.slow
def test_one_scores_project_at_a_floor_sweeps_what_projects_at_each_threshold_report(
    matcher: Matcher, tmp_path: Path
) -> None:
    """Greedy solving takes pairs best first, so with two members the hits of a project at
    threshold t are exactly the floor project's links that score t or more."""
    exports = write_exports(tmp_path / "exports", seed=5, size=1500)
    encoded = {
        member: encode_export(exports[org].csv, exports[org].mapping, tmp_path / member)
        for member, org in (("north", "north-police"), ("south", "south-police"))
    }
    floor = north_hits(matcher, "floor", encoded, disclosure="scores", threshold=0.6)
    for t in (0.75, 0.85):
        at_t = north_hits(matcher, f"at-{int(t * 100)}", encoded, threshold=t)
        swept = {(rid, partner) for rid, partner, score in floor if score >= t}
        assert swept == {(rid, partner) for rid, partner, _ in at_t}
        assert len(swept) > 100


def report_for(encoding: str, *, records: int = 5000, field_level: bool = False) -> CheckReport:
    leak = AttackResult("frequency alignment", encoding, "surname", "list", records, 400, 50, 9)
    return CheckReport("data.csv", records, "none", [leak], [], field_level=field_level,
                       fallback=("dob",))  # fmt: skip


def test_privacy_check_gives_no_verdict_on_a_small_sample(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["privacy-check", str(orgs["north"].csv), "--mapping", str(orgs["north"].mapping)]
    args += ["--secret-file", str(secret_file), "--out", str(tmp_path / "check")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "NO VERDICT: 5 records are too few for the attacks to mean anything" in out
    # Known pairs that leave no record to attack are said so, not shown as a 0% row.
    assert "not attacked: graph matching (10 known): the attacker's plaintext covers 5" in out
    assert "graph matching (50 known) " not in out
    assert main([*args, "--strict"]) == 1
    small = report_for("field", records=900)
    assert not small.passed and small.verdict().startswith("NO VERDICT")


@pytest.mark.parametrize(
    ("encoding", "field_level", "advice"),
    [
        ("field", True, "This schema is field-level"),
        ("field", False, "not what it uploads: field-level filters need salting"),
        ("fallback", False, "The fallback CLKs (blindmatch.fallback, without dob) leak"),
        ("record", False, "The record-level CLKs this schema uploads leak"),
    ],
)
def test_privacy_check_advice_fits_the_schema_checked(
    encoding: str, field_level: bool, advice: str
) -> None:
    verdict = report_for(encoding, field_level=field_level).verdict()
    assert verdict.startswith("LEAKS") and advice in verdict


def test_quality_per_partner_adds_up(tmp_path: Path) -> None:
    (tmp_path / "truth.csv").write_text(TRUTH)
    truth = read_truth(tmp_path / "truth.csv")
    found = {("north", "N1", "south"), ("north", "N3", "retail")}
    whole = quality(found, truth, "north")
    parts = [quality(found, truth, "north", p) for p in ("south", "retail")]
    assert whole.true_positives == sum(p.true_positives for p in parts)
    assert whole.actual == sum(p.actual for p in parts)
