"""How the client says a count: `counted`, the count and its noun, singular for one, and
`word`, the noun (or verb) alone that agrees with a count. The client's twin of
matcher/domain.py's `counted` (the client never imports the matcher), so that the command
line says "1 row", "2 rows", never "1 row(s)" (leftovers2)."""

from __future__ import annotations


def word(n: int, one: str, many: str = "") -> str:
    """`one` for 1, else `many` (`one` + "s" unless given): `word(n, "has", "have")`."""
    return one if n == 1 else many or one + "s"


def counted(n: int, one: str, many: str = "") -> str:
    """`n` (thousands grouped: "1,234") and its noun: `counted(1, "entry", "entries")`,
    "1 entry"; as matcher/domain.py `counted`."""
    return f"{n:,} {word(n, one, many)}"
