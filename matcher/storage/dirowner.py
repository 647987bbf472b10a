"""Whose data dir a folder is, told by the files there: the matcher's (`blindmatch serve
--data-dir`: `blindmatch.sqlite`, storage/datadir.py) or a two-server role's (`blindmatch
two-server role --role ROLE --data-dir`: `twoserver-ROLE-held.sqlite`,
`twoserver-ROLE.sqlite`, storage/role_check.py `roles_in`).

A server started on another's data dir would hold nothing of what is there and start
empty, silently (and write its own files beside the other's): `refuse_others` refuses the
start instead, naming whose dir it is and the command that serves it. A new or empty folder,
or one holding only the server's own files, is not refused; a file given for the folder (or
above it) is, naming the path."""

from __future__ import annotations

from pathlib import Path

from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.storage.datadir import DB_NAME
from blindmatch.matcher.storage.role_check import RoleFiles, roles_in

MATCHER = "matcher"  # the matcher's own data dir; a role's is named by its role
_NAMES = {MATCHER: "the matcher", "s1": "S1", "s2": "S2", "combiner": "the combiner role"}


def owners(data_dir: Path) -> list[str]:
    """Whose files `data_dir` holds: `MATCHER` and any two-server roles."""
    matcher = [MATCHER] if (data_dir / DB_NAME).is_file() else []
    return matcher + roles_in(data_dir)


def _command(owner: str, data_dir: Path) -> str:
    if owner == MATCHER:
        return f"`blindmatch serve --data-dir {data_dir}`"
    return f"`blindmatch two-server role --role {owner} --data-dir {data_dir}`"


def _evidence(owner: str, data_dir: Path) -> str:
    if owner == MATCHER:
        return DB_NAME
    files = RoleFiles(data_dir, owner)
    return next(p.name for p in (files.held_db, files.audit_db) if p.is_file())


def refuse_others(data_dir: Path, own: str) -> None:
    """`StartupRefused` when `data_dir` holds another server's data than `own`'s (`MATCHER`
    or a role): whose it is, the command that serves it, and the flag to give instead."""
    flag = (
        "`blindmatch serve --data-dir`"
        if own == MATCHER
        else f"`blindmatch two-server role --role {own} --data-dir`"
    )
    above = data_dir.absolute()
    while not above.exists() and above != above.parent:
        above = above.parent
    if not above.is_dir():  # (not the --listen address's fault, as it was reported)
        raise StartupRefused(
            f"{data_dir}: {'it' if above == data_dir.absolute() else above} is a file, not a "
            f"folder; give {flag} a folder (a new one is made ready at the start)"
        )
    others = [o for o in owners(data_dir) if o != own]
    if not others:
        return
    other = others[0]
    raise StartupRefused(
        f"{data_dir} is {_NAMES.get(other, other)}'s data dir (it holds "
        f"{_evidence(other, data_dir)}), not {_NAMES.get(own, own)}'s: started on it, "
        f"{_NAMES.get(own, own)} would hold none of what is there. Serve it with "
        f"{_command(other, data_dir)}, and give {flag} a folder of its own (a new or empty "
        "one is made ready at the start)"
    )


__all__ = ["MATCHER", "owners", "refuse_others"]
