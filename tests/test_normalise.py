"""Normalisation: the same value written differently encodes identically."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.normalise import (
    FieldRule,
    InvalidValue,
    fold,
    is_missing,
    normalise_text,
    normalise_value,
)

TEXT = FieldRule("surname", "text")
DOB = FieldRule("dob", "date", date_format="%Y-%m-%d")
SEX = FieldRule("sex", "enum", enum_values=("F", "M", "X"))

names = st.text(
    alphabet=st.characters(categories=("Lu", "Ll", "Nd", "Zs", "Pd", "Po")), max_size=30
)
dates = st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31))
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
