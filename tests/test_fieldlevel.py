"""Field-level encodings: one filter per field, scored field by field at the matcher."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from benchmarks.messy import ORGS, write_exports
from blindmatch.client.encode import encode_csv
from blindmatch.client.evaluate import quality, read_truth
from blindmatch.client.mapping import load_mapping
from blindmatch.client.schema import load_schema
from blindmatch.matcher.core import fieldlevel
from blindmatch.matcher.usecases.runs import match
from tests.conftest import FIELD_LEVEL_SCHEMA, Org

SCHEMA = load_schema(FIELD_LEVEL_SCHEMA)
LAYOUT = fieldlevel.Layout(SCHEMA.field_bits)
FIELDS = SCHEMA.hashed_fields()


def clks(org: Org, secret: bytes = b"k") -> npt.NDArray[np.uint8]:
    result = encode_csv(org.csv, SCHEMA, load_mapping(org.mapping, SCHEMA), secret)
    assert result.field_bits == SCHEMA.field_bits
    return np.frombuffer(result.clks, dtype=np.uint8).reshape(len(result.ids), -1)


def segment(row: npt.NDArray[np.uint8], name: str) -> bytes:
    return row[LAYOUT.byte_slices[FIELDS.index(name)]].tobytes()


def test_the_field_level_schema_is_field_level_and_fills_the_clk() -> None:
    assert SCHEMA.field_level
    assert sum(SCHEMA.field_bits) == SCHEMA.clk_bits == 1024


def test_the_encode_report_says_plainly_that_field_level_leaks(orgs: dict[str, Org]) -> None:
    report = encode_csv(
        orgs["north"].csv, SCHEMA, load_mapping(orgs["north"].mapping, SCHEMA), b"k"
    ).report
    assert any(w.startswith("weaker privacy: field-level encoding") for w in report.warnings)


def test_each_field_has_its_own_segment(orgs: dict[str, Org]) -> None:
    north, south = clks(orgs["north"]), clks(orgs["south"])
    # N3 Aoife Byrne has an impossible date: its dob segment is empty, the others are not.
    assert not any(segment(north[2], "dob"))
    assert all(any(segment(north[2], f)) for f in FIELDS if f != "dob")
    # N1 and S-10 are the same person written differently: every segment is identical.
    assert all(segment(north[0], f) == segment(south[0], f) for f in FIELDS)
    # N2 James Smith and N1 Élodie O'Brien share no value: no segment is identical.
    assert all(segment(north[1], f) != segment(north[0], f) for f in FIELDS)


def test_field_dice_is_missing_where_either_side_is_empty(orgs: dict[str, Org]) -> None:
    north = clks(orgs["north"])
    dice = fieldlevel.field_dice(north[[0, 2]], north[[0, 0]], LAYOUT)
    assert np.all(dice[0] == 1.0)
    assert np.isnan(dice[1, FIELDS.index("dob")])
    levels = fieldlevel.levels(dice)
    assert levels[1, FIELDS.index("dob")] == fieldlevel.MISSING


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[npt.NDArray[np.uint8]], Path]:
    folder = tmp_path_factory.mktemp("messy")
    exports = write_exports(folder, seed=5, size=3000)
    datasets = []
    for style in ORGS:
        exp = exports[style.name]
        result = encode_csv(exp.csv, SCHEMA, load_mapping(exp.mapping, SCHEMA), b"secret")
        datasets.append(np.frombuffer(result.clks, dtype=np.uint8).reshape(-1, 128))
    return datasets, folder


def test_em_learns_that_exact_agreement_is_far_likelier_among_matches(
    messy: tuple[list[npt.NDArray[np.uint8]], Path],
) -> None:
    datasets, _ = messy
    fields = fieldlevel.Fields.of(datasets, LAYOUT)
    pairs = fieldlevel.block(fields)
    u = fieldlevel.u_probabilities(datasets, LAYOUT)
    total = sum(len(a) * len(b) for i, a in enumerate(datasets) for b in datasets[i + 1 :])
    model = fieldlevel.train(pairs, u, total)
    exact = fieldlevel.EXACT
    for f, name in enumerate(FIELDS):
        assert model.m[f, exact] > 0.7, name
        if name != "sex":
            assert model.u[f, exact] < 0.05, name
    assert not fieldlevel.Fields.of(datasets, LAYOUT).selective(FIELDS.index("sex"))


def test_field_level_matching_of_messy_exports_is_precise_and_complete(
    messy: tuple[list[npt.NDArray[np.uint8]], Path],
) -> None:
    datasets, folder = messy
    result = match(datasets, 0.8, field_bits=SCHEMA.field_bits)
    ids = [list(exp) for exp in _ids(folder)]
    links = result.links
    found = {
        (ORGS[d].name, ids[d][r], ORGS[p].name)
        for d, r, p in zip(links.dset, links.row, links.partner, strict=True)
    }
    q = quality(found, read_truth(folder / "truth.csv"))
    assert q.precision >= 0.98 and q.f1 >= 0.97, q
    assert np.all(links.score >= 0.8)  # scores are match probabilities


def _ids(folder: Path) -> list[list[str]]:
    import csv

    out = []
    for style in ORGS:
        with open(folder / f"{style.name}.csv", newline="", encoding="utf-8") as fh:
            out.append([row[style.id_column] for row in csv.DictReader(fh)])
    return out


def test_a_missing_date_of_birth_does_not_count_against_a_match(tmp_path: Path) -> None:
    rng = random.Random(3)
    header = "id,given,surname,dob,sex,postcode\n"
    people = [
        (f"Given{chr(65 + i % 26)}{i}", f"Surname{i * 7}", f"{1950 + i % 50}-0{1 + i % 9}-1{i % 9}")
        for i in range(400)
    ]
    a = [f"A{i},{g},{s},{d},M,AB{i % 90} 1XY" for i, (g, s, d) in enumerate(people)]
    b = [
        f"B{i},{g},{s},{'' if i == 7 else d},M,AB{i % 90} 1XY"
        for i, (g, s, d) in enumerate(people)
        if rng.random() < 0.5 or i == 7
    ]
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        'id = "id"\n[fields]\ngiven_name = "given"\nsurname = "surname"\n'
        'dob = { column = "dob", date_format = "%Y-%m-%d" }\nsex = "sex"\npostcode = "postcode"\n'
    )
    datasets = []
    for name, rows in (("a", a), ("b", b)):
        path = tmp_path / f"{name}.csv"
        path.write_text(header + "\n".join(rows) + "\n")
        datasets.append(clks(Org(path, mapping)))
    result = match(datasets, 0.8, field_bits=SCHEMA.field_bits)
    links = result.links
    pairs = {
        (int(r), int(p))
        for d, r, p in zip(links.dset, links.row, links.partner_row, strict=True)
        if d == 0
    }
    b_ids = [int(r.split(",")[0][1:]) for r in b]
    assert (7, b_ids.index(7)) in pairs  # the record without a dob still matches
    assert len(pairs) == len(b)


def test_a_value_too_common_to_identify_anyone_does_not_block() -> None:
    codes_a = np.array([0, 0, 0, 1, -1])
    codes_b = np.array([0, 0, 1, 1])
    ra, rb = fieldlevel._join(codes_a, codes_b, max_pairs_per_value=5)  # value 0: 3 x 2 pairs
    assert sorted(zip(ra.tolist(), rb.tolist(), strict=True)) == [(3, 2), (3, 3)]
    ra, rb = fieldlevel._join(codes_a, codes_b)
    assert len(ra) == 3 * 2 + 2
