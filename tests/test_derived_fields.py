"""Derived schema features (`blindmatch.from`): values the encoder makes from other fields
(both names sorted, a name's phonetic code); the default schema has one, `names`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindmatch.client.encoding.encode import encode_csv
from blindmatch.client.encoding.mapping import load_mapping
from blindmatch.client.encoding.normalise import FieldRule, derive, phonetic
from blindmatch.client.encoding.schema import load_schema
from blindmatch.client.errors import InputError
from blindmatch.matcher.core.solve import dice
from tests.support import NORTH_MAP, ORIGINAL_SCHEMA, PERSON_SCHEMA

NAMES = FieldRule("names", "text", options=("sorted",), sources=("given_name", "surname"))


@pytest.mark.parametrize(
    ("a", "b"),
    [("smith", "smyth"), ("macdonald", "mcdonald"), ("philips", "phillips"),
     ("ashcroft", "ashcraft"), ("robert", "rupert")],
)  # fmt: skip
def test_respellings_share_a_phonetic_code(a: str, b: str) -> None:
    assert phonetic(a) == phonetic(b)
    assert len(phonetic(a)) == 4


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12),
       st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=12))  # fmt: skip
def test_sorted_names_do_not_depend_on_which_column_held_which(first: str, last: str) -> None:
    straight = derive(NAMES, {"given_name": first, "surname": last})
    assert straight == derive(NAMES, {"given_name": last, "surname": first})
    assert derive(NAMES, {"given_name": "", "surname": last}) == last


def clk_pair(schema_path: Path, tmp_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """First CLKs of one person written straight and with forename and surname swapped."""
    data = tmp_path / "people.csv"
    data.write_text(
        "URN,Forenames,Surname,DOB,Sex,Postcode\n"
        "N1,Siobhan,Gallagher,02/03/1985,F,SW1A 1AA\n"
        "N2,Gallagher,Siobhan,02/03/1985,F,SW1A 1AA\n"
    )
    (tmp_path / "map.toml").write_text(NORTH_MAP)
    schema = load_schema(schema_path)
    result = encode_csv(data, schema, load_mapping(tmp_path / "map.toml", schema), b"k")
    clks = np.frombuffer(result.clks, dtype=np.uint8).reshape(2, -1)[:, : schema.clk_bits // 8]
    return clks[:1], clks[1:]


def test_the_default_schema_forgives_a_swapped_forename_and_surname(tmp_path: Path) -> None:
    original = dice(*clk_pair(ORIGINAL_SCHEMA, tmp_path))[0]  # no `names` feature
    default = dice(*clk_pair(PERSON_SCHEMA, tmp_path))[0]
    assert original < 0.8 <= default, (original, default)


def test_a_derived_field_is_made_not_mapped(tmp_path: Path) -> None:
    mapping = tmp_path / "map.toml"
    mapping.write_text(NORTH_MAP + 'names = "Surname"\n')
    with pytest.raises(InputError, match=r"fields\.names: the schema derives it from other fields"):
        load_mapping(mapping, load_schema(PERSON_SCHEMA))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"from": ["nickname"], "normalise": ["sorted"]}, "not a text field of this schema"),
        ({"from": ["dob"], "normalise": ["phonetic"]}, "not a text field of this schema"),
        ({"normalise": ["phonetic"]}, "are for derived features only"),
    ],
)
def test_derived_feature_mistakes_are_named(
    tmp_path: Path, change: dict[str, object], message: str
) -> None:
    raw = json.loads(PERSON_SCHEMA.read_text())
    raw["features"][-1]["blindmatch"] = change
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(InputError, match=message):
        load_schema(path)
