"""A member's `blindmatch results` file read for `evaluate`: `record_id,partner` (hits), with
`partner_row` (mapping) and `score` (scores) when the project disclosed them, each row kept
with its line. A count-level file (partner,shared_subjects) is refused as such: it names no
record. Moved out of `client.tools.evaluate` (which re-exports these names) as it neared 500
lines.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

from blindmatch.client.errors import InputError
from blindmatch.client.files import read_csv_lines
from blindmatch.client.tools.truth import Hit

__all__ = ["COUNT_HEADER", "Scored", "read_results"]


@dataclass(frozen=True)
class Scored:
    """One row of a results file, with its score when the project disclosed scores, and the
    line of the file it is on (0: not read from a file)."""

    hit: Hit
    score: float | None = None
    line: int = dataclasses.field(default=0, compare=False)


# A results file at the count level (client/results.py HEADERS): how many records each
# partner shares, never which.
COUNT_HEADER = ["partner", "shared_subjects"]


def _refuse_counts(path: Path) -> None:
    """A count-level results file, said as such: it names no record, so no hit of it can be
    scored (was: "column(s) record_id missing", as for a file of another kind)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = [h.strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError):
        return  # (read_csv_lines says what is wrong with it)
    if header[: len(COUNT_HEADER)] == COUNT_HEADER:
        raise InputError(
            f"{path}: count-level results (partner,shared_subjects: how many of your records "
            "each partner shares, the project's `count` disclosure) name no record, so they "
            "cannot be scored against a truth file. evaluate scores results at the hits, "
            "mapping or scores level (record_id,partner,...): a project created with "
            "--disclose hits, mapping or scores (scores for a threshold sweep)"
        )


def read_results(path: str | Path, member: str) -> list[Scored]:
    """A results file (hits, mapping or scores level) as scored hits of `member`, in file
    order, each with its line in the file (as an editor numbers them). A row without a
    record id or partner, a score that is not a finite number, a file that scores some rows
    and not others, and a (record, partner) listed twice are each an `InputError` naming
    the row."""
    path = Path(path)
    _refuse_counts(path)
    rows = read_csv_lines(path, ("record_id", "partner"))
    out: list[Scored] = []
    seen: dict[tuple[str, str], int] = {}
    for line, row in rows:
        record_id, partner = (row["record_id"] or "").strip(), (row["partner"] or "").strip()
        if not record_id or not partner:
            raise InputError(f"{path}: row {line}: record_id and partner are both required")
        if (record_id, partner) in seen:
            raise InputError(
                f"{path}: row {line}: record {record_id!r} with {partner} is already on row "
                f"{seen[record_id, partner]}; a results file lists each hit once (is it two "
                "files joined?)"
            )
        seen[record_id, partner] = line
        text = (row.get("score") or "").strip()
        score = None
        if text:
            try:
                score = float(text)
            except ValueError:
                score = math.nan
            if not math.isfinite(score):
                raise InputError(f"{path}: row {line}: score {text!r} is not a number")
        if out and (score is None) != (out[0].score is None):
            raise InputError(
                f"{path}: row {line}: "
                + (
                    f"no score, but row {out[0].line} has one"
                    if score is None
                    else f"a score, but row {out[0].line} has none"
                )
                + "; a results file scores every row (--disclose scores) or none"
            )
        out.append(Scored((member, record_id, partner), score, line))
    return out
