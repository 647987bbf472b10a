"""What `blindmatch project ...` is given, checked before the matcher is asked (the names,
--members, --expires-in, --tokens-dir: one that cannot be written is refused before a token
is issued), and the matcher's refusals of names said with what
to do. Split out of cli/project.py, which keeps the commands.

`project create`'s NAME and `--members` are checked here by the matcher's own rule
(`matcher/domain.py`: `NAME_RE`, said as `NAME_RULE`): what it would refuse is refused as
a usage error (exit 2), nothing sent; the matcher checks them again (other clients exist).
Spaces around a member's name are dropped (`--members " a , b"` is `a,b`); an empty entry
(`a,,b`, a comma at either end) is refused by its position, never dropped; a project needs
at least two distinct members. An unknown project or member, or a name taken, is said with
the command that shows what there is (`project list`, `project show --operator`).
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.client.errors import InputError, MatcherError, NotFoundError, RejectedError

if TYPE_CHECKING:
    from blindmatch.client.remote.client import MatcherClient

_DURATION = re.compile(r"(\d+)\s*([hdwy])")
_UNIT_SECONDS = {"h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}


def parse_expiry(text: str, now: float | None = None) -> int:
    """`--expires-in`: a duration (12h, 90d, 8w, 1y) or a UTC date (2026-12-31) -> unix time."""
    import datetime as dt

    now = time.time() if now is None else now
    text = text.strip().lower()
    if m := _DURATION.fullmatch(text):
        amount = int(m.group(1))
        if amount < 1:
            raise InputError(f"--expires-in {text}: must be at least 1{m.group(2)}")
        return _at_most_ten_years(text, int(now + amount * _UNIT_SECONDS[m.group(2)]), now)
    try:
        day = dt.datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=dt.UTC)
    except ValueError:
        raise InputError(
            f"--expires-in {text!r}: give a duration such as 90d, 12h, 8w or 1y, "
            "or a date such as 2026-12-31"
        ) from None
    expires = int(day.timestamp())
    if expires <= now:
        raise InputError(f"--expires-in {text}: that date has passed")
    return _at_most_ten_years(text, expires, now)


def _at_most_ten_years(text: str, expires: int, now: float) -> int:
    """The matcher's bound on a project's life (domain.MAX_RETENTION), refused here as a
    usage error: it was the matcher's INVALID_ARGUMENT in unix seconds (exit 3)."""
    from blindmatch.matcher.domain import DAY, MAX_RETENTION

    if expires > now + MAX_RETENTION:
        raise InputError(
            f"--expires-in {text}: a project's data is kept at most {MAX_RETENTION / DAY:.0f} "
            "days (ten years); give a shorter time or an earlier date"
        )
    return expires


def check_new_tokens(args: argparse.Namespace, members: list[str]) -> None:
    """`project create --tokens-dir DIR`: DIR/MEMBER.token already there is another
    project's token (or this name's before): refused before the call, which would replace
    it with no copy kept. (`rotate-token` replaces its member's file: that token is dead.)"""
    check_tokens_dir(args)
    if not args.tokens_dir:
        return
    there = [f"{m}.token" for m in members if (Path(args.tokens_dir) / f"{m}.token").exists()]
    if there:
        raise InputError(
            f"--tokens-dir {args.tokens_dir}: {', '.join(there)} "
            f"{'is' if len(there) == 1 else 'are'} there already (another project's "
            "tokens?), which this would replace; give a folder of this project's own "
            "(nothing was sent: no token was issued)"
        )


def check_tokens_dir(args: argparse.Namespace) -> None:
    """--tokens-dir that is a file, or a folder that cannot be made or written: refused
    before the call, whose tokens are shown once (a project made, or a token rotated, with
    nowhere to write them left them nowhere). The folder is made here (owner-only), as
    `write_tokens` would."""
    if not args.tokens_dir:
        return
    folder = Path(args.tokens_dir)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"--tokens-dir {args.tokens_dir}: is a file; give a folder")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"--tokens-dir {args.tokens_dir}: cannot make it ({exc.strerror or exc}); give a "
            "folder you can write (nothing was sent: no token was issued)"
        ) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(
            f"--tokens-dir {args.tokens_dir}: you cannot write in it; give a folder you can "
            "(nothing was sent: no token was issued)"
        )


@contextmanager
def tokens_folder(args: argparse.Namespace) -> Iterator[None]:
    """`check_tokens_dir` (which makes --tokens-dir), and the folders it made removed again
    where the command then fails (the matcher refuses, a token file cannot be written, Ctrl-C)
    and they hold nothing: only those made here, deepest first; one holding a token written
    is kept. Before (leftovers2), a refused `project create --tokens-dir NEW` left NEW empty."""
    made: list[Path] = []
    if args.tokens_dir:
        folder = Path(args.tokens_dir).absolute()
        while not folder.exists() and folder != folder.parent:
            made.append(folder)
            folder = folder.parent
    check_tokens_dir(args)
    try:
        yield
    except BaseException:
        for folder in made:  # deepest first
            try:
                folder.rmdir()
            except OSError:  # not empty (a token written), or gone: left as it is
                break
        raise


def name_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", metavar="NAME", help="project name")
    parser.add_argument(
        "--project",
        dest="project_option",
        metavar="NAME",
        help="the same, as other commands take it",
    )


def project_of(args: argparse.Namespace) -> str:
    """The project, given as NAME or as --project NAME (not two different ones)."""
    if args.name and args.project_option and args.name != args.project_option:
        raise InputError(
            f"two projects given ({args.name} and --project {args.project_option}): give one"
        )
    found = args.name or args.project_option
    if not found:
        raise InputError("which project? give its NAME (or --project NAME)")
    return str(found)


def new_project_name(args: argparse.Namespace) -> str:
    """`project create`'s NAME, refused here where the matcher would refuse it."""
    from blindmatch.matcher.domain import NAME_RULE, valid_name

    name = project_of(args)
    if not valid_name(name):
        raise InputError(f"project name {name!r} is not valid ({NAME_RULE}; e.g. burglary-2026)")
    return name


def _entries(positions: list[int]) -> str:
    said = [str(p) for p in positions]
    if len(said) == 1:
        return f"entry {said[0]}"
    return f"entries {', '.join(said[:-1])} and {said[-1]}"


def members_of(text: str) -> list[str]:
    """`--members`: comma-separated names, each stripped of the spaces around it, refused
    (InputError, exit 2) where the matcher would refuse them or where an entry is empty."""
    from blindmatch.matcher.domain import MAX_MEMBERS, NAME_RULE, TWO_MEMBERS_RULE, valid_name

    need = f"{TWO_MEMBERS_RULE}, e.g. --members north,south"  # the matcher's rule, as it says it
    names = [part.strip() for part in text.split(",")]
    given = f"--members {text!r}"
    if not any(names):
        raise InputError(f"{given} names no member: {need}")
    empty = [i + 1 for i, name in enumerate(names) if not name]
    if empty:
        raise InputError(
            f"{given}: {_entries(empty)} of {len(names)} {'is' if len(empty) == 1 else 'are'} "
            "empty (two commas in a row, or one at the start or end): give each member's "
            "name once, separated by commas, e.g. --members north,south"
        )
    bad = [(i + 1, name) for i, name in enumerate(names) if not valid_name(name)]
    if bad:
        listed = ", ".join(f"{name!r} ({_entries([i])})" for i, name in bad)
        raise InputError(
            f"{given}: not a member name: {listed}; a member name is {NAME_RULE} "
            "(e.g. north-police)"
        )
    for name in dict.fromkeys(names):
        again = [i + 1 for i, other in enumerate(names) if other == name]
        if len(again) > 1:
            raise InputError(f"{given}: {name!r} is given more than once ({_entries(again)}): "
                             f"{need}")  # fmt: skip
    if len(names) < 2:
        raise InputError(f"{given}: one member only: {need}")
    if len(names) > MAX_MEMBERS:
        raise InputError(f"{given}: {len(names)} members; a project has at most {MAX_MEMBERS}")
    return names


def member_given(args: argparse.Namespace) -> str:
    """`--member` of `rotate-token`/`revoke-token`: an empty one is a usage error."""
    member = str(args.member).strip()
    if not member:
        raise InputError("--member is empty: give the member's name (`blindmatch project show "
                         "NAME --operator` lists them)")  # fmt: skip
    return member


@contextmanager
def said_with_hint(client: MatcherClient, project: str, member: str = "") -> Iterator[None]:
    """An operator's call about `project` (and `member`): the matcher's refusal of a name it
    does not know, or of one taken, said with what there is (the project's members, asked
    of the matcher as the operator) or the command that shows it."""
    try:
        yield
    except NotFoundError as exc:
        hint = "`blindmatch project list` lists the live projects"
        if member:
            try:
                known = client.list_projects(project)
            except MatcherError:  # (the project is not there either: the hint above)
                known = []
            if known:
                hint = f"its members: {', '.join(m.name for m in known[0].members)}"
        raise _with(exc, hint) from None
    except RejectedError as exc:
        if not str(exc).endswith("[ALREADY_EXISTS]"):  # (channel.py's `translate_errors`)
            raise
        raise _with(
            exc, "choose another name (`blindmatch project list` lists the live projects)"
        ) from None


def _with(exc: MatcherError, hint: str) -> MatcherError:
    """The matcher's refusal, of the same class and trailing metadata, with `hint` after."""
    said = type(exc)(f"{exc}; {hint}")
    said.trailing = exc.trailing
    return said
