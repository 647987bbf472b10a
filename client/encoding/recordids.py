"""Checks on a member's record ids as `readcsv.read_rows` reads them: ids that repeat an
earlier row's (`Repeats`, refused together under `--on-duplicate-id error`), ids that differ
from an earlier one only in case (`case_twins`), and ids Excel wrote as numbers in
scientific notation (`excel_numbers`: digits lost, so ids that were distinct may repeat)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from blindmatch.client.encoding.encodereport import PRINT_LIMIT
from blindmatch.client.errors import InputError
from blindmatch.client.words import counted, word

# A number Excel shows (and saves as CSV) in scientific notation: '9.43477E+09'.
_SCIENTIFIC = re.compile(r"[0-9](\.[0-9]+)?E\+[0-9]+", re.IGNORECASE)


def case_twins(seen: dict[str, tuple[int, bytes]]) -> list[tuple[int, str, int, str]]:
    """The ids of `seen` (id -> (first row, ...), in file order) that differ from an earlier
    one only in case: (row, id, earlier row, earlier id), in file order. Found by a hash of
    each id case-folded (8 bytes an id, not a second dict of every id); ids whose hashes
    meet are compared as strings."""
    folded = np.fromiter((hash(k.casefold()) for k in seen), np.int64, len(seen))
    values, counts = np.unique(folded, return_counts=True)
    if not len(values) or counts.max() < 2:
        return []
    shared = set(values[counts > 1].tolist())
    groups: dict[str, list[str]] = {}
    for k, h in zip(seen, folded.tolist(), strict=True):
        if h in shared:
            groups.setdefault(k.casefold(), []).append(k)
    twins = [(seen[k][0], k, seen[ks[0]][0], ks[0]) for ks in groups.values() for k in ks[1:]]
    return sorted(twins)


def case_warning(twins: list[tuple[int, str, int, str]], column: str) -> str:
    """The rows whose record id differs from an earlier row's only in case (encoded as
    different records, as ids are compared exactly), named with the earlier row."""
    named = ", ".join(
        f"row {row} {rid!r} (row {first} {earlier!r})"
        for row, rid, first, earlier in twins[:PRINT_LIMIT]
    )
    more = f", and {len(twins) - PRINT_LIMIT} more" if len(twins) > PRINT_LIMIT else ""
    return (
        f"column {column}: {counted(len(twins), 'record id')} "
        f"{word(len(twins), 'differs', 'differ')} from an earlier row's only in case, and "
        f"{word(len(twins), 'is', 'are')} encoded as different records: {named}{more}; if each "
        "pair is one record, "
        "give both rows the same id (then --on-duplicate-id applies) or correct the export"
    )


class Repeats:
    """The rows whose record id repeats an earlier row's, under `--on-duplicate-id error`:
    the first PRINT_LIMIT named, all counted, refused together once the file is read."""

    def __init__(self) -> None:
        self.named: list[tuple[int, str, int, bool]] = []  # (row, id, first row, exact)
        self.rows = 0
        self.ids: set[str] = set()

    def add(self, row: int, local_id: str, first_row: int, exact: bool) -> None:
        self.rows += 1
        self.ids.add(local_id)
        if len(self.named) < PRINT_LIMIT:
            self.named.append((row, local_id, first_row, exact))

    def refuse(self, csv_path: Path, column: str, hint: str | None) -> None:
        """An InputError naming every repeated row (the first PRINT_LIMIT, then how many
        more), or nothing where no id repeats."""
        if not self.rows:
            return
        named = "; ".join(
            f"row {row}, column {column}: id {rid!r} "
            f"{'is an exact duplicate of' if exact else 'repeats'} row {first}"
            for row, rid, first, exact in self.named
        )
        if self.rows > 1:
            more = self.rows - len(self.named)
            ids = counted(len(self.ids), "id")
            named = (f"{self.rows} rows repeat an earlier row's id ({ids}): "
                     f"{named}{f'; and {more} more' if more else ''}")  # fmt: skip
        excel = excel_numbers([rid for _row, rid, _first, _exact in self.named])
        if excel:  # not a choice of which row to keep: the ids lost their digits
            raise InputError(f"{csv_path}: {named}; {excel_hint(excel, column)}")
        hint = hint or (
            "or pass --on-duplicate-id keep-first to encode only the first row of each id, "
            "keep-all to encode every row"
        )
        raise InputError(f"{csv_path}: {named}; record ids must be unique ({hint})")


def excel_numbers(ids: Iterable[str]) -> list[str]:
    """The ids (first PRINT_LIMIT) written as numbers in scientific notation."""
    found = []
    for rid in ids:
        if "+" in rid and _SCIENTIFIC.fullmatch(rid):
            found.append(rid)
            if len(found) == PRINT_LIMIT:
                break
    return found


def excel_hint(ids: list[str], column: str) -> str:
    """Why ids like '9.43477E+09' are no record ids, and the fix."""
    shown = ", ".join(repr(i) for i in ids[:3])
    return (
        f"column {column} has ids such as {shown}: numbers Excel wrote in scientific "
        "notation, which loses their last digits (different records can share one, and none "
        "can be joined back to its record); format the column as Text, or as Number with no "
        "decimal places, and save the export again"
    )


__all__ = ["Repeats", "case_twins", "case_warning", "excel_hint", "excel_numbers"]
