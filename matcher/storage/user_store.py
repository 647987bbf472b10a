"""Named users under a member: each holds its own token (stored as a hash), issued and
revoked by the member's administrator (the holder of the member token).

A user token acts for its member, like the member token, and every audit entry made with it
names the user (core/audit.py: `Event.user`). A project that requires users refuses
consultations and disclosures made with the member token alone (rpc/servicer.py). A revoked
user keeps its row (name, when issued, when revoked) so the log's names stay explained; its
token hash is replaced by one no token has. The rows go (names are personal data) with the
member's data when it erases, and with the project's when it expires (retention_store.py);
the audit log keeps the names in its entries, as it keeps every entry.
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Mapping

from blindmatch.matcher.core import audit
from blindmatch.matcher.core.tokens import new_token, token_hash
from blindmatch.matcher.domain import User, valid_name
from blindmatch.matcher.errors import AlreadyExists, InvalidArgument, NotFound
from blindmatch.matcher.storage import retired_tokens
from blindmatch.matcher.storage.base import StoreBase
from blindmatch.matcher.storage.retired_tokens import REVOKED

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    name TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    created REAL NOT NULL,
    revoked REAL,
    PRIMARY KEY (project, member, name)
);
"""


def _unusable() -> bytes:
    return token_hash("revoked:" + secrets.token_hex(32))  # no token hashes to this


class UserStore(StoreBase):
    def add_user(self, project: str, member: str, name: str) -> str:
        """A token for user `name` of `member` (the only time it exists)."""
        if not valid_name(name):
            raise InvalidArgument(
                f"user: {name!r} is not a valid user name (lower-case letters, digits, "
                "'_', '.', '-'; at most 64; starting with a letter or digit)"
            )
        token = new_token()
        with self.db.tx() as tx:
            self._member_exists(tx, project, member)
            row = tx.execute(
                "SELECT revoked FROM users WHERE project=? AND member=? AND name=?",
                (project, member, name),
            ).fetchone()
            if row is not None and row[0] is None:
                raise AlreadyExists(
                    f"user {name!r} of {member!r} already holds a token; revoke it first "
                    "(`blindmatch user revoke`) to issue a new one"
                )
            tx.execute(
                "INSERT OR REPLACE INTO users VALUES (?,?,?,?,?,NULL)",
                (project, member, name, token_hash(token), self.clock()),
            )
            self.audit.append_in(
                tx, audit.Event(member, "user.add", project, member, detail={"user": name})
            )
        return token

    def revoke_user(
        self, project: str, member: str, name: str, replay_of: Mapping[str, object] | None = None
    ) -> None:
        """User `name`'s token stops working at once. `replay_of`: the replaced data dir's
        entry this one makes again (`admin restore`)."""
        with self.db.tx() as tx:
            self._member_exists(tx, project, member)
            row = tx.execute(
                "SELECT token_hash FROM users "
                "WHERE project=? AND member=? AND name=? AND revoked IS NULL",
                (project, member, name),
            ).fetchone()
            if row is None:
                raise NotFound(f"{member!r} has no user {name!r} holding a token")
            self._revoke_user_in(tx, project, member, name, row[0])
            self.audit.append_in(
                tx,
                audit.maybe_replayed(
                    member, "user.revoke", project, member, {"user": name}, replay_of
                ),
            )

    def revoke_users_in(self, tx: sqlite3.Connection, project: str, member: str) -> list[str]:
        """Revoke every user of `member`, inside `tx` (the member's token was revoked)."""
        held = tx.execute(
            "SELECT name, token_hash FROM users WHERE project=? AND member=? AND revoked IS NULL",
            (project, member),
        ).fetchall()
        for name, digest in held:
            self._revoke_user_in(tx, project, member, name, digest)
        return [name for name, _ in held]

    def _revoke_user_in(
        self, tx: sqlite3.Connection, project: str, member: str, name: str, digest: bytes
    ) -> None:
        """Inside `tx`: user `name`'s token (hash `digest`) stops working, noted as
        revoked (retired_tokens.py) so that its holder is told so."""
        now = self.clock()
        tx.execute(
            "UPDATE users SET token_hash=?, revoked=? WHERE project=? AND member=? AND name=?",
            (_unusable(), now, project, member, name),
        )
        retired_tokens.retire_in(tx, digest, project, member, reason=REVOKED, at=now, is_user=True)

    def delete_users_in(
        self, tx: sqlite3.Connection, project: str, member: str | None = None
    ) -> int:
        """Delete the user rows of `member` (every member's if None), inside `tx`: their
        names go and their tokens stop working. Returns how many rows went."""
        retired_tokens.forget_users_in(tx, project, member)
        if member is None:
            return tx.execute("DELETE FROM users WHERE project=?", (project,)).rowcount
        return tx.execute(
            "DELETE FROM users WHERE project=? AND member=?", (project, member)
        ).rowcount

    def users(self, project: str, member: str) -> list[User]:
        rows = self.db.query(
            "SELECT name, created, revoked FROM users WHERE project=? AND member=? ORDER BY name",
            (project, member),
        )
        return [User(name, created, revoked) for name, created, revoked in rows]

    def user_token_owner(self, digest: bytes) -> tuple[str, str, str] | None:
        """(project, member, user) holding the token whose hash is `digest`."""
        rows = self.db.cached_rows(
            ("user-token", digest),
            "SELECT project, member, name FROM users WHERE token_hash=? AND revoked IS NULL",
            (digest,),
        )
        return (str(rows[0][0]), str(rows[0][1]), str(rows[0][2])) if rows else None

    def _member_exists(self, tx: sqlite3.Connection, project: str, member: str) -> None:
        if not tx.execute(
            "SELECT 1 FROM members WHERE project=? AND name=?", (project, member)
        ).fetchone():
            raise NotFound(f"project {project!r} has no member {member!r}")
