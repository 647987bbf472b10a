"""Why benchmarks/recall.py's default misses and what it links wrongly, from the generator's
plain records: each missed true hit by its first cause in issue 21's order (`analyse`), each
false link by what its two records agree on exactly (`false_pairs`)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks.quality import GENERATORS, Hits
from blindmatch.client.tools.evaluate import Truth
from blindmatch.matcher.core.solve import Links

if TYPE_CHECKING:
    from benchmarks.recall import Encoded

FIELDS = ("given", "surname", "dob", "sex", "postcode")


def miss_cause(x: list[str], y: list[str]) -> str:
    """The first cause in issue 21's order that explains why two records of one person differ."""
    given_x, given_y = x[0].split(), y[0].split()
    first_x, first_y = (given_x or [""])[0], (given_y or [""])[0]
    if {first_x, x[1]} == {first_y, y[1]} and first_x != first_y:
        return "given name and surname swapped"
    if (not x[2] or not y[2]) and x[4] != y[4]:
        return "no dob on one side, postcode differs"
    if x[1] != y[1] and first_x == first_y and x[2] == y[2]:
        return "surname changed (same given name and dob)"
    if first_x != first_y and x[1] != y[1]:
        return "both names differ"
    if first_x == first_y and len(given_x) != len(given_y):
        return "middle name on one side only"
    if first_x != first_y:
        return "given name differs (nickname, short form, typo, initial)"
    if x[2] != y[2]:
        return "dob differs"
    if x[4] != y[4]:
        return "postcode differs"
    return "other"


def analyse(folder: Path, generator: str, found: Hits, truth: Truth) -> collections.Counter[str]:
    """The default's missed true hits by cause (`miss_cause` of the two records)."""
    hand = GENERATORS[generator].hand_rows(folder)
    plain = {
        (n, i): row for n, (ids, rows) in hand.items() for i, row in zip(ids, rows, strict=True)
    }
    by_entity: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for (member, rid), ent in truth.entity.items():
        by_entity[(ent, member)].append(rid)
    misses: collections.Counter[str] = collections.Counter()
    for member, rid, partner in truth.true_hits() - found:
        other = by_entity[(truth.entity[(member, rid)], partner)][0]
        misses[miss_cause(plain[(member, rid)], plain[(partner, other)])] += 1
    return misses


def false_pairs(
    enc: Encoded, links: Links, truth: Truth, folder: Path, generator: str
) -> collections.Counter[str]:
    """The default's false links by what the two records agree on exactly."""
    hand = GENERATORS[generator].hand_rows(folder)
    plain = {
        (n, i): row for n, (ids, rows) in hand.items() for i, row in zip(ids, rows, strict=True)
    }
    out: collections.Counter[str] = collections.Counter()
    pairs = zip(links.dset, links.row, links.partner, links.partner_row, strict=True)
    for d, r, p, pr in pairs:
        if d > p:
            continue
        a, b = (enc.names[d], enc.ids[d][r]), (enc.names[p], enc.ids[p][pr])
        if truth.entity[a] == truth.entity[b]:
            continue
        x, y = plain[a], plain[b]
        same = [f for f, u, v in zip(FIELDS, x, y, strict=True) if u and u == v]
        household = "surname" in same and "postcode" in same and "given" not in same
        out["same surname and postcode, another given name (household)" if household
            else "agree on " + (", ".join(same) or "nothing exactly")] += 1  # fmt: skip
    return out
