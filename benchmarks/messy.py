"""Realistic messy multi-agency exports, seeded, with documented corruption rates.

    .venv/bin/python benchmarks/messy.py OUT_DIR [--seed 1] [--population 20000]

A population of people (first name, sometimes middle names, surname, date of
birth, sex, postcode) is drawn with realistic name frequency skew from the lists
in `benchmarks/data/` (derived from the US census counts bundled with clkhash).
Some people move: they have an old and a new postcode, and each organisation
saw one of them. Three organisations export what they hold, each its own way:

    north-police   35% of the population
    south-police   35% of the population
    retail-bcrp     6% of the population, 85% of them people known to police

Every rate is a field of `OrgStyle` below, and docs/evaluation.md lists them.
Corruptions are applied per exported record, independently per organisation, so
two records of the same person may differ in several ways. The truth file maps
`member,record_id` to `entity_id` (the format `blindmatch evaluate` reads).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import random
import sys
from dataclasses import dataclass, replace
from datetime import date, timedelta
from functools import cache
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.exports import Export, hand_row, write_export, write_truth
from blindmatch.client.tools.synthetic import holdings

DATA = Path(__file__).resolve().parent / "data"

# Nicknames the *generator* uses. Written independently of the client's table
# (client/data/nicknames.csv); a few here are deliberately not in it.
NICKNAMES = {
    "Robert": ["Bob", "Rob", "Bobby", "Robbie"],
    "William": ["Bill", "Will", "Billy", "Liam"],
    "James": ["Jim", "Jimmy", "Jamie"],
    "John": ["Johnny", "Jack"],
    "Michael": ["Mike", "Mick", "Mikey"],
    "Richard": ["Rick", "Dick", "Rich"],
    "Thomas": ["Tom", "Tommy"],
    "Christopher": ["Chris", "Kit"],
    "Daniel": ["Dan", "Danny"],
    "Joseph": ["Joe", "Joey"],
    "David": ["Dave", "Davy"],
    "Charles": ["Charlie", "Chuck"],
    "Anthony": ["Tony", "Ant"],
    "Edward": ["Ed", "Eddie", "Ted"],
    "Steven": ["Steve"],
    "Matthew": ["Matt"],
    "Andrew": ["Andy", "Drew"],
    "Elizabeth": ["Liz", "Beth", "Betty", "Lizzie"],
    "Margaret": ["Maggie", "Peggy", "Meg"],
    "Patricia": ["Pat", "Trish", "Patty"],
    "Jennifer": ["Jen", "Jenny"],
    "Katherine": ["Kate", "Kathy", "Katie"],
    "Susan": ["Sue", "Susie"],
    "Deborah": ["Debbie", "Deb"],
    "Rebecca": ["Becky", "Becca"],
    "Samuel": ["Sam"],
    "Benjamin": ["Ben"],
    "Kenneth": ["Ken", "Kenny"],
    "Ronald": ["Ron", "Ronnie"],
    "Donald": ["Don"],
    "Timothy": ["Tim"],
    "Nicholas": ["Nick", "Nicky"],
    "Alexander": ["Alex", "Sandy"],
    "Victoria": ["Vicky", "Tori"],
    "Jessica": ["Jess"],
}

AREAS = (
    "M", "B", "LS", "L", "S", "NE", "BS", "CF", "G", "EH", "SW", "SE", "N", "E", "W",
    "NW", "OL", "BD", "HD", "WF", "SK", "WA", "CH", "ST", "DE", "NG", "LE", "CV",
)  # fmt: skip
_UNIT = "ABDEFGHJLNPQRSTUWXYZ"


@cache
def _names(file: str) -> tuple[tuple[str, ...], tuple[int, ...]]:
    with open(DATA / file, newline="", encoding="utf-8") as fh:
        rows = [(r["name"], int(r["count"])) for r in csv.DictReader(fh)]
    return tuple(n for n, _ in rows), tuple(c for _, c in rows)


@cache
def _cumulative(file: str) -> tuple[int, ...]:
    return tuple(itertools.accumulate(_names(file)[1]))


def _pick(file: str, rng: random.Random) -> str:
    # cum_weights: the same draw as weights= (which accumulates them on every call), faster.
    return rng.choices(_names(file)[0], cum_weights=_cumulative(file))[0]


def _postcode(rng: random.Random, area: str | None = None) -> str:
    area = area or rng.choice(AREAS)
    district = rng.randint(1, 30)
    return f"{area}{district} {rng.randint(1, 9)}{rng.choice(_UNIT)}{rng.choice(_UNIT)}"


@dataclass(frozen=True)
class Person:
    entity: int
    first: str
    middle: str  # '' or one or two middle names, space-separated
    surname: str
    dob: date
    sex: str  # F or M
    postcode: str  # where they lived first ('M14 5RT')
    new_postcode: str  # '' unless they moved


def population(size: int, rng: random.Random, movers: float = 0.15) -> list[Person]:
    """`size` people; a share `movers` of them have a second (newer) postcode."""
    people = []
    for entity in range(size):
        sex = rng.choice("FM")
        names_file = "given-female.csv" if sex == "F" else "given-male.csv"
        n_middle = rng.choices([0, 1, 2], [0.35, 0.55, 0.10])[0]
        middle = " ".join(_pick(names_file, rng) for _ in range(n_middle))
        postcode = _postcode(rng)
        new = ""
        if rng.random() < movers:  # half move locally (same area), half further
            local = rng.random() < 0.5
            new = _postcode(rng, postcode.split(" ")[0].rstrip("0123456789") if local else None)
        people.append(
            Person(
                entity=entity,
                first=_pick(names_file, rng),
                middle=middle,
                surname=_pick("surnames.csv", rng),
                dob=date(1940, 1, 1) + timedelta(days=rng.randint(0, 365 * 68)),
                sex=sex,
                postcode=postcode,
                new_postcode=new,
            )
        )
    return people


@dataclass(frozen=True)
class OrgStyle:
    """How one organisation holds and writes its export, with its corruption rates."""

    name: str
    share: float  # of the population held
    known_to_police: float  # of this org's people, the share drawn from police holdings
    id_column: str
    id_prefix: str
    columns: dict[str, str]  # role -> column name: forenames, surname, dob, sex, postcode
    date_format: str
    upper: bool = False
    middle_in_forenames: float = 0.0  # share of records with middle names in the forename column
    postcode_space: bool = True
    sex_words: bool = False
    nickname: float = 0.0  # given name written as a nickname, where the name has one
    typo_given: float = 0.02  # one substitution/deletion/transposition/insertion
    typo_surname: float = 0.02
    swapped_names: float = 0.0  # forename and surname in each other's column
    dob_missing: float = 0.01
    dob_slip: float = 0.01  # day and month swapped (when day <= 12), or a one-digit slip
    sex_missing: float = 0.0
    postcode_missing: float = 0.02
    stale_postcode: float = 0.5  # for movers: chance this org holds the old postcode

    def scaled(self, factor: float) -> OrgStyle:
        """The same organisation with every corruption rate multiplied by `factor`."""
        names = (
            "nickname", "typo_given", "typo_surname", "swapped_names", "dob_missing",
            "dob_slip", "sex_missing", "postcode_missing",
        )  # fmt: skip
        return replace(self, **{n: min(0.9, getattr(self, n) * factor) for n in names})

    def mapping_toml(self) -> str:
        c = self.columns
        return (
            f'id = "{self.id_column}"\n\n[fields]\n'
            f'given_name = "{c["forenames"]}"\nsurname = "{c["surname"]}"\n'
            f'dob = {{ column = "{c["dob"]}", date_format = "{self.date_format}" }}\n'
            f'sex = "{c["sex"]}"\npostcode = "{c["postcode"]}"\n'
        )


ORGS = (
    OrgStyle(
        "north-police", 0.35, 0.0, "URN", "NP",
        {"forenames": "Forenames", "surname": "Surname", "dob": "DOB", "sex": "Sex",
         "postcode": "Postcode"},
        "%d/%m/%Y", middle_in_forenames=0.9, nickname=0.02, swapped_names=0.005,
    ),
    OrgStyle(
        "south-police", 0.35, 0.0, "PersonID", "SP",
        {"forenames": "FIRST_NAME", "surname": "LAST_NAME", "dob": "BIRTH_DATE",
         "sex": "GENDER", "postcode": "POST_CODE"},
        "%Y-%m-%d", upper=True, middle_in_forenames=0.0, postcode_space=False, sex_words=True,
        nickname=0.02, swapped_names=0.005,
    ),
    OrgStyle(
        "retail-bcrp", 0.06, 0.85, "incident_ref", "RB",
        {"forenames": "first name", "surname": "last name", "dob": "date of birth",
         "sex": "gender", "postcode": "postcode"},
        "%d %b %Y", middle_in_forenames=0.1, nickname=0.15, typo_given=0.05, typo_surname=0.05,
        swapped_names=0.01, dob_missing=0.35, dob_slip=0.02, sex_missing=0.2,
        postcode_missing=0.1, stale_postcode=0.3,
    ),
)  # fmt: skip


def typo(value: str, rng: random.Random) -> str:
    """One keyboard-style error away from `value` (never the first letter)."""
    if len(value) < 3:
        return value
    i = rng.randrange(1, len(value) - 1)
    kind = rng.random()
    letter = rng.choice("abcdefghijklmnopqrstuvwxyz")
    if kind < 0.35:
        return value[:i] + letter + value[i + 1 :]
    if kind < 0.6:
        return value[:i] + value[i + 1 :]
    if kind < 0.8:
        return value[:i] + value[i + 1] + value[i] + value[i + 2 :]
    return value[:i] + letter + value[i:]


def slip(day: date, rng: random.Random) -> date:
    """A day/month swap when possible, else one digit of the day or year off."""
    if day.day <= 12 and day.day != day.month:
        return day.replace(day=day.month, month=day.day)
    if rng.random() < 0.5:
        try:
            return day.replace(day=day.day + rng.choice((-1, 1)))
        except ValueError:
            pass
    year = day.year + rng.choice((-1, 1, -10, 10))
    return day.replace(year=year, day=min(day.day, 28) if day.month == 2 else day.day)


def export_row(style: OrgStyle, person: Person, n: int, rng: random.Random) -> dict[str, str]:
    c = style.columns
    first = person.first
    if rng.random() < style.nickname and first in NICKNAMES:
        first = rng.choice(NICKNAMES[first])
    if rng.random() < style.typo_given:
        first = typo(first, rng)
    forenames = first
    if person.middle and rng.random() < style.middle_in_forenames:
        forenames = f"{first} {person.middle}"
    surname = person.surname
    if rng.random() < style.typo_surname:
        surname = typo(surname, rng)
    if rng.random() < style.swapped_names:
        forenames, surname = surname, forenames
    if style.upper:
        forenames, surname = forenames.upper(), surname.upper()
    dob = ""
    if rng.random() >= style.dob_missing:
        day = slip(person.dob, rng) if rng.random() < style.dob_slip else person.dob
        dob = day.strftime(style.date_format)
    sex = ""
    if rng.random() >= style.sex_missing:
        sex = {"F": "Female", "M": "Male"}[person.sex] if style.sex_words else person.sex
    postcode = person.postcode
    if person.new_postcode and rng.random() >= style.stale_postcode:
        postcode = person.new_postcode
    if rng.random() < style.postcode_missing:
        postcode = ""
    if not style.postcode_space:
        postcode = postcode.replace(" ", "")
    postcode = postcode.upper() if style.upper or style.postcode_space else postcode.lower()
    return {
        style.id_column: f"{style.id_prefix}{100000 + n}",
        c["forenames"]: forenames,
        c["surname"]: surname,
        c["dob"]: dob,
        c["sex"]: sex,
        c["postcode"]: postcode,
    }


def write_exports(
    folder: Path, seed: int, size: int = 20_000, corruption: float = 1.0
) -> dict[str, Export]:
    """Write each organisation's CSV and mapping, and truth.csv; returns them by org.
    `corruption` multiplies every corruption rate (1.0: the documented rates)."""
    rng = random.Random(seed)
    people = population(size, rng)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Export] = {}
    orgs = tuple(style.scaled(corruption) for style in ORGS) if corruption != 1.0 else ORGS
    held_by = holdings(people, orgs, rng)
    for style in orgs:
        rows = [export_row(style, p, n, rng) for n, p in enumerate(held_by[style.name])]
        header = [style.id_column, *style.columns.values()]
        entities = [p.entity for p in held_by[style.name]]
        out[style.name] = write_export(
            folder, style.name, header, rows, style.mapping_toml(), entities
        )
    write_truth(folder, out)
    return out


def hand_rows(folder: Path) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Each export's ids and records normalised by hand, knowing its conventions (the
    benchmark's anchors get this): given name, surname, ISO date of birth, sex letter,
    postcode, folded to letters and digits."""
    out: dict[str, tuple[list[str], list[list[str]]]] = {}
    for style in ORGS:
        c = style.columns
        ids, rows = [], []
        with open(folder / f"{style.name}.csv", newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                ids.append(row[style.id_column])
                rows.append(
                    hand_row(
                        row[c["forenames"]],
                        row[c["surname"]],
                        row[c["dob"]],
                        style.date_format,
                        row[c["sex"]],
                        row[c["postcode"]],
                    )
                )
        out[style.name] = (ids, rows)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the exports into")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--corruption", type=float, default=1.0, help="multiplies every rate")
    args = parser.parse_args()
    exports = write_exports(args.out, args.seed, args.population, args.corruption)
    for name, exp in exports.items():
        print(f"{name}: {len(exp.truth)} records -> {exp.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
