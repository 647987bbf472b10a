"""The data dir: SQLite for state, one file per upload for CLK bytes.

    DIR/blindmatch.sqlite   projects, members (token hashes, consent), uploads, runs,
                            links, audit (the hash-chained log)
    DIR/clks/<upload>.bin   an upload's CLKs, written once, fsynced, then renamed in
    DIR/tmp/                uploads in flight; emptied at start-up
    DIR/audit.key           the audit chain's HMAC key (unless kept elsewhere)

An upload is acknowledged only after its file is fsynced into `clks/` and its
row committed, so a crash loses nothing acknowledged and never exposes half an
upload. Every write goes through one connection under one lock (SQLite has a
single writer anyway); WAL mode lets that stay cheap.

Retries are idempotent: an upload may carry a client-chosen id, recorded in
`upload_keys` in the same transaction as the upload, so a retry of an
acknowledged upload finds it instead of storing it twice. A full disk (ENOSPC
from a write, SQLITE_FULL from the database) becomes `ResourceExhausted` and
leaves earlier data as it was; `min_free_bytes` refuses an upload up front when
it would leave less than that free.

Every change that the audit log records is appended in the same transaction as
the change itself. Deletion (erasure, expiry) is real: files are unlinked, rows
deleted with `secure_delete` on (freed pages are zeroed) and the WAL
checkpointed and truncated, so the bytes are gone from the data dir, not flagged.
"""

from __future__ import annotations

import errno
import itertools
import json
import os
import secrets
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from blindmatch.matcher import audit
from blindmatch.matcher.auth import new_token, same_hash, token_hash
from blindmatch.matcher.disclose import Level
from blindmatch.matcher.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from blindmatch.matcher.solve import Links

DAY = 24 * 3600.0
# The audit table's disclosed and detail columns (built once: json.dumps with options
# builds an encoder on every call).
_COLUMN_JSON = json.JSONEncoder(sort_keys=True)
DEFAULT_RETENTION = 180 * DAY
# upload_layouts.field_bits of a record-level upload with a fallback CLK: "fallback:BITS".
FALLBACK_PREFIX = "fallback:"

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
CREATE TABLE IF NOT EXISTS uploads (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    record_count INTEGER NOT NULL,
    clk_bits INTEGER NOT NULL,
    fingerprint BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    created REAL NOT NULL,
    current INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS uploads_current ON uploads (project, member, current);
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state TEXT NOT NULL,
    stage TEXT NOT NULL DEFAULT '',
    work_done INTEGER NOT NULL DEFAULT 0,
    work_total INTEGER NOT NULL DEFAULT 0,
    groups INTEGER NOT NULL DEFAULT 0,
    message TEXT NOT NULL DEFAULT '',
    threshold REAL NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS run_inputs (
    run_id TEXT NOT NULL,
    position INTEGER NOT NULL,
    member TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    PRIMARY KEY (run_id, position)
);
CREATE TABLE IF NOT EXISTS links (
    run_id TEXT NOT NULL,
    member TEXT NOT NULL,
    row INTEGER NOT NULL,
    partner TEXT NOT NULL,
    partner_row INTEGER NOT NULL,
    score REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS links_by_member ON links (run_id, member, row);
CREATE TABLE IF NOT EXISTS upload_keys (
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    client_upload_id TEXT NOT NULL,
    upload_id TEXT NOT NULL,
    PRIMARY KEY (project, member, client_upload_id)
);
CREATE TABLE IF NOT EXISTS upload_layouts (
    upload_id TEXT PRIMARY KEY,
    field_bits TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    purpose TEXT NOT NULL,
    disclosed TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
"""

# Columns added after the first release: (table, column, declaration).
MIGRATIONS = [
    ("projects", "blocking", "TEXT NOT NULL DEFAULT 'auto'"),
    ("projects", "require_purpose", "INTEGER NOT NULL DEFAULT 0"),
    ("projects", "expires", "REAL"),
    ("projects", "erased", "REAL"),
    ("members", "consent", "INTEGER"),
]

ACTIVE = ("queued", "running")


@dataclass(frozen=True)
class Project:
    name: str
    disclosure: Level
    threshold: float
    blocking: str = "auto"  # auto | exhaustive | lsh (see matcher.runs.choose_method)
    require_purpose: bool = False
    expires: float = 0.0  # seconds since 1970; its data is deleted then


@dataclass(frozen=True)
class Erased:
    uploads: int
    links: int


@dataclass(frozen=True)
class Upload:
    id: str
    project: str
    member: str
    record_count: int
    clk_bits: int
    fingerprint: bytes
    sha256: str


@dataclass(frozen=True)
class Run:
    id: str
    project: str
    state: str
    stage: str
    work_done: int
    work_total: int
    groups: int
    message: str
    threshold: float


DISK_FULL = "the matcher's disk is full; nothing was stored (earlier uploads are intact)"


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk (or the database's space) ran out."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_or_make_key(path: Path) -> bytes:
    """The audit HMAC key: 32 random bytes, made once, readable by the owner only."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(key)
            fh.flush()
            os.fsync(fh.fileno())
    if len(key) < 32:
        raise ValueError(f"{path}: an audit key must be at least 32 bytes")
    return key


class Store:
    """Everything the matcher keeps, in one data dir.

    `min_free_bytes` is the disk space uploads must leave free; `clock` gives
    the time (seconds since 1970) for expiry and the audit log; `audit_key_file`
    is where the audit chain's key lives (default DIR/audit.key).
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        min_free_bytes: int = 0,
        clock: Callable[[], float] = time.time,
        audit_key_file: str | Path | None = None,
    ) -> None:
        self.dir = Path(data_dir)
        self.min_free_bytes = min_free_bytes
        self.clk_dir = self.dir / "clks"
        self.tmp_dir = self.dir / "tmp"
        self.clock = clock
        for d in (self.dir, self.clk_dir, self.tmp_dir):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():  # uploads a crash cut short
            leftover.unlink()
        self._audit_key = _read_or_make_key(
            Path(audit_key_file) if audit_key_file else self.dir / "audit.key"
        )
        self._lock = threading.RLock()
        # Reads on every query (projects, token owners, current uploads), cached until the
        # next write: filled under the lock, cleared by every transaction (`_tx`).
        self._cache: dict[tuple[str, object], object] = {}
        self._db = sqlite3.connect(
            self.dir / "blindmatch.sqlite", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(SCHEMA)
        self._migrate()
        self._collect_garbage()

    def _migrate(self) -> None:
        with self._tx() as db:
            for table, column, decl in MIGRATIONS:
                have = {r[1] for r in db.execute(f"PRAGMA table_info({table})")}
                if column not in have:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
            db.execute(
                "UPDATE projects SET expires = created + ? WHERE expires IS NULL",
                (DEFAULT_RETENTION,),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self, *, changes_state: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. Unless it only appends to the audit log
        (`changes_state=False`), it forgets what `_cached` remembered."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                if disk_full(exc):
                    raise ResourceExhausted(DISK_FULL) from exc
                raise
            finally:
                if changes_state:
                    self._cache.clear()

    def _cached(
        self,
        key: tuple[str, object],
        sql: str,
        args: tuple[object, ...],
        *,
        keep_empty: bool = False,
    ) -> list[tuple]:
        """`_query`, remembered until the next write (an empty answer only if `keep_empty`:
        unknown names and tokens are not remembered, so they cannot fill the cache)."""
        hit = self._cache.get(key)
        if hit is not None:
            return hit  # type: ignore[return-value]
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            if rows or keep_empty:
                self._cache[key] = rows
            return rows

    def _query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- projects and members -------------------------------------------------

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
    ) -> dict[str, str]:
        """Make the project; returns each member's token (the only time it exists)."""
        tokens = {m: new_token() for m in members}
        now = self.clock()
        expires = now + DEFAULT_RETENTION if expires is None else expires
        if expires <= now:
            raise ValueError("a project must expire in the future")
        with self._tx() as db:
            row = db.execute("SELECT erased FROM projects WHERE name=?", (name,)).fetchone()
            if row:
                gone = " (its data was deleted, but the name stays taken)" if row[0] else ""
                raise AlreadyExists(f"project {name!r} already exists{gone}")
            db.execute(
                "INSERT INTO projects (name, disclosure, threshold, created, blocking, "
                "require_purpose, expires) VALUES (?,?,?,?,?,?,?)",
                (name, int(disclosure), threshold, now, blocking, int(require_purpose), expires),
            )
            db.executemany(
                "INSERT INTO members (project, name, token_hash) VALUES (?,?,?)",
                [(name, m, token_hash(t)) for m, t in tokens.items()],
            )
            self._append(
                db,
                audit.Event(
                    audit.OPERATOR,
                    "project.create",
                    name,
                    detail={
                        "members": members,
                        "disclosure": disclosure.name.lower(),
                        "threshold": threshold,
                        "require_purpose": require_purpose,
                        "expires": expires,
                    },
                ),
            )
        return tokens

    def project(self, name: str) -> Project:
        """A live project; NotFound when there is none or it has expired."""
        rows = self._cached(
            ("project", name),
            "SELECT name, disclosure, threshold, blocking, require_purpose, expires, erased "
            "FROM projects WHERE name=?",
            (name,),
        )
        if not rows:
            raise NotFound(f"no project named {name!r}")
        n, d, t, b, purpose, expires, erased = rows[0]
        if erased is not None or expires <= self.clock():
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
            raise NotFound(
                f"project {name!r} expired at {when}; its encodings and results are deleted"
            )
        return Project(n, Level(d), t, b, bool(purpose), expires)

    def member_for_token(self, project: str, token: str) -> str | None:
        """The member of `project` holding `token`; raises if it is another project's."""
        digest = token_hash(token)
        rows = self._cached(
            ("token", digest),
            "SELECT project, name, token_hash FROM members WHERE token_hash=?",
            (digest,),
        )
        if not rows or not same_hash(rows[0][2], digest):
            return None
        owner_project, member, _ = rows[0]
        if owner_project != project:
            self.project(project)  # unknown project -> NotFound
            raise PermissionDenied(f"this token does not belong to project {project!r}")
        return str(member)

    def token_owner(self, token: str) -> tuple[str, str] | None:
        """(project, member) holding `token`, or None when nobody does."""
        digest = token_hash(token)
        rows = self._query(
            "SELECT project, name, token_hash FROM members WHERE token_hash=?", (digest,)
        )
        if not rows or not same_hash(rows[0][2], digest):
            return None
        return str(rows[0][0]), str(rows[0][1])

    def members(self, project: str) -> list[str]:
        rows = self._query("SELECT name FROM members WHERE project=? ORDER BY name", (project,))
        return [r[0] for r in rows]

    def _require_member(self, db: sqlite3.Connection, project: str, member: str) -> None:
        if not db.execute(
            "SELECT 1 FROM members WHERE project=? AND name=?", (project, member)
        ).fetchone():
            raise NotFound(f"project {project!r} has no member {member!r}")

    def consents(self, project: str) -> dict[str, Level | None]:
        """Each member's consent: the most it lets partners learn (None: no limit of its own)."""
        rows = self._cached(
            ("consents", project),
            "SELECT name, consent FROM members WHERE project=? ORDER BY name",
            (project,),
        )
        return {name: None if c is None else Level(c) for name, c in rows}

    def set_consent(self, project: str, member: str, level: Level) -> None:
        with self._tx() as db:
            self._require_member(db, project, member)
            db.execute(
                "UPDATE members SET consent=? WHERE project=? AND name=?",
                (int(level), project, member),
            )
            self._append(
                db,
                audit.Event(
                    member, "consent.set", project, member, detail={"level": level.name.lower()}
                ),
            )

    def rotate_token(self, project: str, member: str) -> str:
        """A new token for `member`; the old one stops working in the same transaction."""
        token = new_token()
        with self._tx() as db:
            self.project(project)
            self._require_member(db, project, member)
            db.execute(
                "UPDATE members SET token_hash=? WHERE project=? AND name=?",
                (token_hash(token), project, member),
            )
            self._append(db, audit.Event(audit.OPERATOR, "token.rotate", project, member))
        return token

    def revoke_token(self, project: str, member: str) -> None:
        """`member`'s token stops working; nobody holds a token for it until a rotation."""
        with self._tx() as db:
            self.project(project)
            self._require_member(db, project, member)
            unusable = token_hash("revoked:" + secrets.token_hex(32))  # no token hashes to this
            db.execute(
                "UPDATE members SET token_hash=? WHERE project=? AND name=?",
                (unusable, project, member),
            )
            self._append(db, audit.Event(audit.OPERATOR, "token.revoke", project, member))

    # -- uploads ----------------------------------------------------------------

    def new_upload_path(self) -> Path:
        return self.tmp_dir / f"{uuid.uuid4().hex}.part"

    def ensure_room(self, nbytes: int) -> None:
        """Refuse an upload of `nbytes` that would leave less than `min_free_bytes` free."""
        free = shutil.disk_usage(self.dir).free
        if free - nbytes < self.min_free_bytes:
            mib = 1024 * 1024
            raise ResourceExhausted(
                f"not enough disk space on the matcher for this upload ({nbytes / mib:.1f} MiB "
                f"needed, {free / mib:.1f} MiB free, {self.min_free_bytes / mib:.1f} MiB kept "
                "in reserve); nothing was stored; ask the operator to free space"
            )

    def keyed_upload(self, project: str, member: str, client_upload_id: str) -> Upload | None:
        """The upload acknowledged earlier under this client-chosen id, if any."""
        rows = self._query(
            "SELECT upload_id FROM upload_keys WHERE project=? AND member=? AND client_upload_id=?",
            (project, member, client_upload_id),
        )
        return self.upload(rows[0][0]) if rows else None

    def current_uploads(self, project: str) -> dict[str, Upload]:
        rows = self._cached(
            ("uploads", project),
            "SELECT id, project, member, record_count, clk_bits, fingerprint, sha256 "
            "FROM uploads WHERE project=? AND current=1",
            (project,),
            keep_empty=True,
        )
        return {r[2]: Upload(*r) for r in rows}

    def commit_upload(
        self,
        project: str,
        member: str,
        part: Path,
        *,
        record_count: int,
        clk_bits: int,
        fingerprint: bytes,
        sha256: str,
        client_upload_id: str = "",
        field_bits: tuple[int, ...] = (),
        fallback_bits: int = 0,
    ) -> tuple[Upload, bool]:
        """Make a fully received, fsynced upload file the member's current data.

        With a `client_upload_id` already acknowledged for the same content,
        returns that earlier upload and stores nothing new. The flag says which: True
        for an earlier upload acknowledged again.
        """
        upload = Upload(
            uuid.uuid4().hex, project, member, record_count, clk_bits, fingerprint, sha256
        )
        final = self.clk_dir / f"{upload.id}.bin"
        try:
            with self._tx() as db:
                earlier = self._keyed_for_commit(upload, client_upload_id)
                if earlier is not None:
                    return earlier, True
                others = [(m, u) for m, u in self.current_uploads(project).items() if m != member]
                for other_member, other in others:
                    if other.clk_bits != clk_bits:
                        raise FailedPrecondition(
                            f"CLKs of {clk_bits} bits, but this project's other uploads have "
                            f"{other.clk_bits}-bit CLKs; encode with the project's shared schema"
                        )
                    if not same_hash(other.fingerprint, fingerprint):
                        raise FailedPrecondition(
                            "these encodings were made with a different schema or secret than "
                            f"{other_member}'s upload, already in the project; encode again with "
                            "the schema and secret agreed for this project"
                        )
                os.replace(part, final)
                _fsync_dir(self.clk_dir)
                self._append(
                    db,
                    audit.Event(
                        member,
                        "upload",
                        project,
                        member,
                        detail={
                            "upload_id": upload.id,
                            "record_count": record_count,
                            "clk_bits": clk_bits,
                            "sha256": sha256,
                        },
                    ),
                )
                db.execute(
                    "UPDATE uploads SET current=0 WHERE project=? AND member=? AND current=1",
                    (project, member),
                )
                db.execute(
                    "INSERT INTO uploads VALUES (?,?,?,?,?,?,?,?,1)",
                    (
                        upload.id,
                        project,
                        member,
                        record_count,
                        clk_bits,
                        fingerprint,
                        sha256,
                        self.clock(),
                    ),
                )
                if client_upload_id:
                    db.execute(
                        "INSERT INTO upload_keys VALUES (?,?,?,?)",
                        (project, member, client_upload_id, upload.id),
                    )
                if field_bits:  # field-level encodings (see matcher.fieldlevel)
                    db.execute(
                        "INSERT INTO upload_layouts VALUES (?,?)",
                        (upload.id, ",".join(map(str, field_bits))),
                    )
                elif fallback_bits:  # record-level with a fallback CLK (matcher.fallback)
                    db.execute(
                        "INSERT INTO upload_layouts VALUES (?,?)",
                        (upload.id, f"{FALLBACK_PREFIX}{fallback_bits}"),
                    )
        except BaseException as exc:
            final.unlink(missing_ok=True)  # a new name: never an acknowledged upload's file
            if disk_full(exc):
                raise ResourceExhausted(DISK_FULL) from exc
            raise
        self._collect_garbage()
        return upload, False

    def _keyed_for_commit(self, upload: Upload, client_upload_id: str) -> Upload | None:
        if not client_upload_id:
            return None
        earlier = self.keyed_upload(upload.project, upload.member, client_upload_id)
        if earlier is None:
            return None
        same = (earlier.sha256, earlier.record_count, earlier.clk_bits) == (
            upload.sha256,
            upload.record_count,
            upload.clk_bits,
        )
        if not same:
            raise AlreadyExists(
                f"client_upload_id {client_upload_id!r} was already used for a different "
                "upload; use a new id for new content"
            )
        return earlier

    def load_clks(self, upload: Upload) -> npt.NDArray[np.uint8]:
        """An upload's CLKs as an (n, clk_bits/8) array, mapped from disk."""
        path = self.clk_dir / f"{upload.id}.bin"
        if upload.record_count == 0:
            return np.zeros((0, upload.clk_bits // 8), dtype=np.uint8)
        return np.memmap(
            path, dtype=np.uint8, mode="r", shape=(upload.record_count, upload.clk_bits // 8)
        )

    def _layout(self, upload_id: str) -> str:
        rows = self._query("SELECT field_bits FROM upload_layouts WHERE upload_id=?", (upload_id,))
        return str(rows[0][0]) if rows else ""

    def field_bits(self, upload_id: str) -> tuple[int, ...]:
        """Segment sizes of a field-level upload; () for a record-level one."""
        layout = self._layout(upload_id)
        if not layout or layout.startswith(FALLBACK_PREFIX):
            return ()
        return tuple(int(b) for b in layout.split(","))

    def fallback_bits(self, upload_id: str) -> int:
        """Bits of the fallback CLK at the end of each of a record-level upload's CLKs; 0: none."""
        layout = self._layout(upload_id)
        return int(layout[len(FALLBACK_PREFIX) :]) if layout.startswith(FALLBACK_PREFIX) else 0

    def upload(self, upload_id: str) -> Upload:
        rows = self._query(
            "SELECT id, project, member, record_count, clk_bits, fingerprint, sha256 "
            "FROM uploads WHERE id=?",
            (upload_id,),
        )
        if not rows:
            raise NotFound(f"no upload {upload_id!r}")
        return Upload(*rows[0])

    def _collect_garbage(self) -> None:
        """Delete CLK files no current upload or active run needs any more."""
        with self._lock:
            keep = {
                r[0]
                for r in self._db.execute(
                    "SELECT id FROM uploads WHERE current=1 UNION "
                    "SELECT upload_id FROM run_inputs JOIN runs ON runs.id=run_inputs.run_id "
                    "WHERE runs.state IN ('queued','running')"
                )
            }
            for path in self.clk_dir.glob("*.bin"):
                if path.stem not in keep:
                    path.unlink(missing_ok=True)

    # -- runs -------------------------------------------------------------------

    def create_run(self, project: str, actor: str = audit.MATCHER) -> tuple[Run, bool]:
        """A new queued run over every member's current upload, or the active one.

        Returns (run, created).
        """
        with self._tx() as db:
            active = db.execute(
                "SELECT id FROM runs WHERE project=? AND state IN ('queued','running')",
                (project,),
            ).fetchone()
            if active:
                return self.run(active[0]), False
            proj = self.project(project)
            uploads = self.current_uploads(project)
            missing = [m for m in self.members(project) if m not in uploads]
            if missing:
                raise FailedPrecondition(
                    f"not every member has uploaded yet: waiting for {', '.join(missing)}"
                )
            seq = db.execute("SELECT COUNT(*) FROM runs WHERE project=?", (project,)).fetchone()[0]
            run_id = f"{project}-run-{seq + 1}"
            db.execute(
                "INSERT INTO runs (id, project, seq, state, threshold, created) "
                "VALUES (?,?,?,?,?,?)",
                (run_id, project, seq + 1, "queued", proj.threshold, self.clock()),
            )
            db.executemany(
                "INSERT INTO run_inputs VALUES (?,?,?,?)",
                [(run_id, i, m, uploads[m].id) for i, m in enumerate(sorted(uploads))],
            )
            self._append(db, audit.Event(actor, "run.start", project, detail={"run_id": run_id}))
        return self.run(run_id), True

    def run(self, run_id: str) -> Run:
        rows = self._query(
            "SELECT id, project, state, stage, work_done, work_total, groups, message, threshold "
            "FROM runs WHERE id=?",
            (run_id,),
        )
        if not rows:
            raise NotFound(f"no run {run_id!r}")
        return Run(*rows[0])

    def latest_run(self, project: str, *, state: str | None = None) -> Run | None:
        sql = "SELECT id FROM runs WHERE project=?"
        args: tuple[object, ...] = (project,)
        if state:
            sql += " AND state=?"
            args += (state,)
        rows = self._query(sql + " ORDER BY seq DESC LIMIT 1", args)
        return self.run(rows[0][0]) if rows else None

    def run_inputs(self, run_id: str) -> list[tuple[str, Upload]]:
        rows = self._query(
            "SELECT member, upload_id FROM run_inputs WHERE run_id=? ORDER BY position", (run_id,)
        )
        return [(m, self.upload(u)) for m, u in rows]

    def update_run(self, run_id: str, **fields: object) -> None:
        allowed = {"state", "stage", "work_done", "work_total", "groups", "message"}
        if not fields or set(fields) - allowed:
            raise ValueError(f"bad run fields {sorted(fields)}")
        sets = ", ".join(f"{k}=?" for k in fields)
        with self._tx() as db:
            db.execute(f"UPDATE runs SET {sets} WHERE id=?", (*fields.values(), run_id))

    def finish_run(self, run_id: str, members: list[str], links: Links, groups: int) -> None:
        """Store a run's links and mark it done, in one transaction."""
        names = np.asarray(members, dtype=object)
        rows = zip(
            itertools.repeat(run_id),
            names[links.dset].tolist(),
            links.row.tolist(),
            names[links.partner].tolist(),
            links.partner_row.tolist(),
            links.score.tolist(),
        )
        with self._tx() as db:
            found = db.execute("SELECT project FROM runs WHERE id=?", (run_id,)).fetchone()
            if found is None:  # its project expired, or its members erased, while it ran
                return
            # Results always come from the latest finished run: older links are garbage.
            db.execute(
                "DELETE FROM links WHERE run_id IN (SELECT id FROM runs WHERE project=?)",
                (found[0],),
            )
            db.executemany("INSERT INTO links VALUES (?,?,?,?,?,?)", rows)
            db.execute(
                "UPDATE runs SET state='done', stage='done', groups=? WHERE id=?",
                (groups, run_id),
            )
            self._append(
                db,
                audit.Event(
                    audit.MATCHER,
                    "run.done",
                    found[0],
                    detail={"run_id": run_id, "groups": groups, "links": len(links.row)},
                ),
            )
        self._collect_garbage()

    def fail_run(self, run_id: str, message: str) -> None:
        with self._tx() as db:
            found = db.execute("SELECT project FROM runs WHERE id=?", (run_id,)).fetchone()
            if found is not None:
                db.execute(
                    "UPDATE runs SET state='failed', message=? WHERE id=?", (message, run_id)
                )
                self._append(
                    db,
                    audit.Event(
                        audit.MATCHER,
                        "run.failed",
                        found[0],
                        detail={"run_id": run_id, "message": message},
                    ),
                )
        self._collect_garbage()

    def unfinished_runs(self) -> list[Run]:
        rows = self._query(
            "SELECT id FROM runs WHERE state IN ('queued','running') ORDER BY created"
        )
        return [self.run(r[0]) for r in rows]

    def links_for(self, run_id: str, member: str) -> list[tuple[int, str, int, float]]:
        return self._query(
            "SELECT row, partner, partner_row, score FROM links WHERE run_id=? AND member=? "
            "ORDER BY row, partner",
            (run_id, member),
        )

    # -- erasure and retention ------------------------------------------------------

    def erase_member(self, project: str, member: str) -> Erased:
        """Delete `member`'s uploads and every link that involves its rows, now.

        Refused while a run is queued or running (it reads the uploads); the
        audit log keeps the fact and the counts, never the data.
        """
        with self._tx() as db:
            self.project(project)
            self._require_member(db, project, member)
            if db.execute(
                "SELECT 1 FROM runs WHERE project=? AND state IN ('queued','running')", (project,)
            ).fetchone():
                raise FailedPrecondition(
                    "a run is in progress in this project; erase again when it has finished"
                )
            uploads = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM uploads WHERE project=? AND member=?", (project, member)
                )
            ]
            runs = "SELECT id FROM runs WHERE project=?"
            links = db.execute(
                f"DELETE FROM links WHERE run_id IN ({runs}) AND (member=? OR partner=?)",
                (project, member, member),
            ).rowcount
            db.execute(
                f"DELETE FROM run_inputs WHERE run_id IN ({runs}) AND member=?", (project, member)
            )
            db.execute("DELETE FROM uploads WHERE project=? AND member=?", (project, member))
            db.execute("DELETE FROM upload_keys WHERE project=? AND member=?", (project, member))
            db.executemany("DELETE FROM upload_layouts WHERE upload_id=?", [(u,) for u in uploads])
            self._append(
                db,
                audit.Event(
                    member,
                    "erase",
                    project,
                    member,
                    detail={"uploads": len(uploads), "links": links},
                ),
            )
        for upload_id in uploads:
            (self.clk_dir / f"{upload_id}.bin").unlink(missing_ok=True)
        self._collect_garbage()
        self._checkpoint()
        return Erased(len(uploads), links)

    def expired_projects(self) -> list[str]:
        rows = self._query(
            "SELECT name FROM projects WHERE erased IS NULL AND expires <= ? ORDER BY name",
            (self.clock(),),
        )
        return [r[0] for r in rows]

    def is_live(self, name: str) -> bool:
        """True for a project that exists and has not expired."""
        try:
            self.project(name)
        except NotFound:
            return False
        return True

    def expire_projects(self) -> list[str]:
        """Delete every expired project's encodings and results; returns their names.

        The project's name, members and token hashes stay (so a late caller is
        told it expired, and the name is not reused); its uploads, runs and
        links go, rows and files.
        """
        done = []
        for name in self.expired_projects():
            with self._tx() as db:
                uploads = [
                    r[0] for r in db.execute("SELECT id FROM uploads WHERE project=?", (name,))
                ]
                runs = "SELECT id FROM runs WHERE project=?"
                links = db.execute(f"DELETE FROM links WHERE run_id IN ({runs})", (name,)).rowcount
                db.execute(f"DELETE FROM run_inputs WHERE run_id IN ({runs})", (name,))
                run_count = db.execute("DELETE FROM runs WHERE project=?", (name,)).rowcount
                db.execute("DELETE FROM uploads WHERE project=?", (name,))
                db.execute("DELETE FROM upload_keys WHERE project=?", (name,))
                db.executemany(
                    "DELETE FROM upload_layouts WHERE upload_id=?", [(u,) for u in uploads]
                )
                db.execute("UPDATE projects SET erased=? WHERE name=?", (self.clock(), name))
                self._append(
                    db,
                    audit.Event(
                        audit.MATCHER,
                        "project.expire",
                        name,
                        detail={"uploads": len(uploads), "runs": run_count, "links": links},
                    ),
                )
            for upload_id in uploads:
                (self.clk_dir / f"{upload_id}.bin").unlink(missing_ok=True)
            done.append(name)
        if done:
            self._collect_garbage()
            self._checkpoint()
        return done

    def _checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it, so deleted pages leave the WAL."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- audit ------------------------------------------------------------------------

    def _append(self, db: sqlite3.Connection, event: audit.Event) -> audit.Entry:
        """Append to the chain inside the caller's transaction."""
        return self._append_all(db, [event])[-1]

    def _append_all(
        self, db: sqlite3.Connection, events: Sequence[audit.Event]
    ) -> list[audit.Entry]:
        """Append events in order to the chain, inside the caller's transaction."""
        last = db.execute("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        seq, prev = (last[0], last[1]) if last else (0, audit.GENESIS)
        entries = []
        for event in events:
            seq += 1
            entry = audit.seal(self._audit_key, seq, self.clock(), event, prev)
            entries.append(entry)
            prev = entry.hash
        db.executemany(
            "INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            [
                (
                    e.seq,
                    e.time,
                    e.actor,
                    e.action,
                    e.project,
                    e.member,
                    e.purpose,
                    _COLUMN_JSON.encode(e.disclosed),
                    _COLUMN_JSON.encode(e.detail),
                    e.prev_hash,
                    e.hash,
                )
                for e in entries
            ],
        )
        return entries

    def record(self, event: audit.Event) -> audit.Entry:
        """Append one event on its own (consultations and disclosures)."""
        with self._tx(changes_state=False) as db:
            return self._append(db, event)

    def record_many(self, events: Sequence[audit.Event]) -> None:
        """Append events in one transaction (real-time queries, written in batches)."""
        if not events:
            return
        with self._tx(changes_state=False) as db:
            self._append_all(db, events)

    def audit_entries(self, *, project: str = "", after: int = 0) -> list[audit.Entry]:
        """Entries in seq order, optionally of one project and after a seq."""
        sql = "SELECT * FROM audit WHERE seq > ?"
        args: tuple[object, ...] = (after,)
        if project:
            sql += " AND project=?"
            args += (project,)
        return [self._entry(r) for r in self._query(sql + " ORDER BY seq", args)]

    @staticmethod
    def _entry(row: tuple) -> audit.Entry:
        seq, t, actor, action, project, member, purpose, disclosed, detail, prev, h = row
        return audit.Entry(
            seq, t, actor, action, project, member, purpose,
            json.loads(disclosed), json.loads(detail), prev, h,
        )  # fmt: skip

    def verify_audit(self, anchor: tuple[int, str] | None = None) -> audit.Verification:
        return audit.verify(self._audit_key, self.audit_entries(), anchor)
