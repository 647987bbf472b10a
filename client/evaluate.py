"""Evaluating results against known truth: precision, recall, F1, threshold sweeps.

A truth file is a CSV with the header `member,record_id,entity_id`: for every
record each member holds, the entity (the real person) it belongs to. Records
of the same person share an entity id across members. A member whose records
are all listed is *known*; a true hit is (member's record, partner) where the
partner holds a record of the same entity.

Results are a member's `blindmatch results` file: `record_id,partner` (hits),
with `partner_row` (mapping) and `score` (scores) when the project disclosed
them. Plain functions only; the plots live in `client.plots`.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from client.errors import InputError

Hit = tuple[str, str, str]  # (member, record_id, partner)


@dataclass(frozen=True)
class Truth:
    """record -> entity for every member, and who holds each entity."""

    entity: dict[tuple[str, str], str]  # (member, record_id) -> entity id
    holders: dict[str, frozenset[str]]  # entity id -> members holding it

    @property
    def members(self) -> frozenset[str]:
        return frozenset(m for m, _ in self.entity)

    def true_hits(self, member: str | None = None) -> set[Hit]:
        """Every (member, record, partner) a perfect matcher would report."""
        out: set[Hit] = set()
        for (m, rid), ent in self.entity.items():
            if member is not None and m != member:
                continue
            out.update((m, rid, p) for p in self.holders[ent] if p != m)
        return out

    def is_true(self, hit: Hit) -> bool:
        ent = self.entity.get((hit[0], hit[1]))
        return ent is not None and hit[2] in self.holders[ent] and hit[2] != hit[0]


@dataclass(frozen=True)
class Scored:
    """One row of a results file, with its score when the project disclosed scores."""

    hit: Hit
    score: float | None = None


@dataclass(frozen=True)
class Quality:
    true_positives: int
    predicted: int
    actual: int

    @property
    def precision(self) -> float:
        return self.true_positives / self.predicted if self.predicted else 1.0

    @property
    def recall(self) -> float:
        return self.true_positives / self.actual if self.actual else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def __str__(self) -> str:
        return (
            f"precision {self.precision:.4f}, recall {self.recall:.4f}, F1 {self.f1:.4f} "
            f"({self.true_positives} of {self.predicted} reported hits true; "
            f"{self.actual} true hits)"
        )


def _rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in required if c not in header]
            if missing:
                raise InputError(
                    f"{path}: column(s) {', '.join(missing)} missing; the header must start "
                    f"with {','.join(required)} (it is {','.join(header) or 'empty'})"
                )
            reader.fieldnames = header
            return list(reader)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a UTF-8 CSV file") from None


def read_truth(path: str | Path) -> Truth:
    """Read `member,record_id,entity_id`; a record listed twice is an error."""
    path = Path(path)
    entity: dict[tuple[str, str], str] = {}
    holders: dict[str, set[str]] = {}
    for line, row in enumerate(_rows(path, ("member", "record_id", "entity_id")), start=2):
        key = (row["member"].strip(), row["record_id"].strip())
        ent = row["entity_id"].strip()
        if not all(key) or not ent:
            raise InputError(f"{path}: row {line}: member, record_id and entity_id are required")
        if key in entity:
            raise InputError(f"{path}: row {line}: record {key[1]!r} of {key[0]} listed twice")
        entity[key] = ent
        holders.setdefault(ent, set()).add(key[0])
    return Truth(entity, {e: frozenset(m) for e, m in holders.items()})


def read_results(path: str | Path, member: str) -> list[Scored]:
    """A results file (hits, mapping or scores level) as scored hits of `member`."""
    path = Path(path)
    rows = _rows(path, ("record_id", "partner"))
    out = []
    for line, row in enumerate(rows, start=2):
        score = None
        if row.get("score") not in (None, ""):
            try:
                score = float(row["score"])
            except ValueError:
                raise InputError(
                    f"{path}: row {line}: score {row['score']!r} is not a number"
                ) from None
        out.append(Scored((member, row["record_id"].strip(), row["partner"].strip()), score))
    return out


def quality(found: Iterable[Hit], truth: Truth, member: str | None = None) -> Quality:
    """Precision, recall and F1 of reported hits against every true hit (of `member`)."""
    found = set(found)
    actual = truth.true_hits(member)
    return Quality(len(found & actual), len(found), len(actual))


@dataclass(frozen=True)
class SweepPoint:
    threshold: float
    quality: Quality


def sweep(scored: Sequence[Scored], truth: Truth, member: str | None = None) -> list[SweepPoint]:
    """Quality if only results scoring at least t were reported, for every distinct t."""
    actual = len(truth.true_hits(member))
    ranked = sorted(
        ((s.score, truth.is_true(s.hit)) for s in scored if s.score is not None),
        key=lambda item: -item[0],
    )
    points: list[SweepPoint] = []
    tp = 0
    for i, (score, is_true) in enumerate(ranked):
        tp += is_true
        if i + 1 == len(ranked) or ranked[i + 1][0] != score:
            points.append(SweepPoint(score, Quality(tp, i + 1, actual)))
    return points


def recommend(points: Sequence[SweepPoint], min_precision: float = 0.98) -> SweepPoint | None:
    """The threshold with the best F1 among those with precision >= `min_precision`
    (the best F1 overall if none reaches it); ties go to the higher threshold."""
    if not points:
        return None
    eligible = [p for p in points if p.quality.precision >= min_precision] or list(points)
    return max(eligible, key=lambda p: (round(p.quality.f1, 6), p.threshold))
