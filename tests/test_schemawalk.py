"""docs/schema.md walked as a member's engineer adapting the schema: what clkhash accepts
but blindmatch cannot use is refused at load (so `schema check` says it, exit 2), naming
the file, the JSON path and what to do."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from blindmatch.cli import main
from tests.support import FIELD_LEVEL_SCHEMA, PERSON_SCHEMA, Org, encode_cli

DEFAULT: dict[str, Any] = json.loads(PERSON_SCHEMA.read_text())


def check(tmp_path: Path, raw: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str:
    """`schema check` on `raw`: must exit 2 with one `Error:` line naming the file."""
    path = tmp_path / "member.json"
    path.write_text(json.dumps(raw))
    code = main(["schema", "check", str(path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"Error: {path}: "), err
    assert "Traceback" not in err
    return err


def passes(path: Path, raw: dict[str, Any]) -> None:
    """`schema check` on `raw`, written to `path`: valid (exit 0)."""
    path.write_text(json.dumps(raw))
    assert main(["schema", "check", str(path)]) == 0


def test_a_hardening_salt_field_the_schema_lacks_is_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: schema check said valid, and encode read the whole export and then died
    # with a ValueError traceback ('dobb' is not in list).
    raw = copy.deepcopy(DEFAULT)
    raw["blindmatch"]["hardening"] = {"salt": {"field": "dobb", "part": "year"}}
    err = check(tmp_path, raw, capsys)
    assert "blindmatch.hardening.salt.field is 'dobb', not a hashed field" in err


def test_salting_by_a_field_the_fallback_leaves_out_is_refused_by_schema_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(DEFAULT)
    raw["blindmatch"]["hardening"] = {"salt": {"field": "dob"}}
    assert "which the fallback CLK (blindmatch.fallback) leaves out" in check(tmp_path, raw, capsys)


def test_bad_hardening_settings_are_refused_by_schema_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(DEFAULT)
    raw["blindmatch"]["hardening"] = {"blip": {"epsilon": -1}}
    assert "blindmatch.hardening: blip must be" in check(tmp_path, raw, capsys)


def test_hardening_a_field_level_schema_is_refused_by_schema_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = json.loads(FIELD_LEVEL_SCHEMA.read_text())
    raw["blindmatch"]["hardening"] = {"salt": {"field": "dob"}}
    assert "not supported with field-level schemas" in check(tmp_path, raw, capsys)


@pytest.mark.parametrize(
    ("where", "key"),
    [("top", "fallbak"), ("feature", "normalize")],
)
def test_a_misspelt_blindmatch_key_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str, key: str
) -> None:
    # clkhash ignores unknown keys, so the typo was silently another schema (no fallback
    # CLK, no nicknames), refused only later by the partners' fingerprints.
    raw = copy.deepcopy(DEFAULT)
    section = raw["blindmatch"] if where == "top" else raw["features"][0]["blindmatch"]
    section[key] = section.pop("fallback" if where == "top" else "normalise")
    err = check(tmp_path, raw, capsys)
    path = "blindmatch" if where == "top" else "features[0] ('given_name').blindmatch"
    assert f"{path}: unknown key(s) '{key}'" in err


def test_a_blindmatch_section_that_is_not_an_object_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(DEFAULT)
    raw["blindmatch"] = ["record-level"]
    assert "blindmatch must be an object, not list" in check(tmp_path, raw, capsys)


@pytest.mark.parametrize("schema", [PERSON_SCHEMA, FIELD_LEVEL_SCHEMA])
def test_clkconfig_xor_folds_which_clkhash_ignores_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], schema: Path
) -> None:
    # clkhash 0.18 validates clkConfig.xorFolds but reads `xor_folds`: the CLKs came out
    # unfolded, byte for byte those of the schema without it.
    raw = json.loads(schema.read_text())
    raw["clkConfig"]["xorFolds"] = 1
    err = check(tmp_path, raw, capsys)
    assert "clkConfig.xorFolds is 1: clkhash accepts it but does not fold" in err
    assert "blindmatch.hardening" in err


def test_an_upper_case_text_pattern_no_normalised_value_can_match_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every value was invalid (encoded as missing) and encode exited 0.
    raw = copy.deepcopy(DEFAULT)
    raw["features"][4]["format"] = {"type": "string", "pattern": "[A-Z]{1,2}[0-9][A-Z0-9]?"}
    err = check(tmp_path, raw, capsys)
    assert "features[4] ('postcode').format.pattern" in err
    assert "Write the pattern in lower case" in err
    raw["features"][4]["format"] = {"type": "string", "pattern": r"[a-z]{1,2}\d[a-z0-9]?\d\w+"}
    passes(tmp_path / "lower.json", raw)


def test_a_clkhash_validation_error_names_the_feature_and_the_types_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(DEFAULT)
    raw["features"][3]["format"]["type"] = "boolean"
    err = check(tmp_path, raw, capsys)
    assert "features[3] ('sex').format: type 'boolean' is not one of" in err
    assert "'string'" in err
    raw = copy.deepcopy(DEFAULT)
    raw["features"][1]["hashing"]["comparison"]["type"] = "soundex"
    err = check(tmp_path, raw, capsys)
    assert "features[1] ('surname').hashing.comparison: type 'soundex'" in err


def test_an_invalid_regular_expression_is_named_not_just_schema_was_invalid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(DEFAULT)
    raw["features"][0]["format"] = {"type": "string", "pattern": "[a-"}
    err = check(tmp_path, raw, capsys)
    assert "features[0] ('given_name'): Invalid regular expression" in err


@pytest.mark.parametrize(
    ("field", "date_format", "said"),
    [("surname", None, "a text field, with no year"), ("dob", "%d/%m/%Y", "its year is not")],
)
def test_salting_by_the_year_of_a_value_without_one_is_refused(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    field: str,
    date_format: str | None,
    said: str,
) -> None:
    # harden.salt_value("smith", "year") is "": every record was salted alike, i.e. not at
    # all, and the encode report still said "hardening: salt=surname:year".
    raw = copy.deepcopy(DEFAULT)
    del raw["blindmatch"]["fallback"], raw["blindmatch"]["rule"]
    if date_format:
        raw["features"][2]["format"]["format"] = date_format
    raw["blindmatch"]["hardening"] = {"salt": {"field": field}}
    err = check(tmp_path, raw, capsys)
    assert 'salt.part is "year" (the default)' in err and said in err
    raw["blindmatch"]["hardening"] = {"salt": {"field": field, "part": "value"}}
    passes(tmp_path / "value.json", raw)


def test_a_segment_length_in_a_record_level_schema_is_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(DEFAULT)
    raw["features"][1]["blindmatch"] = {"bits": 256}
    err = check(tmp_path, raw, capsys)
    assert "features[1] ('surname').blindmatch.bits is for field-level schemas only" in err


def test_normalise_options_on_a_feature_that_is_not_text_are_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(DEFAULT)
    raw["features"][3]["blindmatch"] = {"normalise": ["first-name"]}
    err = check(tmp_path, raw, capsys)
    assert "features[3] ('sex').blindmatch.normalise is for text features" in err


def test_mapping_a_field_the_schema_ignores_says_it_is_ignored_not_unknown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from blindmatch.client.encoding.mapping import load_mapping
    from blindmatch.client.encoding.schema import load_schema
    from blindmatch.client.errors import InputError

    raw = copy.deepcopy(DEFAULT)
    raw["features"][3] = {"identifier": "sex", "ignored": True}
    schema_path = tmp_path / "no-sex.json"
    schema_path.write_text(json.dumps(raw))
    mapping = tmp_path / "map.toml"
    mapping.write_text('id = "id"\n[fields]\nsurname = "Surname"\nsex = "Sex"\n')
    with pytest.raises(InputError) as refused:
        load_mapping(mapping, load_schema(schema_path))
    said = str(refused.value)
    assert "fields.sex: the schema no-sex.json ignores it (not hashed" in said, said
    assert "not a field of the schema" not in said


def test_schema_check_prints_the_hardening_a_schema_sets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(DEFAULT)
    raw["blindmatch"]["hardening"] = {
        "blip": {"epsilon": 3},
        "salt": {"field": "surname", "part": "value"},
    }
    passes(tmp_path / "hardened.json", raw)
    assert "  hardening: salt=surname:value, BLIP eps=3 (flip 4.74%) (as the encode" in (
        capsys.readouterr().out
    )


def test_a_fallback_with_a_key_besides_without_is_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(DEFAULT)
    raw["blindmatch"]["fallback"] = {"without": ["dob"], "bits": 512}
    assert 'blindmatch.fallback must be {"without": [FIELD, ...]}' in check(tmp_path, raw, capsys)


def test_encode_two_server_refuses_a_field_level_schema_before_reading_the_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # It wrote ENCODED/twoserver/ (shares of the concatenated segments, which S1 and S2
    # would score by one Dice) and exited 0, though privacy-check says such a schema has no
    # two-server upload. The export here does not exist: the schema is refused first.
    from tests.support import NORTH_MAP, STRONG_SECRET

    (tmp_path / "map.toml").write_text(NORTH_MAP)
    (tmp_path / "secret").write_text(STRONG_SECRET)
    out = tmp_path / "enc"
    code = main(
        [
            "encode",
            str(tmp_path / "absent.csv"),
            "--schema",
            str(FIELD_LEVEL_SCHEMA),
            "--secret-file",
            str(tmp_path / "secret"),
            "--mapping",
            str(tmp_path / "map.toml"),
            "--out",
            str(out),
            "--two-server",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"Error: {FIELD_LEVEL_SCHEMA}: a field-level schema has no two-server upload" in err
    assert not out.exists()


V2 = {
    "version": 2,
    "clkConfig": {"l": 1024, "kdf": {"type": "HKDF", "hash": "SHA256", "keySize": 64}},
    "features": [
        {
            "identifier": "given_name",
            "format": {"type": "string", "encoding": "utf-8"},
            "hashing": {"ngram": 2, "strategy": {"numBits": 200}, "hash": {"type": "blakeHash"}},
        },
        {
            "identifier": "dob",
            "format": {"type": "date", "format": "%Y-%m-%d"},
            "hashing": {
                "ngram": 1,
                "positional": True,
                "strategy": {"numBits": 300},
                "hash": {"type": "blakeHash"},
            },
        },
    ],
}


def test_a_v2_schema_is_told_the_command_that_converts_it_and_that_command_works(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import subprocess
    import sys

    err = check(tmp_path, V2, capsys)
    assert "(version is 2, expected version 3); convert it with clkhash" in err
    command = err.split("file): ", 1)[1].strip()  # python -c '...' PATH > v3.json
    assert command.startswith("python -c '") and command.endswith("> v3.json"), command
    script = command.split("'")[1]
    converted = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "member.json")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (tmp_path / "v3.json").write_text(converted)
    assert main(["schema", "check", str(tmp_path / "v3.json")]) == 0


def test_a_schema_saved_with_a_byte_order_mark_loads_as_a_mapping_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from blindmatch.client.encoding.fingerprint import schema_digest
    from blindmatch.client.encoding.schema import load_schema

    path = tmp_path / "notepad.json"
    path.write_bytes(b"\xef\xbb\xbf" + PERSON_SCHEMA.read_bytes())
    assert main(["schema", "check", str(path)]) == 0, capsys.readouterr().err
    assert schema_digest(load_schema(path).raw) == schema_digest(DEFAULT)  # same fingerprint


def test_an_empty_or_utf16_schema_file_is_named_as_such(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "member.json"
    path.write_text("\n")
    assert main(["schema", "check", str(path)]) == 2
    assert "the schema file is empty" in capsys.readouterr().err
    path.write_bytes(PERSON_SCHEMA.read_text().encode("utf-16"))
    assert main(["schema", "check", str(path)]) == 2
    assert "not UTF-8 text (invalid start byte at byte 0): save it as UTF-8" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    ("hardening", "said"),
    [
        ({"balance": True}, "hardening.balance with blindmatch.fallback"),
        ({"xorFolds": 1}, "hardening.xorFolds with blindmatch.fallback"),
    ],
)
def test_balancing_or_folding_with_a_fallback_clk_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], hardening: dict[str, Any], said: str
) -> None:
    # Balanced, every record's two CLKs have the same popcount, so the matcher read every
    # record as lacking dob and scored every pair by the fallback CLK.
    raw = copy.deepcopy(DEFAULT)
    raw["blindmatch"]["hardening"] = hardening
    assert said in check(tmp_path, raw, capsys)
    del raw["blindmatch"]["fallback"], raw["blindmatch"]["rule"]
    passes(tmp_path / "no-fallback.json", raw)


def test_schema_check_warns_of_strong_blip_beside_a_fallback_clk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = copy.deepcopy(DEFAULT)
    for epsilon, warned in ((1, True), (3, False)):
        raw["blindmatch"]["hardening"] = {"blip": {"epsilon": epsilon}}
        passes(tmp_path / f"blip{epsilon}.json", raw)
        out = capsys.readouterr().out
        assert (f"warning: BLIP epsilon {epsilon} with a fallback CLK" in out) is warned, out


def test_encode_reports_schema_checks_warning_of_strong_blip_beside_a_fallback_clk(
    orgs: dict[str, Org], secret_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before, only `schema check` said it: `encode` with the same schema, whose report is what
    # a member reads before uploading, said nothing of records scored by the wrong CLK.
    raw = copy.deepcopy(DEFAULT)
    for epsilon, warned in ((2, True), (3, False)):
        raw["blindmatch"]["hardening"] = {"blip": {"epsilon": epsilon}}
        schema = tmp_path / f"blip{epsilon}.json"
        passes(schema, raw)
        checked = [
            line.strip().removeprefix("warning: ")
            for line in capsys.readouterr().out.splitlines()
            if "BLIP epsilon" in line and "fallback CLK" in line
        ]
        out = tmp_path / f"blip{epsilon}.encoded"
        assert encode_cli(orgs["north"], secret_file, out, schema) == 0, capsys.readouterr().err
        printed = capsys.readouterr().out
        report = json.loads((out / "local" / "report.json").read_text())
        blurred = [w for w in report["warnings"] if "with a fallback CLK: flipping" in w]
        assert blurred == checked == ([blurred[0]] if warned else []), (checked, blurred)
        assert all(w in printed for w in blurred), printed
