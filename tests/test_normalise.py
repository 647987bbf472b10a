"""Normalisation: the same value written differently encodes identically."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from blindmatch.client.encoding.normalise import (
    PLACEHOLDER_DATES,
    FieldRule,
    InvalidValue,
    first_name,
    fold,
    is_missing,
    nicknames,
    normalise_text,
    normalise_value,
)

TEXT = FieldRule("surname", "text")
DOB = FieldRule("dob", "date", date_format="%Y-%m-%d")
SEX = FieldRule("sex", "enum", enum_values=("F", "M", "X"))

names = st.text(
    alphabet=st.characters(categories=("Lu", "Ll", "Nd", "Zs", "Pd", "Po")), max_size=30
)
# Real dates of birth (past ones: a date to come is invalid), but the placeholders systems write
# for "no date" (01/01/1900), which read as missing.
dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2025, 12, 31)).filter(
    lambda day: day not in PLACEHOLDER_DATES
)
DATE_FORMATS = ["%d/%m/%Y", "%Y-%m-%d", "%d %b %Y", "%m/%d/%Y", "%Y%m%d", "%d.%m.%Y"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("O'Brien", "obrien"),
        ("ÉLODIE", "elodie"),
        ("  Smith-Jones ", "smithjones"),
        ("SW1A 1AA", "sw1a1aa"),
        ("sw1a1aa", "sw1a1aa"),
        ("Müller", "muller"),
        ("Straße", "strasse"),
        ("Søren Łukasz", "sorenlukasz"),
        ("Ó'Súilleabháin", "osuilleabhain"),
    ],
)
def test_text_is_folded_to_letters_and_digits(raw: str, expected: str) -> None:
    assert normalise_text(raw) == expected


@given(names)
def test_normalisation_is_idempotent(value: str) -> None:
    once = normalise_text(value)
    assert normalise_text(once) == once


@given(names)
def test_case_does_not_change_the_value(value: str) -> None:
    assert normalise_text(value.upper()) == normalise_text(value.lower()) == normalise_text(value)


@given(names, st.text(alphabet=" \t", max_size=3), st.text(alphabet=" \t", max_size=3))
def test_surrounding_whitespace_does_not_change_the_value(value: str, pre: str, post: str) -> None:
    assert normalise_text(pre + value + post) == normalise_text(value)


@given(st.text(alphabet="aeiouncAEIOUNC", min_size=1, max_size=12))
def test_accents_do_not_change_the_value(base: str) -> None:
    accented = base.translate(str.maketrans("aeiouncAEIOUNC", "áéíóúñçÀÊÏÔÜÑÇ"))
    assert normalise_text(accented) == normalise_text(base)


@given(dates, st.sampled_from(DATE_FORMATS))
def test_declared_date_format_does_not_change_the_value(day: date, fmt: str) -> None:
    written = day.strftime(fmt)
    assert normalise_value(DOB, written, fmt) == day.isoformat()


def test_impossible_date_is_invalid_with_a_reason() -> None:
    with pytest.raises(InvalidValue, match=r"30/02/1970.*%d/%m/%Y"):
        normalise_value(DOB, "30/02/1970", "%d/%m/%Y")


def test_dates_without_a_declared_format_must_be_unambiguous() -> None:
    assert normalise_value(DOB, "1985-03-02") == "1985-03-02"
    assert normalise_value(DOB, "2 Mar 1985") == "1985-03-02"
    with pytest.raises(InvalidValue):
        normalise_value(DOB, "02/03/1985")  # day or month first? the mapping must say


@pytest.mark.parametrize(
    ("raw", "expected"), [("F", "F"), ("female", "F"), ("Male", "M"), (" m ", "M"), ("X", "X")]
)
def test_enum_values_match_case_insensitively_and_by_initial(raw: str, expected: str) -> None:
    assert normalise_value(SEX, raw) == expected


def test_unknown_enum_value_is_invalid() -> None:
    with pytest.raises(InvalidValue, match="not one of F, M, X"):
        normalise_value(SEX, "unknown")


@pytest.mark.parametrize("raw", ["", "   ", "-", " / ", "\t"])
def test_blank_and_punctuation_only_values_are_missing(raw: str) -> None:
    assert is_missing(raw)


def test_fold_keeps_letters_unicode_does_not_decompose() -> None:
    assert fold("Øystein Æsir Þór") == "oystein aesir thor"


# -- given-name options: first name only, nicknames ------------------------------------

GIVEN = FieldRule("given_name", "text", options=("first-name", "nicknames"))
given_names = (
    st.lists(
        st.text(alphabet=st.characters(categories=("Lu", "Ll")), min_size=1, max_size=12),
        min_size=1,
        max_size=3,
    )
    .map(" ".join)
    .filter(first_name)  # a title alone ('DR', 'Mr') is no name: missing, not normalised
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Mary Jane Ann", "mary"),
        ("  ROBERT  james", "robert"),
        ("Bob", "robert"),
        ("bob smith", "robert"),
        ("Mary-Jane Ann", "maryjane"),
        ("Liz, Beth", "elizabeth"),
        ("Zoë", "zoe"),
    ],
)
def test_given_names_keep_the_first_name_and_expand_nicknames(raw: str, expected: str) -> None:
    assert normalise_value(GIVEN, raw) == expected


def test_the_nickname_table_maps_to_full_names_that_are_not_nicknames_themselves() -> None:
    table = nicknames()
    assert table["bob"] == "robert" and table["bill"] == "william"
    assert not set(table.values()) & set(table)


@given(given_names)
def test_given_name_normalisation_is_idempotent(value: str) -> None:
    once = normalise_value(GIVEN, value)
    assert normalise_value(GIVEN, once) == once


@given(given_names, st.text(alphabet=" \t", max_size=3), st.text(alphabet=" \t", max_size=3))
def test_given_names_ignore_case_and_surrounding_whitespace(
    value: str, pre: str, post: str
) -> None:
    expected = normalise_value(GIVEN, value)
    assert normalise_value(GIVEN, pre + value.upper() + post) == expected
    assert normalise_value(GIVEN, value.lower()) == expected


@given(st.text(alphabet="aeiouncAEIOUNC", min_size=1, max_size=12), given_names)
def test_given_names_ignore_accents(base: str, middle: str) -> None:
    accented = base.translate(str.maketrans("aeiouncAEIOUNC", "áéíóúñçÀÊÏÔÜÑÇ"))
    assert normalise_value(GIVEN, f"{accented} {middle}") == normalise_value(GIVEN, base)


@given(st.sampled_from(sorted(nicknames())), given_names)
def test_a_nickname_and_its_full_name_normalise_alike(nick: str, middle: str) -> None:
    full = nicknames()[nick]
    assert normalise_value(GIVEN, f"{nick.title()} {middle}") == normalise_value(GIVEN, full)


def test_first_name_of_a_blank_or_punctuation_value_is_empty() -> None:
    assert first_name(" - , ") == ""
