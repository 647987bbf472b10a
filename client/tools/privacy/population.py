"""A seeded, realistic population and three organisations' exports of it.

Names and birth years are drawn with their real frequency skew from the public
lists (`client.tools.privacy.frequencies`), so frequency attacks meet the head-heavy
distributions they meet in practice: in 20,000 people about 1 in 100 is a
Smith. Postcodes are drawn from a head-heavy set of districts. Three
organisations hold parts of the population, as in the quality work
(issue 3): two police forces (35% each) and a retail partnership (6%, 85% of
them known to police). Corruption rates per organisation (`OrgStyle`):

    typos in given name and surname   3% police, 5% retail
    date of birth missing             1% police, 30% retail
    date of birth slipped             1% (day/month swapped, or one year off)
    postcode missing / stale          2% / 5% police, 10% / 10% retail
    sex missing                       0% police, 20% retail

All exports use one convention (the person-uk schema's field names, ISO dates):
normalisation is not what these data test.
"""

from __future__ import annotations

import calendar
import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from blindmatch.client.tools import synthetic
from blindmatch.client.tools.privacy import frequencies
from blindmatch.client.tools.synthetic import holdings, typo

_UNIT = "ABDEFGHJLNPQRSTUWXYZ"
_AREAS = ("M", "B", "LS", "L", "S", "NE", "BS", "CF", "G", "EH", "SW", "SE", "N", "E", "W", "NG")

MAPPING = """id = "id"
[fields]
given_name = "given_name"
surname = "surname"
dob = { column = "dob", date_format = "%Y-%m-%d" }
sex = "sex"
postcode = "postcode"
"""
COLUMNS = ("id", "given_name", "surname", "dob", "sex", "postcode")


@dataclass(frozen=True)
class Person(synthetic.Person):
    """A person as synthetic.py's, and a second postcode of theirs (a move): an export
    gives it instead with its organisation's `stale_postcode` chance."""

    new_postcode: str


@dataclass(frozen=True)
class OrgStyle:
    name: str
    share: float
    known_to_police: float = 0.0
    typo: float = 0.03
    dob_missing: float = 0.01
    dob_slip: float = 0.01
    postcode_missing: float = 0.02
    stale_postcode: float = 0.05
    sex_missing: float = 0.0


ORGS = (
    OrgStyle("north-police", 0.35),
    OrgStyle("south-police", 0.35),
    OrgStyle(
        "retail-bcrp", 0.06, known_to_police=0.85, typo=0.05, dob_missing=0.3,
        postcode_missing=0.1, stale_postcode=0.1, sex_missing=0.2,
    ),
)  # fmt: skip


def _weighted(
    values: tuple[str, ...], counts: tuple[float, ...], rng: random.Random, k: int
) -> list[str]:
    return rng.choices(values, weights=counts, k=k)


def population(size: int, seed: int) -> list[Person]:
    """`size` people; names and birth years follow the public lists' frequencies."""
    rng = random.Random(seed)
    given, surnames = frequencies.given_names(), frequencies.surnames()
    years = frequencies.birth_years()
    firsts = _weighted(given.values, given.counts, rng, size)
    lasts = _weighted(surnames.values, surnames.counts, rng, size)
    born = rng.choices(list(years), weights=list(years.values()), k=size)
    # Head-heavy postcode districts: district d of an area has weight 1/d.
    districts = [f"{a}{d}" for a in _AREAS for d in range(1, 31)]
    weights = [1.0 / int("".join(ch for ch in d if ch.isdigit())) for d in districts]
    people = []
    for entity in range(size):
        dob = date(born[entity], 1, 1) + timedelta(days=rng.randrange(365))
        postcode, moved = (
            f"{rng.choices(districts, weights)[0]} "
            f"{rng.randint(1, 9)}{rng.choice(_UNIT)}{rng.choice(_UNIT)}"
            for _ in range(2)
        )
        people.append(
            Person(entity, firsts[entity].title(), lasts[entity].title(), dob, rng.choice("FM"),
                   postcode, moved)
        )  # fmt: skip
    return people


def _slip(day: date, rng: random.Random) -> date:
    if day.day <= 12 and day.day != day.month and rng.random() < 0.5:
        return day.replace(day=day.month, month=day.day)
    shifted = day.year + rng.choice((-1, 1))
    return day.replace(year=shifted, day=min(day.day, 28 if day.month == 2 else day.day))


def export_row(style: OrgStyle, person: Person, n: int, rng: random.Random) -> dict[str, str]:
    given = typo(person.given, rng) if rng.random() < style.typo else person.given
    surname = typo(person.surname, rng) if rng.random() < style.typo else person.surname
    dob = ""
    if rng.random() >= style.dob_missing:
        dob = (_slip(person.dob, rng) if rng.random() < style.dob_slip else person.dob).isoformat()
    postcode = person.new_postcode if rng.random() < style.stale_postcode else person.postcode
    if rng.random() < style.postcode_missing:
        postcode = ""
    sex = "" if rng.random() < style.sex_missing else person.sex
    return {
        "id": f"{style.name[:2].upper()}{100000 + n}",
        "given_name": given,
        "surname": surname,
        "dob": dob,
        "sex": sex,
        "postcode": postcode,
    }


@dataclass(frozen=True)
class Export:
    csv: Path
    mapping: Path
    truth: dict[str, int]  # record id -> entity


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_exports(folder: Path, seed: int, size: int = 20_000) -> dict[str, Export]:
    """Each organisation's CSV and mapping under `folder`, with the truth."""
    rng = random.Random(seed + 1)
    people = population(size, seed)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mapping.toml").write_text(MAPPING, encoding="utf-8")
    out = {}
    for style, held in zip(ORGS, holdings(people, ORGS, rng).values(), strict=True):
        rows = [export_row(style, p, n, rng) for n, p in enumerate(held)]
        write_csv(folder / f"{style.name}.csv", rows)
        truth = {row["id"]: p.entity for row, p in zip(rows, held, strict=True)}
        out[style.name] = Export(folder / f"{style.name}.csv", folder / "mapping.toml", truth)
    return out


def write_single(folder: Path, seed: int, size: int) -> Export:
    """One organisation's export of `size` distinct people (what `privacy-check` attacks)."""
    rng = random.Random(seed + 2)
    people = population(size, seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = [export_row(ORGS[0], p, n, rng) for n, p in enumerate(people)]
    write_csv(folder / "synthetic.csv", rows)
    (folder / "mapping.toml").write_text(MAPPING, encoding="utf-8")
    truth = {row["id"]: p.entity for row, p in zip(rows, people, strict=True)}
    return Export(folder / "synthetic.csv", folder / "mapping.toml", truth)


@dataclass(frozen=True)
class Pair:
    """A member's export and an attacker's export of (some of) the same people."""

    victim: Export
    attacker: Export
    overlap: float  # share of the victim's people the attacker holds


def write_pair(
    folder: Path, seed: int, size: int, overlap: float = 1.0, partner: int | None = None
) -> Pair:
    """`size` people exported by a police force (the victim), and another organisation's
    export of `size` people (`partner`, where given) of whom `overlap` x `size` are the
    victim's, with its own errors.

    What the graph-matching attack (`client.tools.privacy.graph`) assumes of the matcher: it holds
    plaintext on many of the people a member uploads, from elsewhere.
    """
    rng = random.Random(seed + 3)
    shared = round(overlap * size)
    extra = (size if partner is None else partner) - shared
    if extra < 0:
        raise ValueError(f"a partner of {partner} records holds fewer than {shared} shared")
    people = population(size + extra, seed)
    victim, others = people[:size], people[size:]
    held = rng.sample(victim, shared) + others
    rng.shuffle(held)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mapping.toml").write_text(MAPPING, encoding="utf-8")
    exports = []
    for name, style, chosen in (("victim", ORGS[0], victim), ("attacker", ORGS[1], held)):
        rows = [export_row(style, p, n, rng) for n, p in enumerate(chosen)]
        write_csv(folder / f"{name}.csv", rows)
        truth = {row["id"]: p.entity for row, p in zip(rows, chosen, strict=True)}
        exports.append(Export(folder / f"{name}.csv", folder / "mapping.toml", truth))
    return Pair(exports[0], exports[1], overlap)


def noisy_copy(rows: Sequence[Sequence[str]], kinds: Sequence[str], seed: int) -> list[list[str]]:
    """Normalised rows as another organisation might hold them: its own typos and gaps.

    `kinds` are the schema fields' kinds (`text`, `date`, `enum`, `ignore`). Text values get
    a keying error (3%) or go missing (2%); dates go missing (1%) or a year off (1%, the
    first four characters read as a year); other values are kept. What `privacy-check`
    gives the graph-matching attacker when it checks a member's own export.
    """
    rng = random.Random(seed)
    out = []
    for row in rows:
        copy = list(row)
        for i, (value, kind) in enumerate(zip(row, kinds, strict=True)):
            if not value:
                continue
            draw = rng.random()
            if kind == "text":
                if draw < 0.03:
                    copy[i] = typo(value, rng)
                elif draw < 0.05:
                    copy[i] = ""
            elif kind == "date":
                if draw < 0.01:
                    copy[i] = ""
                elif draw < 0.02 and value[:4].isdigit():
                    copy[i] = year_off(value, rng.choice((-1, 1)))
        out.append(copy)
    return out


def year_off(value: str, by: int) -> str:
    """A normalised date `value` (its first four characters the year) with the year moved
    `by`: 29 February becomes the 28th in a year without it (clkhash refuses the date the
    move would make; a member's export with a leap-day birth otherwise stopped the check)."""
    year = int(value[:4]) + by
    rest = value[4:]
    if rest.replace("-", "").replace("/", "") == "0229" and not calendar.isleap(year):
        rest = rest.replace("29", "28")
    return f"{year:04d}{rest}"
