"""Frequency tiers (`blindmatch.frequency`, opt-in): a value rare in the member's own export
makes more hash insertions, a common one fewer (client/encoding/frequency.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from blindmatch.cli import main
from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.fingerprint import fingerprint
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.schema import LinkageSchema, load_schema
from blindmatch.client.encoding.schemacheck import check
from blindmatch.client.errors import InputError
from tests.support import NORTH_MAP, PERSON_SCHEMA

TIERS = {
    "rare": {"share": 0.01, "bitsPerFeature": 260},
    "common": {"share": 0.1, "bitsPerFeature": 90},
}


def tiered_schema(tmp_path: Path, field: str = "surname", tiers: Any = None) -> Path:
    raw = json.loads(PERSON_SCHEMA.read_text())
    feature = next(f for f in raw["features"] if f["identifier"] == field)
    feature.setdefault("blindmatch", {})["frequency"] = TIERS if tiers is None else tiers
    path = tmp_path / f"tiered-{field}.json"
    path.write_text(json.dumps(raw))
    return path


def export(tmp_path: Path, surnames: list[str], name: str = "people.csv") -> Path:
    """One row per surname, everything else alike; the first row is Bloggs."""
    path = tmp_path / name
    lines = ["URN,Forenames,Surname,DOB,Sex,Postcode"]
    lines += [f"N{i},Joseph,{s},02/03/1985,M,SW1A 1AA" for i, s in enumerate(surnames)]
    path.write_text("\n".join(lines) + "\n")
    return path


# 120 rows: Bloggs once (rare), Smith 60 times (common), 59 surnames twice or so (middle).
MIDDLE = [f"Name{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(30)]
ROWS = ["Bloggs"] + ["Smith"] * 60 + [m for m in MIDDLE for _ in range(2)][:59]


def first_clks(schema: LinkageSchema, data: Path, tmp_path: Path) -> np.ndarray:
    (tmp_path / "map.toml").write_text(NORTH_MAP)
    result = encode_csv(data, schema, load_mapping(tmp_path / "map.toml", schema), b"k")
    rows = np.frombuffer(result.clks, dtype=np.uint8).reshape(len(result.ids), -1)
    return np.unpackbits(rows[:, : schema.clk_bits // 8], axis=1).astype(bool)


def test_a_rare_surname_sets_more_bits_and_a_common_one_fewer(tmp_path: Path) -> None:
    data = export(tmp_path, ROWS)
    plain = first_clks(load_schema(PERSON_SCHEMA), data, tmp_path)
    tiered = first_clks(load_schema(tiered_schema(tmp_path)), data, tmp_path)
    bloggs, smith, middle = 0, 1, 61
    assert tiered[bloggs].sum() > plain[bloggs].sum()
    assert tiered[smith].sum() < plain[smith].sum()
    assert (tiered[middle] == plain[middle]).all()
    # More insertions of the same tokens only add bits: a member that put the value in a
    # lower tier still shares all of its bits with one that found it rare.
    assert (plain[bloggs] <= tiered[bloggs]).all()
    assert (tiered[smith] <= plain[smith]).all()


def test_each_member_counts_its_own_export(tmp_path: Path) -> None:
    """Bloggs is rare in one export and common in another: the same record, other bits."""
    schema = load_schema(tiered_schema(tmp_path))
    here = first_clks(schema, export(tmp_path, ROWS, "a.csv"), tmp_path)
    there = first_clks(schema, export(tmp_path, ["Bloggs"] * 60 + ROWS[1:61], "b.csv"), tmp_path)
    assert here[0].sum() > there[0].sum()
    assert (there[0] <= here[0]).all()


def test_a_small_export_is_encoded_at_the_middle_tier(tmp_path: Path) -> None:
    """Fewer than 100 values give no frequencies: a small export encodes as without tiers."""
    data = export(tmp_path, ROWS[:50])
    plain = first_clks(load_schema(PERSON_SCHEMA), data, tmp_path)
    tiered = first_clks(load_schema(tiered_schema(tmp_path)), data, tmp_path)
    assert (plain == tiered).all()


def test_encode_warns_of_a_tiered_field_with_too_few_values_naming_it_and_the_count(
    tmp_path: Path, secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A batch export with fewer than 100 values of a tiered field is encoded (a small
    member may still match) at the middle tier, and `blindmatch encode` says so: in its
    report (printed and kept in local/report.json) and on stderr, even with --quiet."""
    schema = tiered_schema(tmp_path)
    (tmp_path / "map.toml").write_text(NORTH_MAP)
    encode = ["encode", "--schema", str(schema), "--secret-file", str(secret_file),
              "--mapping", str(tmp_path / "map.toml")]  # fmt: skip
    small = tmp_path / "small.encoded"
    assert main([*encode, str(export(tmp_path, ROWS[:50])), "--out", str(small)]) == 0
    out, err = capsys.readouterr()
    said = "surname: only 50 present values, fewer than the 100 the schema's frequency tiers"
    assert said in err and "middle tier" in err
    assert f"warning: {said}" in out
    report = json.loads((small / "local" / "report.json").read_text())
    assert any(said in w for w in report["warnings"])
    quiet = tmp_path / "quiet.encoded"
    assert main([*encode, str(export(tmp_path, ROWS[:50])), "--out", str(quiet), "-q"]) == 0
    out, err = capsys.readouterr()
    assert said in err and not out
    enough = tmp_path / "enough.encoded"
    assert main([*encode, str(export(tmp_path, ROWS)), "--out", str(enough)]) == 0
    out, err = capsys.readouterr()
    assert "fewer than the 100" not in out + err


def test_a_one_person_query_of_a_tiered_schema_is_refused_naming_why(
    tmp_path: Path, secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One person has no export to count tiers over: encoded at the middle tier, a rare name
    would have fewer bits than in the members' encodings and score lower than a batch run.
    `blindmatch query` refuses it (before asking the matcher; exit 2), as it does a CSV of
    too few values of a tiered field; a CSV of enough is tiered by its own counts, as an
    export is."""
    schema = tiered_schema(tmp_path)
    query = ["query", "--project", "trial", "--token", "bm_x", "--server", "127.0.0.1:1",
             "--schema", str(schema), "--secret-file", str(secret_file),
             "--purpose", "case 1"]  # fmt: skip
    assert main([*query, "--surname", "Bloggs", "--given-name", "Joseph"]) == 2
    err = capsys.readouterr().err
    assert (
        f"{schema.name}: frequency-tier schemas (blindmatch.frequency on surname) do not "
        "support one-person queries" in err
    )
    assert "nothing was queried" in err and "no matcher at" not in err
    (tmp_path / "map.toml").write_text(NORTH_MAP)
    small = [*query, str(export(tmp_path, ROWS[:50])), "--mapping", str(tmp_path / "map.toml")]
    assert main(small) == 2
    assert "queries of fewer than 100 values of a tiered field (these have 50 of surname)" in (
        capsys.readouterr().err
    )
    enough = [*query, str(export(tmp_path, ROWS)), "--mapping", str(tmp_path / "map.toml")]
    assert main(enough) != 0  # encoded, then no matcher at 127.0.0.1:1
    err = capsys.readouterr().err
    assert "no matcher at 127.0.0.1:1" in err and "frequency-tier" not in err


def test_the_fallback_clk_is_tiered_too(tmp_path: Path) -> None:
    data = export(tmp_path, ROWS)
    (tmp_path / "map.toml").write_text(NORTH_MAP)
    counts = []
    for path in (PERSON_SCHEMA, tiered_schema(tmp_path)):
        schema = load_schema(path)
        result = encode_csv(data, schema, load_mapping(tmp_path / "map.toml", schema), b"k")
        rows = np.frombuffer(result.clks, dtype=np.uint8).reshape(len(result.ids), -1)
        second = np.unpackbits(rows[:, schema.clk_bits // 8 :], axis=1)
        counts.append(second.sum(axis=1))
    assert counts[1][0] > counts[0][0]  # Bloggs
    assert counts[1][1] < counts[0][1]  # Smith


def test_the_encode_report_says_what_the_tiers_tell_the_matcher(tmp_path: Path) -> None:
    schema = load_schema(tiered_schema(tmp_path))
    (tmp_path / "map.toml").write_text(NORTH_MAP)
    result = encode_csv(
        export(tmp_path, ROWS), schema, load_mapping(tmp_path / "map.toml", schema), b"k"
    )
    assert any("frequency tiers" in w and "popcount" in w for w in result.report.warnings)


def test_schema_check_warns_about_the_popcount(tmp_path: Path) -> None:
    warnings = check(load_schema(tiered_schema(tmp_path))).warnings
    assert any("surname: frequency tiers" in w and "popcount" in w for w in warnings)
    assert not any("frequency" in w for w in check(load_schema(PERSON_SCHEMA)).warnings)


def test_the_tiers_are_part_of_the_fingerprint(tmp_path: Path) -> None:
    plain, tiered = load_schema(PERSON_SCHEMA), load_schema(tiered_schema(tmp_path))
    assert fingerprint(plain.raw, b"k") != fingerprint(tiered.raw, b"k")


@pytest.mark.parametrize(
    ("field", "tiers", "message"),
    [
        ("dob", TIERS, "for text features only"),
        ("surname", {"rare": {"share": 0.2, "bitsPerFeature": 200},
                     "common": {"share": 0.1, "bitsPerFeature": 90}},
         "rare.share must be under common.share"),
        ("surname", {"rare": {"share": 1.5, "bitsPerFeature": 200}}, "between 0 and 1"),
        ("surname", {"rare": {"share": 0.01, "bitsPerFeature": 0}}, "positive whole number"),
        ("surname", {"rare": {"share": 0.01}}, "positive whole number"),
        ("surname", {"often": {"share": 0.01, "bitsPerFeature": 9}}, "either or both"),
        ("surname", {}, "either or both"),
    ],
)  # fmt: skip
def test_frequency_mistakes_are_named(tmp_path: Path, field: str, tiers: Any, message: str) -> None:
    with pytest.raises(InputError, match=rf"feature '{field}'.*{message}"):
        load_schema(tiered_schema(tmp_path, field, tiers))


@pytest.mark.parametrize(
    ("name", "base"),
    [("person-uk-frequency.json", "person-uk.json"),
     ("person-uk-households-frequency.json", "person-uk-households.json")],
)  # fmt: skip
def test_the_benchmark_schemas_are_their_base_with_tiers(name: str, base: str) -> None:
    """The grid's `frequency` flows (docs/evaluation.md) differ from the shipped schemas they
    extend only by `blindmatch.frequency`."""
    root = PERSON_SCHEMA.parent.parent
    tiered = json.loads((root / "benchmarks" / "data" / name).read_text())
    assert load_schema(root / "benchmarks" / "data" / name).frequency
    for feature in tiered["features"]:
        feature.get("blindmatch", {}).pop("frequency", None)
        if feature.get("blindmatch") == {}:
            del feature["blindmatch"]
    assert tiered == json.loads((root / "schemas" / base).read_text())
