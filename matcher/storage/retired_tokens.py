"""Tokens that stopped working, by their hash (table `retired_tokens`): a member token
revoked (`revoke_token`) or replaced by a new one (`rotate_token`), a named user's token
revoked (`revoke_user`, or with its member's). A caller that presents such a token is told so,
and when (rpc/auth.py), instead of being told its token is valid nowhere: it holds the token,
so it learns nothing it lacks. Nothing about any other token is ever said.

A row is the token's hash (as `members.token_hash` kept it), the project and member it
was issued for, whether it was a named user's, why it stopped (`revoked`, `rotated`) and
when. No user name: a user's rows go with its user row, when the member erases its data or
the project expires (`forget_users_in`); a member's stay as its other token hashes do
(project_store.py). Tokens retired before this table existed are not in it: they keep the
old answer, the token is not valid.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from blindmatch.matcher.core.tokens import same_hash
from blindmatch.matcher.storage.sqlite import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS retired_tokens (
    token_hash BLOB PRIMARY KEY,
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    is_user INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
"""

REVOKED, ROTATED = "revoked", "rotated"


@dataclass(frozen=True)
class Retired:
    """Why a token stopped working (`REVOKED`, `ROTATED`), when, and whether it was a
    named user's."""

    reason: str
    at: float
    is_user: bool


def retire_in(
    tx: sqlite3.Connection,
    digest: bytes,
    project: str,
    member: str,
    *,
    reason: str,
    at: float,
    is_user: bool = False,
) -> None:
    """Inside `tx` (the one that stops the token): note the token whose hash is `digest`
    as retired."""
    tx.execute(
        "INSERT OR REPLACE INTO retired_tokens VALUES (?,?,?,?,?,?)",
        (digest, project, member, int(is_user), reason, at),
    )


def forget_users_in(tx: sqlite3.Connection, project: str, member: str | None) -> None:
    """Inside `tx`: forget the retired user tokens of `member` (every member's if None),
    as their user rows go."""
    if member is None:
        tx.execute("DELETE FROM retired_tokens WHERE project=? AND is_user=1", (project,))
    else:
        tx.execute(
            "DELETE FROM retired_tokens WHERE project=? AND member=? AND is_user=1",
            (project, member),
        )


def retired(db: Database, digest: bytes) -> Retired | None:
    """How the token whose hash is `digest` stopped working; None when it was never
    retired (or nobody ever held it). Not cached: asked only of a refused token."""
    rows = db.query(
        "SELECT token_hash, reason, at, is_user FROM retired_tokens WHERE token_hash=?",
        (digest,),
    )
    if not rows or not same_hash(rows[0][0], digest):
        return None
    return Retired(str(rows[0][1]), float(rows[0][2]), bool(rows[0][3]))
