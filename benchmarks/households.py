"""A second, independent generator of messy multi-agency exports: households, twins, movers,
marriages; other name sources, another corruption model, other rates and conventions.

    .venv/bin/python benchmarks/households.py OUT_DIR [--seed 1] [--population 20000]
        [--corruption 1.0]

Written apart from `benchmarks/messy.py` (the generator the default was tuned on) so that
match quality can be reported on data the defaults were not chosen on (issue 21). What
differs, on purpose:

- **names**: British, Irish, Indian, Nigerian, Italian and Portuguese given names and
  surnames (`benchmarks/data/heldout-names.csv`, derived once from Faker's lists), drawn by
  the household's origin; not the US census lists of messy.py and the privacy attacks;
- **households**: people live in households (1-5 people) sharing a postcode and mostly a
  surname; children are born 18-42 years after a parent (and by 2008); each child after the
  first is, with probability 3%, a twin of the one before (same date of birth, surname and
  address, another given name, half the time with the same initial); household members are
  the hardest non-matches there are;
- **life events**: 20% of households move (all members get the new postcode; each
  organisation saw the old or the new one); 35% of married women took their spouse's
  surname, some hyphenated, and records older than the marriage hold the birth surname;
- **four organisations** with their own conventions, among them a `SURNAME, Forenames` full
  name column (read with the mapping's `split`), a `given-first` full name, separate middle
  names, `%Y%m%d` and `05-Mar-1980` dates, lower-case postcodes without a space;
- **corruption model**: name errors start at each letter with a small probability, each a
  QWERTY-neighbour substitution, a phonetic respelling (ph/f, ck/k, y/i, double letters),
  a deletion or a transposition, *the first letter included*; given names are sometimes an
  initial, a middle name used as the first ("known as"), or a truncated diminutive
  (`Christopher` -> `Chris`, `Samantha` -> `Sammy`) not taken from any nickname table;
  dates of birth get 01/01 placeholders, transposed year digits, day/month swaps and
  off-by-one days; postcodes one-character typos or only the outward code.

Every rate is multiplied by `--corruption` (1.0 is the documented setting; the quality
benchmark's grid uses 0.5, 1 and 2), capped at 0.9. The truth file maps
`member,record_id` to `entity_id`, as `blindmatch evaluate` reads it.
"""

from __future__ import annotations

import argparse
import csv
import functools
import random
import sys
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.exports import Export, hand_row, write_export, write_truth

DATA = Path(__file__).resolve().parent / "data" / "heldout-names.csv"
ORIGIN_SHARES = {"GB": 0.62, "IE": 0.16, "IN": 0.09, "NG": 0.05, "IT": 0.04, "PT": 0.04}
AREAS = (
    "CF", "SA", "LL", "NP", "B", "WV", "DY", "CV", "NN", "MK", "OX", "RG", "GL", "BA",
    "EX", "PL", "TR", "TQ", "DT", "BH", "BN", "CT", "ME", "TN", "CB", "IP", "NR", "PE",
    "LN", "DN", "HU", "YO", "HG", "DL", "SR", "DH", "CA", "LA", "PR", "BB", "FY", "WN",
)  # fmt: skip
UNIT = "ABDEFGHJLNPQRSTUWXYZ"
QWERTY = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
PHONETIC = (("ph", "f"), ("ck", "k"), ("c", "k"), ("y", "i"), ("ie", "y"), ("ee", "ea"),
            ("ou", "ow"), ("th", "t"), ("z", "s"), ("ae", "e"))  # fmt: skip


@functools.cache
def _names() -> dict[tuple[str, str], tuple[tuple[str, ...], tuple[float, ...]]]:
    lists: dict[tuple[str, str], list[tuple[str, float]]] = {}
    with open(DATA, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            lists.setdefault((row["kind"], row["origin"]), []).append(
                (row["name"], float(row["weight"]))
            )
    return {k: (tuple(n for n, _ in v), tuple(w for _, w in v)) for k, v in lists.items()}


def _name(kind: str, origin: str, rng: random.Random) -> str:
    names, weights = _names()[(kind, origin)]
    return rng.choices(names, weights)[0]


def _given(sex: str, origin: str, rng: random.Random) -> str:
    return _name("given-female" if sex == "F" else "given-male", origin, rng)


def _postcode(rng: random.Random, area: str | None = None) -> str:
    area = area or rng.choice(AREAS)
    return f"{area}{rng.randint(1, 40)} {rng.randint(1, 9)}{rng.choice(UNIT)}{rng.choice(UNIT)}"


@dataclass
class Person:
    entity: int
    household: int
    first: str
    middle: list[str]
    birth_surname: str
    surname: str  # current: the spouse's after a marriage, or hyphenated
    dob: date
    sex: str
    postcode: str  # current
    old_postcode: str = ""  # before the household moved ('' if it did not)


@dataclass(frozen=True)
class Home:
    household: int
    origin: str
    postcode: str
    old_postcode: str


def _member(
    people: list[Person], home: Home, rng: random.Random, sex: str, dob: date, birth: str,
    current: str,
) -> None:  # fmt: skip
    """Add one person of `home` (names drawn from its origin's lists)."""
    n_middle = rng.choices([0, 1, 2], [0.45, 0.45, 0.10])[0]
    middle = [_given(sex, home.origin, rng) for _ in range(n_middle)]
    first = _given(sex, home.origin, rng)
    people.append(Person(len(people), home.household, first, middle, birth, current, dob, sex,
                         home.postcode, home.old_postcode))  # fmt: skip


def population(size: int, rng: random.Random) -> list[Person]:
    """`size` people in households (see the module docstring)."""
    people: list[Person] = []
    household = 0
    while len(people) < size:
        household += 1
        origin = rng.choices(list(ORIGIN_SHARES), list(ORIGIN_SHARES.values()))[0]
        members = rng.choices([1, 2, 3, 4, 5], [0.30, 0.35, 0.15, 0.13, 0.07])[0]
        postcode = _postcode(rng)
        old = ""
        if rng.random() < 0.20:
            area = postcode.split(" ")[0].rstrip("0123456789")
            old = _postcode(rng, area if rng.random() < 0.4 else None)
        family = _name("surname", origin, rng)
        adults = 1 if members == 1 or rng.random() < 0.25 else 2
        first_dob = date(1940, 1, 1) + timedelta(days=rng.randint(0, 365 * 50))

        home = Home(household, origin, postcode, old)
        add = functools.partial(_member, people, home, rng)
        sex = rng.choice("FM")
        add(sex, first_dob, family, family)
        if adults == 2:
            partner_sex = "M" if sex == "F" and rng.random() < 0.95 else "F"
            partner_dob = first_dob + timedelta(days=rng.randint(-365 * 6, 365 * 6))
            birth = _name("surname", origin, rng)
            current = birth
            if partner_sex == "F" and rng.random() < 0.35:
                current = f"{birth}-{family}" if rng.random() < 0.1 else family
            add(partner_sex, partner_dob, birth, current)
        parent_dob = first_dob
        previous: Person | None = None
        for _ in range(members - adults):
            child_sex = rng.choice("FM")
            if previous is not None and rng.random() < 0.03:  # a twin of the previous child
                add(child_sex, previous.dob, family, family)
                twin = people[-1]
                if rng.random() < 0.5:  # same initial: Jack and Jake, Ella and Emma
                    for _ in range(20):
                        name = _given(child_sex, origin, rng)
                        if name[0] == previous.first[0] and name != previous.first:
                            twin.first = name
                            break
                previous = twin
                continue
            earliest = parent_dob + timedelta(days=365 * 18)
            latest = min(parent_dob + timedelta(days=365 * 42), date(2008, 12, 31))
            dob = earliest + timedelta(days=rng.randint(0, max(0, (latest - earliest).days)))
            add(child_sex, dob, family, family)
            previous = people[-1]
    return people[:size]


@dataclass(frozen=True)
class Org:
    """One organisation's holdings, conventions and corruption rates (before --corruption)."""

    name: str
    share: float  # of the population
    known_to_police: float  # share of its people drawn from the police forces' holdings
    id_column: str
    id_prefix: str
    layout: str  # full-comma | full-given-first | separate | separate-middle
    columns: dict[str, str]
    date_format: str
    upper: bool = False
    postcode_compact: bool = False
    sex_words: bool = False
    middle_in_forenames: float = 0.0
    edit_rate: float = 0.008  # name errors per character
    initial_only: float = 0.01
    known_as: float = 0.02  # a middle name used as the first name
    diminutive: float = 0.02
    swapped: float = 0.005
    maiden_recorded: float = 0.3  # a married woman's record holding her birth surname
    hyphen_dropped: float = 0.3  # a double-barrelled surname recorded as one part
    dob_missing: float = 0.02
    dob_placeholder: float = 0.01  # 01/01 of the year
    dob_error: float = 0.015  # a swap, a year-digit transposition, or a day off by one
    sex_missing: float = 0.0
    postcode_missing: float = 0.03
    postcode_typo: float = 0.01
    outward_only: float = 0.0
    old_postcode: float = 0.5  # for movers: holds the old postcode

    def mapping_toml(self) -> str:
        c = self.columns
        lines = [f'id = "{self.id_column}"', "", "[fields]"]
        if self.layout == "full-comma":
            split = f'{{ column = "{c["name"]}", split = "surname, given" }}'
            lines += [f"given_name = {split}", f"surname = {split}"]
        elif self.layout == "full-given-first":
            split = f'{{ column = "{c["name"]}", split = "given-first" }}'
            lines += [f"given_name = {split}", f"surname = {split}"]
        else:
            lines += [f'given_name = "{c["given"]}"', f'surname = "{c["surname"]}"']
        lines += [
            f'dob = {{ column = "{c["dob"]}", date_format = "{self.date_format}" }}',
            f'sex = "{c["sex"]}"',
            f'postcode = "{c["postcode"]}"',
        ]
        return "\n".join(lines) + "\n"

    def scaled(self, factor: float) -> Org:
        """The same organisation with every corruption rate multiplied by `factor`."""
        names = (
            "edit_rate", "initial_only", "known_as", "diminutive", "swapped", "dob_missing",
            "dob_placeholder", "dob_error", "sex_missing", "postcode_missing", "postcode_typo",
            "outward_only",
        )  # fmt: skip
        return replace(self, **{n: min(0.9, getattr(self, n) * factor) for n in names})


ORGS = (
    Org("met-custody", 0.30, 0.0, "CustodyRef", "MC",  "full-comma",
        {"name": "Name", "dob": "DateOfBirth", "sex": "Gender", "postcode": "PostCode"},
        "%d/%m/%Y", middle_in_forenames=0.8),
    Org("county-police", 0.30, 0.0, "person_id", "CP", "separate-middle",
        {"given": "forename", "middle": "middle_names", "surname": "surname", "dob": "dob",
         "sex": "sex", "postcode": "postcode"},
        "%Y%m%d", upper=True, postcode_compact=True, sex_words=True, maiden_recorded=0.4),
    Org("probation", 0.08, 0.9, "Case No", "PR", "separate",
        {"given": "First Name", "surname": "Last Name", "dob": "D.O.B.", "sex": "Sex",
         "postcode": "Post Code"},
        "%d-%b-%Y", middle_in_forenames=0.3, edit_rate=0.012, dob_missing=0.05,
        postcode_missing=0.08, old_postcode=0.6),
    Org("retail-watch", 0.04, 0.7, "ref", "RW", "full-given-first",
        {"name": "Full name", "dob": "Approx DOB", "sex": "Gender", "postcode": "Postcode"},
        "%d/%m/%Y", middle_in_forenames=0.05, edit_rate=0.02, initial_only=0.02,
        known_as=0.03, diminutive=0.12, swapped=0.01, dob_missing=0.5, dob_placeholder=0.05,
        dob_error=0.03, sex_missing=0.4, postcode_missing=0.15, postcode_typo=0.03,
        outward_only=0.05, old_postcode=0.35, maiden_recorded=0.5),
)  # fmt: skip


def _neighbour(ch: str, rng: random.Random) -> str:
    for row in QWERTY:
        i = row.find(ch.lower())
        if i >= 0:
            near = [row[j] for j in (i - 1, i + 1) if 0 <= j < len(row)]
            pick = rng.choice(near)
            return pick.upper() if ch.isupper() else pick
    return ch


def misspell(value: str, rate: float, rng: random.Random) -> str:
    """Each letter starts an error with probability `rate` (so about Poisson(rate * letters)
    errors a name), each a QWERTY-neighbour substitution, a phonetic respelling, a deletion
    or a transposition, anywhere in the name."""
    errors = sum(rng.random() < rate for ch in value if ch.isalpha())
    for _ in range(errors):
        if len(value) < 2:
            break
        kind = rng.random()
        i = rng.randrange(len(value))
        if kind < 0.4 and value[i].isalpha():
            value = value[:i] + _neighbour(value[i], rng) + value[i + 1 :]
        elif kind < 0.7:
            lowered = value.lower()
            options = [(a, b) for a, b in PHONETIC if a in lowered] + [
                (b, a) for a, b in PHONETIC if b in lowered and len(b) > 1
            ]
            doubled = [j for j in range(len(value) - 1) if value[j] == value[j + 1]]
            if doubled and rng.random() < 0.4:
                j = rng.choice(doubled)
                value = value[:j] + value[j + 1 :]
            elif options:
                a, b = rng.choice(options)
                j = lowered.find(a)
                repl = b.upper() if value[j].isupper() else b
                value = value[:j] + repl + value[j + len(a) :]
        elif kind < 0.85:
            value = value[:i] + value[i + 1 :]
        elif i < len(value) - 1:
            value = value[:i] + value[i + 1] + value[i] + value[i + 2 :]
    return value


def diminutive(name: str, rng: random.Random) -> str:
    """A truncated short form, up to the consonant after the first vowel (at least three
    letters): Christopher -> Chris, Kathleen -> Kat, Alexander -> Alex; a three-letter one
    sometimes with -y (Sammy, Jonny)."""
    if len(name) < 5:
        return name
    vowels = "aeiouy"
    cut, seen_vowel = 0, False
    for i, ch in enumerate(name.lower()):
        if i and ch in vowels:
            seen_vowel = True
        elif seen_vowel and ch not in vowels:
            cut = i + 1
            if cut >= 3:
                break
            seen_vowel = False
    if not 3 <= cut < len(name):
        return name
    short = name[:cut]
    if len(short) == 3 and rng.random() < 0.3:
        short += short[-1] + "y"
    return short


def _dob(day: date, org: Org, rng: random.Random) -> str:
    if rng.random() < org.dob_missing:
        return ""
    if rng.random() < org.dob_placeholder:
        day = date(day.year, 1, 1)
    elif rng.random() < org.dob_error:
        kind = rng.random()
        if kind < 0.4 and day.day <= 12 and day.day != day.month:
            day = day.replace(day=day.month, month=day.day)
        elif kind < 0.7:
            year = str(day.year)
            swapped = int(year[:2] + year[3] + year[2])
            if 1900 < swapped < 2015:
                try:
                    day = day.replace(year=swapped)
                except ValueError:
                    day = day.replace(year=swapped, day=28)
        else:
            day = day + timedelta(days=rng.choice((-1, 1)))
    return day.strftime(org.date_format)


def _postcode_as(person: Person, org: Org, rng: random.Random) -> str:
    code = person.postcode
    if person.old_postcode and rng.random() < org.old_postcode:
        code = person.old_postcode
    if rng.random() < org.postcode_missing:
        return ""
    if rng.random() < org.postcode_typo:
        i = rng.choice([j for j, ch in enumerate(code) if ch.isalnum()])
        ch = code[i]
        new = str((int(ch) + rng.choice((1, -1))) % 10) if ch.isdigit() else rng.choice(UNIT)
        code = code[:i] + new + code[i + 1 :]
    if rng.random() < org.outward_only:
        code = code.split(" ")[0]
    if org.postcode_compact:
        code = code.replace(" ", "").lower()
    return code


def export_row(org: Org, person: Person, n: int, rng: random.Random) -> dict[str, str]:
    first = person.first
    middle = list(person.middle)
    if middle and rng.random() < org.known_as:
        first, middle = middle[0], [person.first, *middle[1:]]
    if rng.random() < org.diminutive:
        first = diminutive(first, rng)
    first = misspell(first, org.edit_rate, rng)
    if rng.random() < org.initial_only:
        first = first[0]
    surname = person.surname
    if surname != person.birth_surname and rng.random() < org.maiden_recorded:
        surname = person.birth_surname
    if "-" in surname and rng.random() < org.hyphen_dropped:
        surname = rng.choice(surname.split("-"))
    surname = misspell(surname, org.edit_rate, rng)
    if rng.random() < org.swapped:
        first, surname = surname, first
    middles = " ".join(middle)
    forenames = (
        f"{first} {middles}" if middles and rng.random() < org.middle_in_forenames else first
    )
    if org.upper:
        forenames, surname, middles = forenames.upper(), surname.upper(), middles.upper()
    sex = "" if rng.random() < org.sex_missing else person.sex
    if sex and org.sex_words:
        sex = {"F": "Female", "M": "Male"}[sex]
    c = org.columns
    row = {org.id_column: f"{org.id_prefix}{700000 + n}"}
    if org.layout == "full-comma":
        row[c["name"]] = f"{surname.upper()}, {forenames}"
    elif org.layout == "full-given-first":
        row[c["name"]] = f"{forenames} {surname}"
    else:
        row[c["given"]] = forenames
        if org.layout == "separate-middle":
            row[c["middle"]] = middles
        row[c["surname"]] = surname
    row[c["dob"]] = _dob(person.dob, org, rng)
    row[c["sex"]] = sex
    row[c["postcode"]] = _postcode_as(person, org, rng)
    return row


def holdings(
    people: list[Person], orgs: tuple[Org, ...], rng: random.Random
) -> dict[str, list[Person]]:
    """Who each organisation holds: police forces at random; the others partly from them."""
    held: dict[str, list[Person]] = {}
    police: set[int] = set()
    for org in orgs:
        count = round(org.share * len(people))
        if org.known_to_police == 0:
            chosen = rng.sample(people, count)
            police.update(p.entity for p in chosen)
        else:
            known = [p for p in people if p.entity in police]
            unknown = [p for p in people if p.entity not in police]
            k = min(len(known), round(count * org.known_to_police))
            chosen = rng.sample(known, k) + rng.sample(unknown, min(len(unknown), count - k))
        rng.shuffle(chosen)
        held[org.name] = chosen
    return held


def write_exports(
    folder: Path, seed: int, size: int = 20_000, corruption: float = 1.0
) -> dict[str, Export]:
    """Write each organisation's CSV and mapping, and truth.csv; returns them by org."""
    rng = random.Random(seed)
    people = population(size, rng)
    orgs = tuple(org.scaled(corruption) for org in ORGS)
    folder.mkdir(parents=True, exist_ok=True)
    out: dict[str, Export] = {}
    held = holdings(people, orgs, rng)
    for org in orgs:
        rows = [export_row(org, p, n, rng) for n, p in enumerate(held[org.name])]
        header = [org.id_column, *org.columns.values()]
        entities = [p.entity for p in held[org.name]]
        out[org.name] = write_export(folder, org.name, header, rows, org.mapping_toml(), entities)
    write_truth(folder, out)
    return out


def hand_rows(folder: Path) -> dict[str, tuple[list[str], list[list[str]]]]:
    """Each export's ids and records normalised by hand, knowing its conventions (the
    benchmark's anchors get this): given names, surname (a full name cut by its known
    layout), ISO date of birth, sex letter, postcode, folded to letters and digits."""
    out: dict[str, tuple[list[str], list[list[str]]]] = {}
    for org in ORGS:
        c = org.columns
        ids, rows = [], []
        with open(folder / f"{org.name}.csv", newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                if org.layout == "full-comma":
                    surname, _, given = row[c["name"]].partition(",")
                elif org.layout == "full-given-first":
                    *names, surname = row[c["name"]].split() or [""]
                    given = " ".join(names)
                else:
                    given, surname = row[c["given"]], row[c["surname"]]
                ids.append(row[org.id_column])
                rows.append(
                    hand_row(
                        given,
                        surname,
                        row[c["dob"]],
                        org.date_format,
                        row[c["sex"]],
                        row[c["postcode"]],
                    )
                )
        out[org.name] = (ids, rows)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the exports into")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--population", type=int, default=20_000)
    parser.add_argument("--corruption", type=float, default=1.0, help="multiplies every rate")
    args = parser.parse_args()
    for name, exp in write_exports(args.out, args.seed, args.population, args.corruption).items():
        print(f"{name}: {len(exp.truth)} records -> {exp.csv}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
