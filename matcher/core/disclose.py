"""Disclosure: what one member may learn from its links, by level.

Pure functions. A member only ever sees links that start at its own rows; the
level decides how much of each link it sees. Levels are per partner: what a
member learns about a partner is the lesser of the project's level and the
level that partner consented to (`effective_levels`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from blindmatch.matcher.domain import Level


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
    levels: dict[str, Level]  # partner -> what was disclosed about it (partners in `counts`)


def effective_level(project: Level, partner_consent: Level | None) -> Level:
    """What a member learns about one partner: never more than that partner allowed."""
    return project if partner_consent is None else min(project, partner_consent)


def effective_levels(
    project: Level, consents: Mapping[str, Level | None], member: str
) -> dict[str, Level]:
    """For `member`, the level it learns about each partner (every other member)."""
    return {
        partner: effective_level(project, consent)
        for partner, consent in sorted(consents.items())
        if partner != member
    }


def disclose(
    levels: Level | Mapping[str, Level], links: Iterable[tuple[int, str, int, float]]
) -> Disclosed:
    """Reduce a member's links (row, partner, partner_row, score) to what the levels allow.

    `levels` is one level for every partner, or a level per partner; a partner
    missing from the mapping is disclosed at COUNT.
    """
    rows_by_partner: dict[str, set[int]] = {}
    hits: dict[tuple[int, str], Hit] = {}
    for row, partner, partner_row, score in links:
        rows_by_partner.setdefault(partner, set()).add(row)
        level = levels if isinstance(levels, Level) else levels.get(partner, Level.COUNT)
        if level <= Level.COUNT:
            continue
        if level >= Level.SCORES:
            hit = Hit(row, partner, partner_row, score)
        elif level >= Level.MAPPING:
            hit = Hit(row, partner, partner_row)
        else:
            hit = Hit(row, partner)
        hits.setdefault((row, partner), hit)
    counts = {p: len(rows) for p, rows in sorted(rows_by_partner.items())}
    per_partner = {
        p: levels if isinstance(levels, Level) else levels.get(p, Level.COUNT) for p in counts
    }
    ordered = sorted(hits.values(), key=lambda h: (h.row, h.partner))
    return Disclosed(counts, ordered, per_partner)
