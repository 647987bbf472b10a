"""Synthetic person exports for the demo and tests: same people, different conventions.

A seeded population of people (given name, surname, date of birth, sex,
postcode) is split over organisations that each hold a share of it and write it
their own way: different column names, case, date formats, postcode spacing,
accents dropped or kept, and a small rate of typos and missing values. The
true entity id of every exported row is returned alongside, so quality can be
measured.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Protocol, TypeVar

GIVEN = [
    "Oliver",
    "George",
    "Harry",
    "Jack",
    "Jacob",
    "Noah",
    "Charlie",
    "Muhammad",
    "Thomas",
    "Oscar",
    "William",
    "James",
    "Leo",
    "Alfie",
    "Henry",
    "Joshua",
    "Freddie",
    "Archie",
    "Ethan",
    "Isaac",
    "Alexander",
    "Joseph",
    "Edward",
    "Samuel",
    "Max",
    "Daniel",
    "Arthur",
    "Lucas",
    "Mohammed",
    "Logan",
    "Olivia",
    "Amelia",
    "Isla",
    "Ava",
    "Emily",
    "Isabella",
    "Mia",
    "Poppy",
    "Ella",
    "Lily",
    "Sophie",
    "Grace",
    "Evie",
    "Ruby",
    "Chloé",
    "Zoë",
    "Jessica",
    "Erin",
    "Amélie",
    "Sophia",
    "Daisy",
    "Freya",
    "Siobhán",
    "Niamh",
    "Aoife",
    "Seán",
    "Ciarán",
    "Bartłomiej",
    "Zoltán",
    "Renée",
]
SURNAMES = [
    "Smith",
    "Jones",
    "Taylor",
    "Brown",
    "Williams",
    "Wilson",
    "Johnson",
    "Davies",
    "Robinson",
    "Wright",
    "Thompson",
    "Evans",
    "Walker",
    "White",
    "Roberts",
    "Green",
    "Hall",
    "Wood",
    "Jackson",
    "Clarke",
    "Patel",
    "Khan",
    "Lewis",
    "James",
    "Phillips",
    "Mason",
    "Mitchell",
    "Rose",
    "Davis",
    "Rodriguez",
    "Cox",
    "Alexander",
    "Morgan",
    "Moore",
    "Mills",
    "King",
    "Hughes",
    "Harris",
    "Price",
    "Ward",
    "Hussain",
    "O'Brien",
    "O'Connor",
    "McDonald",
    "MacLeod",
    "Nowak",
    "Kowalski",
    "Müller",
    "Ó'Súilleabháin",
    "Fernández",
    "García",
    "Smith-Jones",
    "Ahmed",
    "Begum",
    "Ali",
    "Singh",
    "Kaur",
    "Murphy",
    "Kelly",
    "Byrne",
    "Doyle",
    "Gallagher",
]
AREAS = ("SW1A", "M1", "B33", "LS6", "CF10", "EH1", "G2", "BS8", "NE1", "L17", "OX4", "CB2")


@dataclass(frozen=True)
class Person:
    entity: int
    given: str
    surname: str
    dob: date
    sex: str
    postcode: str  # canonical 'SW1A 1AA'


@dataclass(frozen=True)
class OrgStyle:
    """How one organisation writes its export."""

    name: str
    share: float  # of the population this organisation holds
    id_column: str
    columns: tuple[str, str, str, str, str]  # given, surname, dob, sex, postcode
    date_format: str
    upper: bool = False
    strip_accents: bool = False
    postcode_spaces: bool = True
    sex_words: bool = False
    dob_missing: float = 0.01
    typo_rate: float = 0.03

    def mapping_toml(self) -> str:
        g, s, d, x, p = self.columns
        return (
            f'id = "{self.id_column}"\n\n[fields]\n'
            f'given_name = "{g}"\nsurname = "{s}"\n'
            f'dob = {{ column = "{d}", date_format = "{self.date_format}" }}\n'
            f'sex = "{x}"\npostcode = "{p}"\n'
        )


DEMO_ORGS = (
    OrgStyle(
        "north-police", 0.35, "URN", ("Forenames", "Surname", "DOB", "Sex", "Postcode"), "%d/%m/%Y"
    ),
    OrgStyle(
        "south-police",
        0.35,
        "PersonID",
        ("FIRST_NAME", "LAST_NAME", "BIRTH_DATE", "GENDER", "POST_CODE"),
        "%Y-%m-%d",
        upper=True,
        strip_accents=True,
        postcode_spaces=False,
        sex_words=True,
    ),
    OrgStyle(
        "retail-bcrp",
        0.06,
        "incident_ref",
        ("first name", "last name", "date of birth", "gender", "postcode"),
        "%d %b %Y",
        dob_missing=0.3,
        typo_rate=0.05,
    ),
)


def population(size: int, rng: random.Random) -> list[Person]:
    people = []
    for entity in range(size):
        area = rng.choice(AREAS)
        letters = "ABDEFGHJLNPQRSTUWXYZ"
        postcode = f"{area} {rng.randint(1, 9)}{rng.choice(letters)}{rng.choice(letters)}"
        people.append(
            Person(
                entity=entity,
                given=rng.choice(GIVEN),
                surname=rng.choice(SURNAMES),
                dob=date(1950, 1, 1) + timedelta(days=rng.randint(0, 365 * 55)),
                sex=rng.choice("FM"),
                postcode=postcode,
            )
        )
    return people


def typo(value: str, rng: random.Random) -> str:
    """One keying error: a substituted, dropped or swapped letter (not the first or last)."""
    if len(value) < 3:
        return value
    i = rng.randrange(1, len(value) - 1)
    kind = rng.random()
    if kind < 0.4:  # substitution
        return value[:i] + rng.choice("abcdefghijklmnopqrstuvwxyz") + value[i + 1 :]
    if kind < 0.7:  # deletion
        return value[:i] + value[i + 1 :]
    return value[:i] + value[i + 1] + value[i] + value[i + 2 :]  # transposition


class _Holder(Protocol):
    @property
    def entity(self) -> int: ...


class _Holding(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def share(self) -> float: ...
    @property
    def known_to_police(self) -> float: ...


H = TypeVar("H", bound=_Holder)


def holdings(
    people: Sequence[H], orgs: Sequence[_Holding], rng: random.Random
) -> dict[str, list[H]]:
    """Who each organisation holds: police forces at random, others (retail) drawing
    `known_to_police` of their people from those the police forces already hold."""
    held: dict[str, list[H]] = {}
    police: set[int] = set()
    for style in orgs:
        count = round(style.share * len(people))
        if style.known_to_police:
            known = [p for p in people if p.entity in police]
            unknown = [p for p in people if p.entity not in police]
            n_known = min(len(known), round(count * style.known_to_police))
            chosen = rng.sample(known, n_known) + rng.sample(unknown, count - n_known)
        else:
            chosen = rng.sample(list(people), count)
            police.update(p.entity for p in chosen)
        rng.shuffle(chosen)
        held[style.name] = chosen
    return held


def _unaccent(value: str) -> str:
    from blindmatch.client.encoding.normalise import fold

    out = fold(value)
    return out.title() if value[:1].isupper() else out


def export_rows(style: OrgStyle, people: list[Person], rng: random.Random) -> list[dict[str, str]]:
    g, s, d, x, p = style.columns
    rows = []
    for n, person in enumerate(people):
        given, surname = person.given, person.surname
        if style.strip_accents:
            given, surname = _unaccent(given), _unaccent(surname)
        if rng.random() < style.typo_rate:
            given = typo(given, rng)
        if rng.random() < style.typo_rate:
            surname = typo(surname, rng)
        if style.upper:
            given, surname = given.upper(), surname.upper()
        dob = "" if rng.random() < style.dob_missing else person.dob.strftime(style.date_format)
        sex = {"F": "Female", "M": "Male"}[person.sex] if style.sex_words else person.sex
        postcode = person.postcode if style.postcode_spaces else person.postcode.replace(" ", "")
        if style.upper:
            postcode = postcode.upper()
        elif not style.postcode_spaces:
            postcode = postcode.lower()
        rows.append(
            {
                style.id_column: f"{style.name[:2].upper()}{10000 + n}",
                g: given,
                s: surname,
                d: dob,
                x: sex,
                p: postcode,
            }
        )
    return rows


def write_org_exports(
    folder: Path, population_size: int, seed: int, orgs: tuple[OrgStyle, ...] = DEMO_ORGS
) -> dict[str, tuple[Path, Path, dict[str, int]]]:
    """Write each organisation's CSV and mapping; returns org -> (csv, mapping, id->entity)."""
    rng = random.Random(seed)
    people = population(population_size, rng)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for style in orgs:
        held = [p for p in people if rng.random() < style.share]
        rng.shuffle(held)
        rows = export_rows(style, held, rng)
        csv_path = folder / f"{style.name}.csv"
        with open(csv_path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=[style.id_column, *style.columns])
            writer.writeheader()
            writer.writerows(rows)
        map_path = folder / f"{style.name}.toml"
        map_path.write_text(style.mapping_toml(), encoding="utf-8")
        truth = {
            row[style.id_column]: person.entity for row, person in zip(rows, held, strict=True)
        }
        out[style.name] = (csv_path, map_path, truth)
    return out
