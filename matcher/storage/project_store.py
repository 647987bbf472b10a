"""Projects, their members, the members' tokens (as hashes) and their consent.

A project's name, members and token hashes outlive its data (retention_store.py): a
late caller is told the project expired, and the name is never reused.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Mapping
from pathlib import Path

from blindmatch.matcher.core import audit
from blindmatch.matcher.core.tokens import new_token, same_hash, token_hash
from blindmatch.matcher.domain import CLK_MODE, DEFAULT_RETENTION, Level, Project
from blindmatch.matcher.errors import AlreadyExists, NotFound
from blindmatch.matcher.storage import retired_tokens, sqlite
from blindmatch.matcher.storage.base import StoreBase
from blindmatch.matcher.storage.retired_tokens import REVOKED, ROTATED, Retired

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    name TEXT PRIMARY KEY,
    disclosure INTEGER NOT NULL,
    threshold REAL NOT NULL,
    created REAL NOT NULL,
    blocking TEXT NOT NULL DEFAULT 'auto',
    require_purpose INTEGER NOT NULL DEFAULT 0,
    expires REAL,
    erased REAL
);
CREATE TABLE IF NOT EXISTS members (
    project TEXT NOT NULL REFERENCES projects(name),
    name TEXT NOT NULL,
    token_hash BLOB NOT NULL UNIQUE,
    consent INTEGER,
    PRIMARY KEY (project, name)
);
"""

# Columns added after the first release: (table, column, declaration).
MIGRATIONS = [
    ("projects", "blocking", "TEXT NOT NULL DEFAULT 'auto'"),
    ("projects", "require_purpose", "INTEGER NOT NULL DEFAULT 0"),
    ("projects", "expires", "REAL"),
    ("projects", "erased", "REAL"),
    ("members", "consent", "INTEGER"),
    ("runs", "tasks_done", "INTEGER NOT NULL DEFAULT 0"),
    ("runs", "tasks_total", "INTEGER NOT NULL DEFAULT 0"),
    ("audit", "user", "TEXT NOT NULL DEFAULT ''"),
    ("projects", "require_users", "INTEGER NOT NULL DEFAULT 0"),
    ("projects", "mode", "TEXT NOT NULL DEFAULT 'clk'"),
    ("twoserver_outcomes", "pending", "INTEGER NOT NULL DEFAULT 0"),
    ("request_refs", "withdrawn", "REAL"),  # since refcarry
]


# The store's layout (blindmatch.sqlite's, and with it the data dir's), kept in its header
# (`PRAGMA user_version`, as role_store.py keeps the held store's): written at start once the
# MIGRATIONS are applied, read before the store is opened. A store written before the marker
# reads 0: layout 1. A later blindmatch that changes the layout beyond what `_migrate` adds
# (a migration this one does not know) raises it; this one refuses a store of a layout it
# does not know (`refuse_newer`), changing nothing. (index.sqlite keeps its own: index_store.py
# `LAYOUT`.)
LAYOUT = 1


def refuse_newer(path: Path) -> None:
    """`StartupRefused` for a store of a layout this blindmatch does not know, before
    anything in its data dir is opened to write."""
    sqlite.refuse_newer(path, LAYOUT, sqlite.roll_back(path.parent))


class ProjectStore(StoreBase):
    def _migrate(self) -> None:
        added: list[str] = []
        with self.db.tx() as tx:
            if sqlite.stamp_layout(tx, LAYOUT):
                added.append("the layout marker")
            for table, column, decl in MIGRATIONS:
                have = {r[1] for r in tx.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    tx.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
                    added.append(f"column {table}.{column}")
            tx.execute(
                "UPDATE projects SET expires = created + ? WHERE expires IS NULL",
                (DEFAULT_RETENTION,),
            )
        self.db.say_upgrade(LAYOUT, *added)  # (once committed)

    def create_project(
        self,
        name: str,
        members: list[str],
        disclosure: Level,
        threshold: float,
        blocking: str = "auto",
        *,
        require_purpose: bool = False,
        expires: float | None = None,
        require_users: bool = False,
        mode: str = CLK_MODE,
    ) -> dict[str, str]:
        """Make the project; returns each member's token (the only time it exists)."""
        tokens = {m: new_token() for m in members}
        now = self.clock()
        expires = now + DEFAULT_RETENTION if expires is None else expires
        if expires <= now:
            raise ValueError("a project must expire in the future")
        with self.db.tx() as tx:
            row = tx.execute("SELECT erased FROM projects WHERE name=?", (name,)).fetchone()
            if row:
                gone = " (its data was deleted, but the name stays taken)" if row[0] else ""
                raise AlreadyExists(f"project {name!r} already exists{gone}")
            tx.execute(
                "INSERT INTO projects (name, disclosure, threshold, created, blocking, "
                "require_purpose, expires, require_users, mode) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    name,
                    int(disclosure),
                    threshold,
                    now,
                    blocking,
                    int(require_purpose),
                    expires,
                    int(require_users),
                    mode,
                ),
            )
            tx.executemany(
                "INSERT INTO members (project, name, token_hash) VALUES (?,?,?)",
                [(name, m, token_hash(t)) for m, t in tokens.items()],
            )
            self.audit.append_in(
                tx,
                audit.Event(
                    audit.OPERATOR,
                    "project.create",
                    name,
                    detail={
                        "members": members,
                        "disclosure": disclosure.label,
                        "threshold": threshold,
                        "require_purpose": require_purpose,
                        "require_users": require_users,
                        "expires": expires,
                        "mode": mode,
                    },
                ),
            )
        return tokens

    def project(self, name: str) -> Project:
        """A live project; NotFound when there is none or it has expired."""
        rows = self.db.cached_rows(
            ("project", name),
            "SELECT name, disclosure, threshold, blocking, require_purpose, expires, erased, "
            "require_users, mode FROM projects WHERE name=?",
            (name,),
        )
        if not rows:
            raise NotFound(f"no project named {name!r}")
        n, d, t, b, purpose, expires, erased, users, mode = rows[0]
        if erased is not None or expires <= self.clock():
            raise NotFound(self.gone_message(name, expires, erased is not None))
        return Project(n, Level(d), t, b, bool(purpose), expires, bool(users), mode)

    def gone_message(self, name: str, expires: float, erased: bool = True) -> str:
        """Why project `name` (its date `expires`) is refused: ended by the operator
        (`admin end-project`: its deletion's `project.expire` entry says `ended_by`), or
        expired at its date. Never the operator's reason (the operator's own, in the audit
        log): a member is told only who ended it and when. Before srvleft an ended project
        was said to have expired, as if its date had come."""
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
        if erased and self._ended_by_operator(name):  # `expires` was set to the end's time
            return (
                f"project {name!r} was ended by the operator at {when} (before its date); "
                "its encodings and results are deleted"
            )
        return f"project {name!r} expired at {when}; its encodings and results are deleted"

    def why_gone(self, name: str) -> str:
        """What a caller of project `name`, expired or ended, is told (`gone_message`)."""
        try:
            self.project(name)
        except NotFound as exc:
            return str(exc)
        return f"project {name!r} expired; its encodings and results are deleted"

    def _ended_by_operator(self, name: str) -> bool:
        """Whether the latest deletion of project `name`'s data was the operator's ending."""
        row = self.db.query(
            "SELECT detail FROM audit WHERE project=? AND action='project.expire' "
            "ORDER BY seq DESC LIMIT 1",
            (name,),
        )
        return bool(row) and json.loads(row[0][0]).get("ended_by") == audit.OPERATOR

    def token_owner(self, token: str) -> tuple[str, str, str] | None:
        """(project, member, user) holding `token` (user empty for the member's own
        token), or None when nobody does."""
        return self.digest_owner(token_hash(token))

    def digest_owner(self, digest: bytes) -> tuple[str, str, str] | None:
        """`token_owner` by the token's hash (`core.tokens.token_hash`)."""
        rows = self.db.cached_rows(
            ("token", digest),
            "SELECT project, name, token_hash FROM members WHERE token_hash=?",
            (digest,),
        )
        if not rows or not same_hash(rows[0][2], digest):
            return self.user_token_owner(digest)
        return str(rows[0][0]), str(rows[0][1]), ""

    def user_token_owner(self, digest: bytes) -> tuple[str, str, str] | None:
        return None  # user_store.UserStore: named users

    def members(self, project: str) -> list[str]:
        rows = self.db.query("SELECT name FROM members WHERE project=? ORDER BY name", (project,))
        return [r[0] for r in rows]

    def _require_member(self, tx: sqlite3.Connection, project: str, member: str) -> None:
        if not tx.execute(
            "SELECT 1 FROM members WHERE project=? AND name=?", (project, member)
        ).fetchone():
            raise NotFound(f"project {project!r} has no member {member!r}")

    def consents(self, project: str) -> dict[str, Level | None]:
        """Each member's consent: the most it lets partners learn (None: no limit of its own)."""
        rows = self.db.cached_rows(
            ("consents", project),
            "SELECT name, consent FROM members WHERE project=? ORDER BY name",
            (project,),
        )
        return {name: None if c is None else Level(c) for name, c in rows}

    def set_consent(
        self,
        project: str,
        member: str,
        level: Level,
        replay_of: Mapping[str, object] | None = None,
    ) -> None:
        """`replay_of`: the replaced data dir's entry this one makes again (`admin restore`)."""
        with self.db.tx() as tx:
            self._require_member(tx, project, member)
            tx.execute(
                "UPDATE members SET consent=? WHERE project=? AND name=?",
                (int(level), project, member),
            )
            detail = {"level": level.label}
            self.audit.append_in(
                tx, audit.maybe_replayed(member, "consent.set", project, member, detail, replay_of)
            )

    def rotate_token(self, project: str, member: str) -> str:
        """A new token for `member`; the old one stops working in the same transaction."""
        token = new_token()
        with self.db.tx() as tx:
            self.project(project)
            self._require_member(tx, project, member)
            self._retire_member_token(tx, project, member, ROTATED)
            tx.execute(
                "UPDATE members SET token_hash=? WHERE project=? AND name=?",
                (token_hash(token), project, member),
            )
            self.audit.append_in(tx, audit.Event(audit.OPERATOR, "token.rotate", project, member))
        return token

    def revoke_token(
        self,
        project: str,
        member: str,
        replay_of: Mapping[str, object] | None = None,
        *,
        users: bool = True,
    ) -> None:
        """`member`'s token stops working; nobody holds a token for it until a rotation.
        `replay_of`: the replaced data dir's entry this one makes again (`admin restore`);
        `users`: False keeps its named users' tokens (a rotation made again: it kept them)."""
        with self.db.tx() as tx:
            self.project(project)
            self._require_member(tx, project, member)
            self._retire_member_token(tx, project, member, REVOKED)
            unusable = token_hash("revoked:" + secrets.token_hex(32))  # no token hashes to this
            tx.execute(
                "UPDATE members SET token_hash=? WHERE project=? AND name=?",
                (unusable, project, member),
            )
            revoked = self.revoke_users_in(tx, project, member) if users else []
            detail = {"users_revoked": revoked} if revoked else {}
            self.audit.append_in(
                tx,
                audit.maybe_replayed(
                    audit.OPERATOR, "token.revoke", project, member, detail, replay_of
                ),
            )

    def _retire_member_token(
        self, tx: sqlite3.Connection, project: str, member: str, reason: str
    ) -> None:
        """Inside `tx`: note `member`'s current token as retired (`reason`), so that its
        holder is told so (retired_tokens.py)."""
        (digest,) = tx.execute(
            "SELECT token_hash FROM members WHERE project=? AND name=?", (project, member)
        ).fetchone()
        retired_tokens.retire_in(tx, digest, project, member, reason=reason, at=self.clock())

    def retired_token(self, digest: bytes) -> Retired | None:
        """How the token whose hash is `digest` stopped working (revoked, rotated away),
        if it did; None for a token nobody was ever issued."""
        return retired_tokens.retired(self.db, digest)

    def revoke_users_in(self, tx: sqlite3.Connection, project: str, member: str) -> list[str]:
        return []  # user_store.UserStore: named users

    def delete_users_in(
        self, tx: sqlite3.Connection, project: str, member: str | None = None
    ) -> int:
        return 0  # user_store.UserStore: named users

    def is_live(self, name: str) -> bool:
        """True for a project that exists and has not expired."""
        try:
            self.project(name)
        except NotFound:
            return False
        return True

    def mode_of(self, name: str) -> str:
        """The mode a project was created in, live or expired (its row stays); NotFound
        when there never was one."""
        rows = self.db.query("SELECT mode FROM projects WHERE name=?", (name,))
        if not rows:
            raise NotFound(f"no project named {name!r}")
        return str(rows[0][0])

    def live_projects(self) -> list[str]:
        """The names of every project that has not expired, in order."""
        rows = self.db.query(
            "SELECT name FROM projects WHERE erased IS NULL AND expires > ? ORDER BY name",
            (self.clock(),),
        )
        return [r[0] for r in rows]
