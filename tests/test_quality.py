"""Match quality on realistic messy three-organisation exports, through the real CLI flow.

A seed not used to tune anything: 20,000 people, two police forces and a retail
partnership (benchmarks/messy.py), default settings, `hits` disclosure. The same
default encoding must also pass `blindmatch privacy-check`'s bit-level attacks (issue 8) on these
exports.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.households import write_exports as write_households
from benchmarks.messy import ORGS, write_exports
from benchmarks.quality import SCHEMA, anchor, blindmatch_flow
from benchmarks.quality_errors import encoded, linked
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.tools.evaluate import Quality, quality, read_truth
from blindmatch.client.tools.privacy.check import check_csv


@pytest.mark.slow
def test_default_flow_beats_the_hand_tuned_anchor_with_f1_0985(tmp_path: Path) -> None:
    folder = tmp_path / "exports"
    write_exports(folder, seed=101)
    truth = read_truth(folder / "truth.csv")
    ours = quality(blindmatch_flow(folder, tmp_path), truth)
    # The default (issue 21's layout with its fallback CLK); the original layout with the
    # fallback reached 0.9876 on this seed, without it 0.9777 (docs/evaluation.md).
    assert ours.f1 >= 0.985 and ours.precision >= 0.98, ours
    theirs = quality(anchor(folder), truth)
    assert ours.f1 > theirs.f1, (ours, theirs)
    # The default encoding of the sparsest export (retail: a third without a date of birth)
    # keeps every bit-level attack under 1% of records (the graph-matching attack does not
    # stay under it: tests/test_graph_attack.py).
    retail = ORGS[2].name
    report = check_csv(
        folder / f"{retail}.csv", load_schema(SCHEMA), folder / f"{retail}.toml", b"secret",
        attacks=("frequency", "pattern", "qgram"),
    )  # fmt: skip
    assert report.passed, report.render()


@pytest.mark.slow
def test_household_weights_schema_stops_linking_household_members(tmp_path: Path) -> None:
    # households.py (the generator the default was not chosen on): most of the default's
    # false hits are two members of one household, who share surname and postcode. The
    # opt-in schema with fewer bits on what a household shares (surname, postcode, `names`)
    # keeps them under the threshold without losing F1. Seed 7, 5,000 people, in-process as a
    # run does (benchmarks/quality_errors.py), both scored by one CLK a pair (the default's
    # layout without its rule, person-uk-no-rule.json): precision 0.9687 -> 0.9931, F1
    # 0.9683 -> 0.9800. The default's rule over both CLKs removes part of the same errors
    # (precision 0.9839, F1 0.9753), and the weights still do better on this generator.
    write_households(tmp_path, seed=7, size=5_000)
    truth = read_truth(tmp_path / "truth.csv")

    def scored(schema: Path) -> Quality:
        return quality(set(linked(encoded(tmp_path, "households", schema, b"secret"))), truth)

    one_clk = scored(SCHEMA.with_name("person-uk-no-rule.json"))
    weighted = scored(SCHEMA.with_name("person-uk-households.json"))
    default = scored(SCHEMA)
    assert weighted.precision >= one_clk.precision + 0.015, (one_clk, weighted)
    assert weighted.f1 > one_clk.f1, (one_clk, weighted)
    assert default.precision >= one_clk.precision + 0.01, (one_clk, default)
    assert default.f1 > one_clk.f1, (one_clk, default)
    assert weighted.f1 > default.f1, (default, weighted)
