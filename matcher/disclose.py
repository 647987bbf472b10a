"""Disclosure: what one member may learn from its links, by level.

Pure functions. A member only ever sees links that start at its own rows; the
level decides how much of each link it sees.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class Level(enum.IntEnum):
    """Disclosure levels, least to most (numbers match protos' Disclosure)."""

    COUNT = 1
    HITS = 2
    MAPPING = 3
    SCORES = 4

    @classmethod
    def parse(cls, name: str) -> Level:
        try:
            return cls[name.upper()]
        except KeyError:
            choices = ", ".join(m.name.lower() for m in cls)
            raise ValueError(f"unknown disclosure level {name!r} (choose {choices})") from None


@dataclass(frozen=True)
class Hit:
    row: int
    partner: str
    partner_row: int = 0  # MAPPING and above
    score: float = 0.0  # SCORES only


@dataclass
class Disclosed:
    counts: dict[str, int]
    hits: list[Hit]


def disclose(level: Level, links: Iterable[tuple[int, str, int, float]]) -> Disclosed:
    """Reduce a member's links (row, partner, partner_row, score) to what `level` allows."""
    rows_by_partner: dict[str, set[int]] = {}
    hits: dict[tuple[int, str], Hit] = {}
    for row, partner, partner_row, score in links:
        rows_by_partner.setdefault(partner, set()).add(row)
        if level >= Level.SCORES:
            hit = Hit(row, partner, partner_row, score)
        elif level >= Level.MAPPING:
            hit = Hit(row, partner, partner_row)
        else:
            hit = Hit(row, partner)
        hits.setdefault((row, partner), hit)
    counts = {p: len(rows) for p, rows in sorted(rows_by_partner.items())}
    if level <= Level.COUNT:
        return Disclosed(counts, [])
    ordered = sorted(hits.values(), key=lambda h: (h.row, h.partner))
    return Disclosed(counts, ordered)
