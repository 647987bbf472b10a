"""Disclosure: what one member may learn from its links and its queries, by level.

Pure functions; the one place that decides what a member learns, for batch results,
real-time queries and watches alike. A member only ever learns about its own rows (or
the records it asked about); for each partner, the level decides how much:

1. the level is per partner: the lesser of the project's level and the level that
   partner consented to (`effective_level`, `effective_levels`);
2. the level shows a fixed part of a match (`LADDER`): at COUNT only how many of the
   member's records the partner holds; at HITS which records; at MAPPING which of the
   partner's records (a row, or a standing-index reference); at SCORES how similar.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from blindmatch.matcher.domain import Level


@dataclass(frozen=True)
class Shown:
    """What one level shows of a match with one partner (besides the count)."""

    partner: bool  # that this partner holds the record
    where: bool  # which of the partner's records it is (row, or reference)
    score: bool  # how similar the two are


LADDER = {
    Level.COUNT: Shown(partner=False, where=False, score=False),
    Level.HITS: Shown(partner=True, where=False, score=False),
    Level.MAPPING: Shown(partner=True, where=True, score=False),
    Level.SCORES: Shown(partner=True, where=True, score=True),
}


def effective_level(project: Level, partner_consent: Level | None) -> Level:
    """What a member learns about one partner: never more than that partner allowed."""
    return project if partner_consent is None else min(project, partner_consent)


def effective_levels(
    project: Level,
    consents: Mapping[str, Level | None],
    member: str,
    partners: Iterable[str] | None = None,
) -> dict[str, Level]:
    """For `member`, the level it learns about each partner: every other member, or only
    those in `partners` (the ones with a standing index, for a query)."""
    names = consents if partners is None else partners
    return {
        partner: effective_level(project, consents.get(partner))
        for partner in sorted(names)
        if partner != member
    }


# -- batch results: a member's links ---------------------------------------------------------


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


def disclose(
    levels: Level | Mapping[str, Level], links: Iterable[tuple[int, str, int, float]]
) -> Disclosed:
    """Reduce a member's links (row, partner, partner_row, score) to what the levels allow.

    `levels` is one level for every partner, or a level per partner; a partner
    missing from the mapping is disclosed at COUNT.
    """

    def level_of(partner: str) -> Level:
        return levels if isinstance(levels, Level) else levels.get(partner, Level.COUNT)

    rows_by_partner: dict[str, set[int]] = {}
    hits: dict[tuple[int, str], Hit] = {}
    for row, partner, partner_row, score in links:
        rows_by_partner.setdefault(partner, set()).add(row)
        shown = LADDER[level_of(partner)]
        if shown.partner:
            hit = Hit(
                row, partner, partner_row if shown.where else 0, score if shown.score else 0.0
            )
            hits.setdefault((row, partner), hit)
    counts = {p: len(rows) for p, rows in sorted(rows_by_partner.items())}
    ordered = sorted(hits.values(), key=lambda h: (h.row, h.partner))
    return Disclosed(counts, ordered, {p: level_of(p) for p in counts})


# -- real-time: the records a member asked about ---------------------------------------------


@dataclass(frozen=True)
class Match:
    """One partner holding a queried record; refs and scores only where allowed."""

    partner: str
    refs: tuple[str, ...] = ()
    scores: tuple[float, ...] = ()


@dataclass
class QueryDisclosure:
    results: list[list[Match]]  # one list per queried record, in order
    counts: dict[str, int]  # per partner: how many queried records it holds
    levels: dict[str, Level]  # what each partner's part of the answer was limited to


def disclose_query(
    found: Sequence[Mapping[str, Sequence[tuple[str, float]]]], levels: Mapping[str, Level]
) -> QueryDisclosure:
    """Reduce raw search results to what each partner's level allows.

    `found[i][partner]` lists (ref, score) for queried record i, best first. A partner at
    COUNT appears only in `counts`; at HITS by name; at MAPPING with its refs; at SCORES
    with the scores too.
    """
    counts = {p: 0 for p in sorted(levels)}
    results: list[list[Match]] = []
    for per_partner in found:
        matches = []
        for partner in sorted(per_partner):
            hits = per_partner[partner]
            if not hits:
                continue
            counts[partner] += 1
            shown = LADDER[levels[partner]]
            if shown.partner:
                refs = tuple(r for r, _ in hits) if shown.where else ()
                scores = tuple(s for _, s in hits) if shown.score else ()
                matches.append(Match(partner, refs, scores))
        results.append(matches)
    return QueryDisclosure(results, counts, dict(levels))
