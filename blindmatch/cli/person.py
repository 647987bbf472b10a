"""The person a `query` or `watch` asks about, as given: options (`--surname`, `--field
NAME=VALUE`) or a `--person-file` of NAME=VALUE lines; each value with how it was given, so
that an error names the option rather than the temporary CSV it is encoded through."""

from __future__ import annotations

import argparse
import sys

from blindmatch.client.errors import InputError

PERSON_OPTIONS = {
    "given_name": "--given-name",
    "surname": "--surname",
    "dob": "--dob",
    "sex": "--sex",
    "postcode": "--postcode",
}


def person_file(path: str) -> dict[str, str]:
    """--person-file: NAME=VALUE lines (the names of --field, or given_name, surname, dob,
    sex, postcode), from a file or, for `-`, standard input; blank and # lines skipped."""
    where = "standard input" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as fh:
                text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text; save it as UTF-8"
        raise InputError(f"--person-file {where}: cannot read it ({why})") from None
    text = text.removeprefix("\ufeff")  # the byte-order mark Windows Notepad writes
    values: dict[str, str] = {}
    lines: dict[str, int] = {}  # the line that gave each name
    # (lines end at \n or \r alone: splitlines() also splits at U+0085 and U+2028 in a value)
    for number, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            raise InputError(
                f"--person-file {where}, line {number}: expected NAME=VALUE, e.g. surname=Smith"
            )
        if name.strip() in lines:  # which of two values is the person's is not guessed
            raise InputError(
                f"--person-file {where}, line {number}: {name.strip()} again (line "
                f"{lines[name.strip()]} gave it); nothing was sent: give each field once"
            )
        values[name.strip()], lines[name.strip()] = value.strip(), number
    if not values:
        raise InputError(f"--person-file {where}: no NAME=VALUE lines")
    return values


def query_values(args: argparse.Namespace) -> tuple[dict[str, str], dict[str, str]]:
    """The person's values by field, and how each was given (`--surname`), for errors."""
    values, given = dict[str, str](), dict[str, str]()
    if args.person_file:
        if args.field or any(getattr(args, name) is not None for name in PERSON_OPTIONS):
            raise InputError("give the person in --person-file or as options, not both")
        values = person_file(args.person_file)
        return values, {f: f"{f} in --person-file {args.person_file}" for f in values}
    for item in args.field or []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise InputError(f"--field {item!r}: expected NAME=VALUE, e.g. surname=Smith")
        _give(values, given, name.strip(), value, f"--field {name.strip()}")
    for name, flag in PERSON_OPTIONS.items():
        value = getattr(args, name)
        if value is not None:
            _give(values, given, name, value, flag)
    return values, given


def _give(values: dict[str, str], given: dict[str, str], name: str, value: str, how: str) -> None:
    """`values[name] = value`, refused where the field was given already (`--field surname=`
    and `--surname`, or `--field` twice): one of the two would be dropped without a word."""
    if name in values:
        raise InputError(
            f"{name} given twice ({given[name]} and {how}); nothing was sent: give each field once"
        )
    values[name], given[name] = value, how
