"""A date cell's text made plain before its formats are tried (`plain_date`), so that the
same date written by different systems reads the same: what a person sees as `1980-04-03`
is read as that, whatever invisible or look-alike characters the export put in it.

- Unicode compatibility forms become plain ones (NFKC: full-width `１９８０-０４-０３`);
- invisible format characters go (zero-width space and joiners, a byte-order mark inside the
  cell, the word joiner, a soft hyphen);
- dashes and the minus sign become `-` (`1980‑04‑03`, `03–Apr–1980`);
- runs of whitespace become one space, and spaces and quotes around the date go (`"1980-04-03"`,
  Excel's text prefix `'1980-04-03`, `‘03/04/1980’`);
- an ordinal day loses its suffix (`3rd April 1980`, `April 3rd, 1980`), a weekday before the
  date goes (`Thursday, April 3, 1980`, Excel's long date), and `Sept` is read as `Sep` (the
  UK's abbreviation, which strptime's `%b` lacks);
- a time of day of exactly midnight after the date is dropped, in any zone (`1980-04-03
  00:00:00.000`, `1980-04-03T00:00:00Z`, `1980-04-03T00:00:00+01:00`, `03/04/1980 12:00:00 AM`,
  HL7's `19800403000000`), and so is a zone after an ISO date (`1980-04-03Z`,
  `1980-04-03+01:00`), unless the formats read times themselves: the date written is the date
  meant. Any other
  time (`1980-04-02T23:00:00Z`, a date shifted by a time zone) is kept, so the value stays
  invalid and is reported;
- digits of other scripts (Arabic-Indic `١٩٨٠`, Extended Arabic-Indic `۱۹۸۰`, Devanagari
  `१९८०`: any Unicode decimal digit, as `int()` reads them) become ASCII digits;
- a Welsh or Irish month's name (`3 Ebrill 1980`, `3 Mis Ebrill 1980`, `3 Aibreán 1980`,
  `03-EBR-1980`), with or without its accents, is read as the English one (`plain_dates`): a
  full name where `%B` reads it, an abbreviation (CLDR's: `Ebr`, `Aib`) where `%b` does, as
  English names are; a Welsh or Irish weekday before it (`dydd Mawrth, 4 Ebrill 1980`, `Dé
  Máirt 4 Aibreán 1980`) and a Welsh or Irish ordinal day (`4ydd`, `4ú`) go. No such word is
  an English month's name or abbreviation, so no date read before reads otherwise; Welsh
  `Mawrth` (March, and Tuesday) is a weekday only after `dydd`.

Nothing here guesses the order of day and month; `normalise.parse_date` reads the result.
A date read that no living person was born on (after today, or over `MAX_AGE` years ago) is
invalid (`lifetime_problem`).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import date, timedelta
from functools import lru_cache

# Dashes, the minus sign and small/full-width hyphen-minus (after NFKC: the ones it keeps).
_DASHES = str.maketrans(dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2043", "-"))
# Quotes around a date: straight, curly, low, the backtick and the acute accent used as one.
QUOTES = "\"'`\u00b4\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u2032\u2033"
# A day number's ordinal suffix: 1st, 2nd, 3rd, 4th ... 31st (a whole word after 1-2 digits).
_ORDINAL = re.compile(r"\b(\d{1,2})(?:st|nd|rd|th)\b", re.IGNORECASE)
_SEPT = re.compile(r"\bsept\b", re.IGNORECASE)
# What a numeric date is written with (14/03/1988, 1988-03-14, 14.03.1988): such a date holds
# nothing more to make plain.
_NUMERIC = "0123456789/-."
# A zone after an ISO date without a time (XML's xs:date: 1980-04-03Z, 1980-04-03+01:00), and
# HL7's compact date-time at midnight (198004030000, 19800403000000): the date written.
_DATE_ZONE = re.compile(r"(?<=^\d{4}-\d\d-\d\d)(?:Z|[+-]\d\d:?\d\d)$", re.IGNORECASE)
_COMPACT_MIDNIGHT = re.compile(r"(?<=^\d{8})0000(?:00)?$")
# A weekday before the date, as Excel's long date writes it ("Thursday, April 3, 1980").
_WEEKDAY = re.compile(
    r"^(?:(?:mon|tues|wednes|thurs|fri|satur|sun)day|mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun)"
    r"\.?,? ",
    re.IGNORECASE,
)
# A time of day of exactly midnight after a date, with or without seconds, fractions and a
# zone (Z or any offset), or 12:00 AM.
_MIDNIGHT = re.compile(
    r"[ T](?:00:00(?::00(?:\.0+)?)? ?(?:Z|[+-]\d\d:?\d\d)?|12:00(?::00)? ?AM)$", re.IGNORECASE
)


def _visible(text: str) -> str:
    """`text` in NFKC, without format characters (category Cf), its dashes as '-' and its
    digits (any script's, as `int()` reads them: '١٩٨٠') as ASCII ones."""
    text = unicodedata.normalize("NFKC", text)
    kept = "".join(
        str(unicodedata.decimal(ch)) if ch.isdecimal() else ch
        for ch in text
        if unicodedata.category(ch) != "Cf"
    )
    return kept.translate(_DASHES)


def plain_date(value: str, reads_times: bool = False) -> str:
    """The text of a date cell as its formats should read it (see the module's docstring),
    a Welsh or Irish month's full name as English's (`plain_dates`: as `%b` reads one too);
    `reads_times`: the formats read a time themselves (one has `%H`), so none is dropped."""
    return plain_dates(value, reads_times)[0]


@lru_cache(maxsize=256)
def _needs(fmt: str) -> tuple[frozenset[str], bool]:
    """What a text must hold for strptime to read it in `fmt`: the format's literal
    characters (case-folded, as strptime matches them), and whether a letter (a month's name)."""
    literals = re.sub(r"%.", "", fmt).casefold()
    return frozenset(literals), bool(re.search(r"%[bB]", fmt))


def may_read(chars: frozenset[str], has_letter: bool, fmt: str) -> bool:
    """Whether `fmt` may read a text of these (case-folded) characters: False where it lacks a
    literal of the format ('-' for %Y-%m-%d) or a letter for a month's name, which strptime
    would refuse too. Asking it anyway costs more than the refusal: strptime keeps only 5
    formats' patterns, so 11 default formats tried in turn compile each pattern every time."""
    literals, month_name = _needs(fmt)
    return literals <= chars and (has_letter or not month_name)


_ENGLISH = (
    ("January", "Jan"), ("February", "Feb"), ("March", "Mar"), ("April", "Apr"), ("May", "May"),
    ("June", "Jun"), ("July", "Jul"), ("August", "Aug"), ("September", "Sep"),
    ("October", "Oct"), ("November", "Nov"), ("December", "Dec"),
)  # fmt: skip
# Welsh and Irish months' names, January to December: the full name, and CLDR's abbreviation
# (the same word for Welsh Mai, Awst and Medi, and Irish Márta and Iúil).
_WELSH = (
    ("Ionawr", "Ion"), ("Chwefror", "Chwef"), ("Mawrth", "Maw"), ("Ebrill", "Ebr"),
    ("Mai", "Mai"), ("Mehefin", "Meh"), ("Gorffennaf", "Gorff"), ("Awst", "Awst"),
    ("Medi", "Medi"), ("Hydref", "Hyd"), ("Tachwedd", "Tach"), ("Rhagfyr", "Rhag"),
)  # fmt: skip
_IRISH = (
    ("Eanáir", "Ean"), ("Feabhra", "Feabh"), ("Márta", "Márta"), ("Aibreán", "Aib"),
    ("Bealtaine", "Beal"), ("Meitheamh", "Meith"), ("Iúil", "Iúil"), ("Lúnasa", "Lún"),
    ("Meán Fómhair", "MFómh"), ("Deireadh Fómhair", "DFómh"), ("Samhain", "Samh"),
    ("Nollaig", "Noll"),
)  # fmt: skip


def _bare(word: str) -> str:
    """`word` case-folded, without accents and with one space between its words."""
    letters = unicodedata.normalize("NFD", word.casefold())
    return " ".join("".join(ch for ch in letters if not unicodedata.combining(ch)).split())


# Each Welsh or Irish name (bare) -> (what %B formats read, what %b formats read): the
# English full name for a full name, the abbreviation for an abbreviation.
_OTHER_MONTHS: dict[str, tuple[str, str]] = {}
for _names in (_WELSH, _IRISH):
    for (_full, _short), (_english, _english_short) in zip(_names, _ENGLISH, strict=True):
        _OTHER_MONTHS[_bare(_short)] = (_english_short, _english_short)
        _OTHER_MONTHS[_bare(_full)] = (_english, _english if _full != _short else _english_short)
# A Welsh or Irish month's name (bare), after "mis" (Welsh: month) or "mi" (Irish) if either.
_OTHER_MONTH = re.compile(
    r"\b(?:(?:mis|mi) )?(" + "|".join(sorted(_OTHER_MONTHS, key=len, reverse=True)) + r")\b"
)
# The words of those names: a date holding none of them (as every English one) is not
# searched for them, which would cost more than the rest of its reading.
_LETTERS = re.compile(r"[^\W\d_]+")
_OTHER_WORDS = frozenset(word for name in _OTHER_MONTHS for word in name.split())
# A Welsh or Irish weekday before the date (CLDR's long date: "dydd Mawrth, 4 Ebrill 1980",
# "Dé Máirt 4 Aibreán 1980"); Welsh Mawrth is a weekday only so, after "dydd".
_OTHER_WEEKDAY = re.compile(
    r"^(?:dydd (?:sul|llun|mawrth|mercher|iau|gwener|sadwrn)|deardaoin"
    r"|de (?:domhnaigh|luain|mairt|ceadaoin|haoine|sathairn)),? "
)
# A Welsh or Irish ordinal day (1af, 2il, 3ydd, 5ed, 7fed, 11eg, 21ain; Irish 3ú).
_OTHER_ORDINAL = re.compile(r"\b(\d{1,2})(?:af|il|ydd|ed|fed|eg|ain|u)\b")


def plain_dates(value: str, reads_times: bool = False) -> tuple[str, str]:
    """The text of a date cell as formats without `%b` should read it, and as formats with
    `%b` should (see the module's docstring): the same, but where it names a Welsh or Irish
    month, whose full name is English's full one and whose abbreviation English's (in lower
    case and without accents: strptime reads month names in any case)."""
    text = value if value.isascii() else _visible(value)
    text = " ".join(text.split()).strip(QUOTES).strip()
    if text.isdigit() and not reads_times:
        text = _COMPACT_MIDNIGHT.sub("", text)
        return text, text
    if not text.strip(_NUMERIC):  # (14/03/1988: nothing else to look for)
        return text, text
    if not reads_times:
        text = _SEPT.sub("Sep", _ORDINAL.sub(r"\1", _WEEKDAY.sub("", text)))
        text = _DATE_ZONE.sub("", _MIDNIGHT.sub("", text))
    words = _LETTERS.findall(text.casefold() if text.isascii() else _bare(text))
    if _OTHER_WORDS.isdisjoint(words):
        return text, text
    bare = _OTHER_ORDINAL.sub(r"\1", _OTHER_WEEKDAY.sub("", _bare(text)))
    full = _OTHER_MONTH.sub(lambda m: _OTHER_MONTHS[m[1]][0], bare)
    return full, _OTHER_MONTH.sub(lambda m: _OTHER_MONTHS[m[1]][1], bare)


# A date field holds a living person's date (of birth): one after the day it is read, or more
# than MAX_AGE years before it (a century mistyped: 1088, 0198), is no one's: invalid.
MAX_AGE = 150
NO_ONES_DATE = "no living person's date of birth"


def lifetime_problem(day: date, today: date) -> str | None:
    """Why `day` is no living person's date of birth, read on `today`: after it, or more
    than MAX_AGE years before it; None where it may be one."""
    if day > today:
        return f"reads as {day.isoformat()}, after today: {NO_ONES_DATE}"
    if (day.year + MAX_AGE, day.month, day.day) < (today.year, today.month, today.day):
        return (
            f"reads as {day.isoformat()}, more than {MAX_AGE} years ago: {NO_ONES_DATE} "
            "(check the century)"
        )
    return None


__all__ = [
    "MAX_AGE",
    "NO_ONES_DATE",
    "QUOTES",
    "lifetime_problem",
    "may_read",
    "plain_date",
    "plain_dates",
    "why_unread",
]


# A date format written as a spreadsheet or a form writes it (DD/MM/YYYY, yyyy-mm-dd, D MMM
# YYYY, DD-MON-YYYY) and the strptime directive each token stands for.
_TOKENS = re.compile(r"Y{4}|Y{2}|M{4}|M{3}|MON|M{2}|M|D{2}|D", re.IGNORECASE)
_DIRECTIVES = {"yyyy": "%Y", "yy": "%y", "mmmm": "%B", "mmm": "%b", "mon": "%b", "mm": "%m",
               "m": "%m", "dd": "%d", "d": "%d"}  # fmt: skip


def format_problem(fmt: str) -> str | None:
    """Why `fmt` cannot read dates as a `strptime` format, with the format meant where it is
    written as a spreadsheet writes one (`DD/MM/YYYY`: '%d/%m/%Y'); None if it can."""
    from datetime import datetime

    if "%" not in fmt:
        meant = _TOKENS.sub(lambda m: _DIRECTIVES[m.group().casefold()], fmt)
        if meant != fmt and not re.search(r"[A-Za-z]", re.sub(r"%.", "", meant)):
            problem = format_problem(meant)
            if problem:
                return f"{fmt!r} is not a strptime format; {problem}"
            return f"{fmt!r} is not a strptime format: write it as {meant!r}"
        return f"{fmt!r} is not a strptime format: write it as one, such as '%d/%m/%Y'"
    try:
        written = date(1987, 11, 23).strftime(fmt)
        datetime.strptime(written, fmt)
    except ValueError as exc:
        return f"{fmt!r} is not a strptime format ({exc})"
    if not re.search(r"%[YyGcx]", fmt):
        return f"{fmt!r} has no year (%Y or %y): strptime would read every date as in 1900"
    return None


EXCEL_EPOCH = date(1899, 12, 30)  # Excel's day 0 (its serial numbers count from it)
# A time of day after a date ('1980-01-03 13:45', '1980-01-02T23:00:00Z'), once a time at
# midnight has gone (`plain_dates`).
_CLOCK = re.compile(r"[ T](\d{1,2}:\d\d(?::\d\d(?:\.\d+)?)?(?: ?[AP]M)?)", re.IGNORECASE)


def why_unread(text: str) -> str:
    """What a date's plain `text` that no format read looks like, said after the reason ("" if
    nothing): an Excel serial number ('29284', a date cell saved as General: not read as one,
    since nothing in the file says it is one), or a date with a time of day other than
    midnight ('03/01/1980 13:45': a date shifted by a time zone is not read back)."""
    if text.isdigit() and len(text) == 5:
        day = EXCEL_EPOCH + timedelta(days=int(text))
        return (
            f"; it looks like an Excel date serial number ({day.isoformat()}): format the "
            "column as dates in Excel before saving the CSV"
        )
    clock = _CLOCK.search(text)
    if clock:
        return (
            f"; it has a time of day, {clock.group(1)}, other than midnight: a date shifted "
            "by a time zone (1980-01-02T23:00:00Z for 3 January) would be read as the wrong "
            "day, so none is read; have the export write the date alone"
        )
    return ""
