"""The parser, assembled from one module per command group, and `main`."""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from blindmatch.cli import (
    admin,
    audit,
    batch,
    certs,
    checks,
    demo,
    encoding,
    lookup,
    member,
    project,
    realtime,
    requests,
    secret,
    serve,
    twoserver,
    user,
    watch,
)
from blindmatch.cli.errors import run

# In the order `blindmatch --help` lists them: the operator's, then the member's
# batch flow, then real time, then the tools.
GROUPS = (
    serve, lookup, twoserver, project, admin, audit, user, encoding, secret, batch, requests,
    member, realtime, watch, checks, certs, demo,
)  # fmt: skip


class _Version(argparse.Action):
    """`--version`, read from the installed package's metadata only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        from blindmatch import __version__

        print(f"blindmatch {__version__}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """`blindmatch`'s parsers: a command mistyped is refused with the one it is close to
    (`uplod`: did you mean 'upload'?), as well as the list argparse gives."""

    def error(self, message: str) -> NoReturn:
        chosen = re.match(r"argument [A-Z]+: invalid choice: '(.*?)' \(", message)
        names = [n for a in self._actions if isinstance(a, argparse._SubParsersAction)
                 for n in a.choices]  # fmt: skip
        close = difflib.get_close_matches(chosen[1], names, n=1) if chosen else []
        if close:
            message += f"; did you mean '{close[0]}'?"
        super().error(message)


class _RootParser(_Parser):
    """`blindmatch` itself: an option given before the command (`blindmatch --project b
    upload ...`) is said to go after it, rather than its value refused as a command."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        words = list(sys.argv[1:] if args is None else args)
        first = words[0].split("=", 1)[0] if words else ""
        if first.startswith("-") and not any(
            own.startswith(first) for own in ("-h", "--help", "--version")
        ):
            names = [n for a in self._actions if isinstance(a, argparse._SubParsersAction)
                     for n in a.choices]  # fmt: skip
            named = next((w for w in words if w in names), "COMMAND")
            self.error(
                f"{first} comes before the command: a command's options go after its name, "
                f"e.g. blindmatch {named} ... {first} ..."
            )
        return super().parse_known_args(words, namespace)


class _CommandParser(_Parser):
    """A command's parser (`admin`, `admin backup`, ...): an option it does not know is
    refused with its own usage, not passed up to `blindmatch`'s (whose "unrecognized
    arguments: -q" named neither the command nor its options). The innermost command
    parses first, so it is the one that says it; its nested commands' parsers are of this
    class too (`add_subparsers` makes them of its parser's class)."""

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}" + _unknown_hint(self, extras))
        return parsed, extras


def _unknown_hint(parser: argparse.ArgumentParser, extras: Sequence[str]) -> str:
    """What to do about the first option in `extras` that `parser` does not take: the option
    of its own it is close to (a typo), else the commands that take it (an option of another
    command: `run --encoded`, `encode --project`), and where its own options are listed."""
    option = next((e.split("=", 1)[0] for e in extras if e.startswith("-") and e != "-"), None)
    if option is None:
        return ""
    from blindmatch.cli.reference import commands  # (it imports this module)

    command = parser.prog.removeprefix("blindmatch").strip()
    own = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    close = difflib.get_close_matches(option, own, n=1, cutoff=0.75)
    takers = [
        " ".join(path)
        for path, sub in commands(build_parser())
        if path
        and " ".join(path) != command
        and any(option in a.option_strings for a in sub._actions)
    ]
    if close:
        why = f"did you mean {close[0]}?"
    elif takers:
        shown = [*takers[:4], f"{len(takers) - 4} more"] if len(takers) > 5 else takers
        named = " and ".join([", ".join(shown[:-1]), shown[-1]] if len(shown) > 1 else shown)
        why = f"{option} is an option of {named}, not of {command}"
    else:
        why = f"no blindmatch command takes {option}"
    stop = " " if why.endswith("?") else "; "
    return f" ({why}{stop}`{parser.prog} --help` lists its options)"


def build_parser() -> argparse.ArgumentParser:
    parser = _RootParser(
        prog="blindmatch",
        description="Find who else holds a record about the same person, without showing records.",
        epilog="`blindmatch COMMAND --help` explains each command, with an example; "
        "docs/cli.md has them all.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    def command() -> int:
        # Parsing may import what defines an option's choices (its help, a value's check).
        args = build_parser().parse_args(argv)
        return int(args.func(args))

    return run(command, argv)


if __name__ == "__main__":
    sys.exit(main())
