"""`blindmatch schema check`: invalid schemas fail, weak designs warn, good ones pass."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from blindmatch.cli import main
from blindmatch.client.encoding.schemacheck import check_schema
from tests.support import (
    FEBRL4,
    FIELD_LEVEL_SCHEMA,
    NO_FALLBACK_SCHEMA,
    ORIGINAL_NO_FALLBACK_SCHEMA,
    ORIGINAL_SCHEMA,
    PERSON_SCHEMA,
)

RECOMMENDED: dict[str, Any] = json.loads(PERSON_SCHEMA.read_text())
FIELD_LEVEL: dict[str, Any] = json.loads(FIELD_LEVEL_SCHEMA.read_text())


def record_level(**bits_per_feature: int) -> dict[str, Any]:
    """The recommended schema's mapped fields (not its derived `names`) as a plain
    record-level schema with the given budgets."""
    raw = copy.deepcopy(RECOMMENDED)
    del raw["blindmatch"]
    raw["features"] = [f for f in raw["features"] if "from" not in f.get("blindmatch", {})]
    for feature in raw["features"]:
        feature.pop("blindmatch", None)
        budget = bits_per_feature.get(feature["identifier"], 100)
        feature["hashing"]["strategy"] = {"bitsPerFeature": budget}
    return raw


def write(tmp_path: Path, raw: dict[str, Any]) -> Path:
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(raw))
    return path


def test_the_recommended_schema_is_valid_and_raises_no_warnings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["schema", "check", str(PERSON_SCHEMA)]) == 0
    out = capsys.readouterr().out
    assert (
        "valid clkhash v3 schema, record-level with a fallback CLK without dob, 1024 bits, "
        "6 hashed fields" in out
    )
    assert "no warnings" in out
    for opt_in, fields in ((NO_FALLBACK_SCHEMA, 6), (ORIGINAL_NO_FALLBACK_SCHEMA, 5)):
        assert main(["schema", "check", str(opt_in)]) == 0
        out = capsys.readouterr().out
        assert f"valid clkhash v3 schema, record-level, 1024 bits, {fields} hashed fields" in out
        assert "no warnings" in out
    assert main(["schema", "check", str(ORIGINAL_SCHEMA)]) == 0
    out = capsys.readouterr().out
    assert "record-level with a fallback CLK without dob, 1024 bits, 5 hashed fields" in out
    assert "no warnings" in out
    assert main(["schema", "check", str(FIELD_LEVEL_SCHEMA)]) == 0
    out = capsys.readouterr().out
    assert "valid clkhash v3 schema, field-level, 1024 bits, 5 hashed fields" in out
    assert "no warnings" in out


def test_a_fallback_must_name_hashed_fields_and_carry_enough_bits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(RECOMMENDED)
    raw["blindmatch"]["fallback"] = {"without": ["middle_name"]}
    assert main(["schema", "check", str(write(tmp_path, raw))]) == 2
    assert "not hashed fields of this schema" in capsys.readouterr().err
    raw["blindmatch"]["fallback"] = {"without": ["sex"]}  # 3% of the bits: indistinct
    warnings = check_schema(write(tmp_path, raw)).warnings
    assert any(w.startswith("sex makes only") for w in warnings), warnings


def test_an_invalid_schema_exits_2_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(RECOMMENDED)
    raw["features"][0]["hashing"]["comparison"] = {"type": "ngram"}  # no n
    path = write(tmp_path, raw)
    assert main(["schema", "check", str(path)]) == 2
    assert f"Error: {path}: invalid clkhash v3 schema" in capsys.readouterr().err


def test_field_level_segments_must_add_up_to_l(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(FIELD_LEVEL)
    raw["clkConfig"]["l"] = 2048
    assert main(["schema", "check", str(write(tmp_path, raw))]) == 2
    assert "blindmatch.bits add up to 1024" in capsys.readouterr().err


def test_a_segment_that_is_not_a_power_of_two_is_invalid(tmp_path: Path) -> None:
    raw = copy.deepcopy(FIELD_LEVEL)
    raw["features"][0]["blindmatch"]["bits"] = 200
    assert main(["schema", "check", str(write(tmp_path, raw))]) == 2


def test_a_saturated_record_level_filter_warns_but_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = record_level(given_name=400, surname=400, dob=500, sex=50, postcode=400)
    assert main(["schema", "check", str(write(tmp_path, raw))]) == 0
    assert "too many bits" in capsys.readouterr().out


def test_a_nearly_empty_filter_warns(tmp_path: Path) -> None:
    raw = record_level(given_name=10, surname=10, dob=10, sex=2, postcode=10)
    assert any("too few bits" in w for w in check_schema(write(tmp_path, raw)).warnings)


def test_a_dominant_field_warns(tmp_path: Path) -> None:
    raw = record_level(given_name=50, surname=50, dob=600, sex=10, postcode=50)
    warnings = check_schema(write(tmp_path, raw)).warnings
    assert any(w.startswith("dob makes") and "dominates" in w for w in warnings)


def test_an_exact_field_with_a_big_budget_warns(tmp_path: Path) -> None:
    raw = record_level(given_name=60, surname=60, dob=60, sex=120, postcode=60)
    assert any("sex is compared exactly" in w for w in check_schema(write(tmp_path, raw)).warnings)


def test_a_tiny_l_warns(tmp_path: Path) -> None:
    raw = record_level(given_name=30, surname=30, dob=30, sex=5, postcode=30)
    raw["clkConfig"]["l"] = 256
    assert any("l is 256" in w for w in check_schema(write(tmp_path, raw)).warnings)


def test_a_saturated_field_level_segment_warns(tmp_path: Path) -> None:
    raw = copy.deepcopy(FIELD_LEVEL)
    raw["features"][4]["hashing"]["strategy"] = {"bitsPerFeature": 400}  # postcode, 128 bits
    warnings = check_schema(write(tmp_path, raw)).warnings
    assert any(w.startswith("postcode: about") and "look alike" in w for w in warnings)


def test_fill_is_estimated_from_typical_token_counts() -> None:
    check = check_schema(FEBRL4 / "schema.json")
    dob = next(f for f in check.fields if f.name == "date_of_birth")
    assert dob.tokens == 10  # positional unigrams of YYYY-MM-DD
    assert 0.6 < check.record_fill < 0.8
