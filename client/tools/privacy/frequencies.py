"""Public frequency lists: what an attacker knows about how common each value is.

Shipped lists (client/data/public-*.csv, see client/data/PUBLIC-LISTS.md) are
derived from the US census name counts and age distribution that clkhash
bundles. A field without a shipped list is attacked with the data set's own
value frequencies, the strongest assumption (an attacker who knows the
population's distribution exactly); reports say which was used.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from pathlib import Path

from blindmatch.client.encoding.normalise import normalise_text
from blindmatch.client.errors import InputError

DATA = Path(__file__).resolve().parents[2] / "data"


@dataclass(frozen=True)
class FrequencyList:
    """Values (normalised as the encoder normalises them) with counts, most common first."""

    source: str
    values: tuple[str, ...]
    counts: tuple[float, ...]

    @property
    def total(self) -> float:
        return float(sum(self.counts))

    def shares(self) -> dict[str, float]:
        total = self.total or 1.0
        return {v: c / total for v, c in zip(self.values, self.counts, strict=True)}

    @classmethod
    def from_counts(cls, source: str, counts: dict[str, float]) -> FrequencyList:
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(source, tuple(v for v, _ in ordered), tuple(c for _, c in ordered))


def _read(path: Path, normalise: bool = True) -> dict[str, float]:
    counts: dict[str, float] = defaultdict(float)
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader, None)
            for row in reader:
                if len(row) < 2 or not row[0].strip():
                    continue
                value = normalise_text(row[0]) if normalise else row[0].strip()
                counts[value] += float(row[1])
    except FileNotFoundError:
        raise InputError(f"{path}: frequency list not found") from None
    except ValueError as exc:
        raise InputError(f"{path}: not a value,count CSV ({exc})") from None
    return counts


def read_list(path: Path) -> FrequencyList:
    """A user's own `value,count` CSV (header row first); values are normalised as text.
    A first row that is data (its count a number), a row without a count, a count that is
    not a number of at least 0, and a list without values are each an `InputError` naming
    the file and row (the line it starts on, as an editor numbers them: a value spanning
    lines counts each): an attack scored against a list it misread would understate a leak."""
    counts: dict[str, float] = defaultdict(float)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            rows: list[tuple[int, list[str]]] = []  # each with the line it starts on
            read = 0  # lines read before the row
            for row in reader:
                rows.append((read + 1, row))
                read = reader.line_num
    except FileNotFoundError:
        raise InputError(f"{path}: frequency list not found") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 CSV file") from None
    if rows and len(rows[0][1]) >= 2 and _number(rows[0][1][1]) is not None:
        raise InputError(
            f"{path}: row {rows[0][0]} is a value ({rows[0][1][0]!r}), not the header; the "
            "list starts with the header value,count"
        )
    for line, row in rows[1:]:
        if not any(cell.strip() for cell in row):
            continue
        count = _number(row[1]) if len(row) >= 2 else None
        if not row[0].strip() or count is None or count < 0:
            raise InputError(
                f"{path}: row {line}: expected a value and its count (a number of at least 0), "
                f"got {','.join(row)!r}"
            )
        counts[normalise_text(row[0])] += count
    if not counts:
        raise InputError(f"{path}: no values (the list is value,count, a header row first)")
    return FrequencyList.from_counts(str(path), counts)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value != float("inf") else None


@cache
def surnames() -> FrequencyList:
    return FrequencyList.from_counts(
        "shipped: public-surnames.csv", _read(DATA / "public-surnames.csv")
    )


@cache
def given_names() -> FrequencyList:
    return FrequencyList.from_counts(
        "shipped: public-given-names.csv", _read(DATA / "public-given-names.csv")
    )


@cache
def birth_years() -> dict[int, float]:
    return {int(y): c for y, c in _read(DATA / "public-birth-years.csv", normalise=False).items()}


@cache
def dates_of_birth(date_format: str = "%Y-%m-%d") -> FrequencyList:
    """Every day of the shipped birth years, each year's count spread evenly over its days."""
    counts = {}
    for year, count in birth_years().items():
        day = date(year, 1, 1)
        days = (date(year + 1, 1, 1) - day).days
        for offset in range(days):
            counts[(day + timedelta(days=offset)).strftime(date_format)] = count / days
    return FrequencyList.from_counts("shipped: public-birth-years.csv (days uniform)", counts)


def from_data(field: str, values: Iterable[str]) -> FrequencyList:
    """The data set's own frequencies: the attacker knows the distribution exactly."""
    return FrequencyList.from_counts(f"the data's own {field} frequencies", dict(Counter(values)))


__all__ = [
    "FrequencyList",
    "birth_years",
    "dates_of_birth",
    "from_data",
    "given_names",
    "read_list",
    "surnames",
]
