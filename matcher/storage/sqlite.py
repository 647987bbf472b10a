"""One SQLite database behind one connection: the transaction discipline both databases keep.

Every statement runs under one lock (SQLite has a single writer anyway, and WAL mode keeps
that cheap). A write transaction commits whole or rolls back whole; a full disk (ENOSPC
from a write, SQLITE_FULL from the database) becomes `ResourceExhausted` and leaves the
database as it was. What every request reads (projects, token owners, query limits) can be
cached here, until the next write transaction clears it. A read that must see several
tables at one moment (a member's results) takes a `snapshot`: its own read transaction,
which no commit can change under it and which holds up no writer.

A database is checked when it is opened (`PRAGMA quick_check`): a damaged one refuses to
open (`StartupRefused`, with the recovery steps), and damage found later fails the call
with `DataLoss` rather than an unexplained error. `GroupCommit` writes what many threads
append at once in one transaction, one fsync (the audit entries of real-time queries).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from blindmatch.matcher.errors import DataLoss, ResourceExhausted, StartupRefused
from blindmatch.matcher.storage.datadir import create_private_file
from blindmatch.matcher.storage.quietread import connect_read_only, left_as_found, opened_here

DISK_FULL = "the matcher's disk is full; nothing was stored (what was stored before is intact)"
DAMAGED = (
    "the matcher's database is damaged ({what}); nothing was changed; the operator must "
    "restore the data dir from a backup (docs/operations.md, Recovery)"
)
# SQLite's primary result codes for a damaged file.
_CORRUPT_CODES = (11, 26)  # SQLITE_CORRUPT, SQLITE_NOTADB
CHECKPOINT_TRIES = 3  # a checkpoint readers hold up is tried this often (`Database.checkpoint`)

T = TypeVar("T")
log = logging.getLogger("blindmatch.matcher")
_MISSING = object()


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk (or the database's space) ran out."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return False


def full_disk(exc: BaseException) -> ResourceExhausted:
    """The refusal of a write the disk had no room for (`disk_full(exc)`), logged for the
    operator: the caller is told only that the matcher's disk is full."""
    log.error("the data dir's disk is full (%s): a write was refused and nothing of it was "
              "stored; free space on its filesystem", exc)  # fmt: skip
    return ResourceExhausted(DISK_FULL)


def damaged(exc: BaseException) -> bool:
    """Whether `exc` says a database file is damaged (a corrupt page, not a database)."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _CORRUPT_CODES  # extended codes too


@contextmanager
def _damage_is_data_loss() -> Iterator[None]:
    try:
        yield
    except sqlite3.DatabaseError as exc:
        if damaged(exc):
            raise DataLoss(DAMAGED.format(what=exc)) from exc
        raise


def refuse_damaged(path: Path, problems: Sequence[str]) -> StartupRefused:
    """The start-up refusal for a damaged database, with the recovery steps."""
    shown = "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if problems[3:] else "")
    return StartupRefused(
        f"{path} is damaged ({shown}), so the matcher will not serve it: answers from a "
        "damaged database could be wrong. Recover: stop here, keep the damaged data dir for "
        "inspection, restore the newest verified backup (`blindmatch admin backup` made it; "
        "docs/operations.md, Recovery), check it with `blindmatch admin check`, start again; "
        "members re-upload what came after the backup."
    )


def layout_of(path: Path, *, opening: bool = False) -> int:
    """The layout a store was written in (its `PRAGMA user_version`: role_store.py and
    project_store.py `LAYOUT`; 0, a store from before the marker, reads as layout 1), read
    without changing the folder (quietread.py `left_as_found`: a store no process has open
    as immutable, or from a copy where its -wal holds changes; one a process has open
    through its WAL). `opening`: read by the start about to open it (its data dir's lock
    held), which makes its -wal and -shm anyway: not copied, only read as immutable where
    no -wal or -shm is beside it."""

    def read() -> int:
        with contextlib.closing(connect_read_only(path)) as conn:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])

    if opening and any(Path(f"{path}{end}").exists() for end in ("-wal", "-shm")):
        found = read()
    else:
        found = left_as_found([path], read)
    return found or 1


def newer_layout(path: Path, known: int, *, opening: bool = False) -> int | None:
    """The layout of the store at `path` where it is newer than `known` (a newer blindmatch's,
    which this one cannot read), else None; read as `layout_of` reads it, changing nothing.
    Not a database: None (its opening refuses it, naming the damage)."""
    try:
        found = layout_of(path, opening=opening)
    except sqlite3.Error:
        return None
    return found if found > known else None


def newer_store(path: Path, found: int, known: int) -> str:
    """What is said of a store of a layout newer than this blindmatch's `known`."""
    return (
        f"{path}: store layout {found}, written by a newer blindmatch; this one knows "
        f"layout {known} and older"
    )


def roll_back(data_dir: Path, role: str = "") -> str:
    """How an operator who rolled blindmatch back (docs/operations.md "Upgrade") gets a data
    dir this one serves: the backup taken before the upgrade, restored by this blindmatch
    with what was done since replayed from `data_dir`'s audit log (`role`: a two-server
    role's, `s1`, `s2`, `combiner`)."""
    flag = f" --role {role}" if role else ""
    return (
        "run the blindmatch that wrote it (or a newer one). To roll back to this one, "
        "restore the backup taken before the upgrade with this one (it makes again what "
        f"{data_dir}'s audit log records since): `blindmatch admin restore{flag} --backup "
        f"BACKUP --data-dir NEW_DIR --previous {data_dir}`, then start on NEW_DIR "
        "(docs/operations.md, Upgrade)"
    )


def refuse_newer(path: Path, known: int, remedy: str) -> None:
    """`StartupRefused` for a store of a layout newer than `known`, before anything in its
    data dir is opened to write; `remedy`: what the operator can do."""
    found = newer_layout(path, known, opening=True)
    if found is not None:
        raise StartupRefused(
            f"{newer_store(path, found, known)}. The matcher will not start on it and has "
            f"changed nothing: {remedy}"
        )


def stamp_layout(conn: sqlite3.Connection, layout: int) -> bool:
    """Record `layout` in a store's header where it holds an older one (0: a store written
    before the marker), in the caller's write transaction; whether it did."""
    if int(conn.execute("PRAGMA user_version").fetchone()[0]) < layout:
        conn.execute(f"PRAGMA user_version = {layout}")
        return True
    return False


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


class Database:
    """One database file: `schema` applied at opening, `pragmas` set on the connection."""

    def __init__(self, path: Path, schema: str, *, pragmas: Sequence[str]) -> None:
        self.path = path
        self.lock = threading.RLock()
        self._cache: dict[Hashable, object] = {}
        create_private_file(path)  # SQLite gives its -wal and -shm the same mode
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._open = True
        opened_here(path, +1)  # (quietread.py: a database this process has open)
        try:
            for pragma in pragmas:
                self._conn.execute(f"PRAGMA {pragma}")
            found = [r[0] for r in self._conn.execute("PRAGMA quick_check")]
            if found != ["ok"]:
                raise refuse_damaged(path, found)
            before = _tables(self._conn)
            self._conn.executescript(schema)
            # What opening it added to a store an older blindmatch wrote (none to a new one):
            # said in the log with what the caller's migration adds (`say_upgrade`).
            self.made = not before
            self.upgrades = [f"table {t}" for t in sorted(_tables(self._conn) - before) if before]
        except sqlite3.DatabaseError as exc:
            self.close()
            if damaged(exc):
                raise refuse_damaged(path, [str(exc)]) from exc
            raise
        except StartupRefused:
            self.close()
            raise

    def say_upgrade(self, layout: int, *added: str) -> None:
        """Log what this start added to a store an older blindmatch wrote: the tables its
        opening made, and `added` (the caller's migration: columns, the layout marker), in one
        line (docs/operations.md "Upgrade"); nothing for a new store or one already current."""
        done = [*self.upgrades, *added]
        if done and not self.made:
            log.info(
                "%s: written by an older blindmatch, brought up to date at this start "
                "(layout %d): added %s",
                self.path,
                layout,
                ", ".join(done),
            )
        self.upgrades = []

    def close(self) -> None:
        with self.lock:
            self._conn.close()
            if self._open:
                self._open = False
                opened_here(self.path, -1)

    @contextmanager
    def tx(self, *, clears_cache: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. Unless it changes nothing a cached read could have seen
        (`clears_cache=False`: an append to a log), it forgets what `cached` remembered."""
        with self.lock, _damage_is_data_loss():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if disk_full(exc):
                    raise full_disk(exc) from exc
                raise
            finally:
                if clears_cache:
                    self._cache.clear()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, for a read that streams its rows."""
        with self.lock, _damage_is_data_loss():
            yield self._conn

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction on a connection of its own: every statement in it sees the
        database as it was at the first, whatever commits meanwhile, and no writer waits."""
        conn = connect_read_only(self.path)
        try:
            with _damage_is_data_loss():
                conn.execute("BEGIN")
                yield conn
        finally:
            conn.close()  # ends the read transaction

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple]:
        with self.lock, _damage_is_data_loss():
            return self._conn.execute(sql, args).fetchall()

    def cached(
        self,
        key: Hashable,
        compute: Callable[[sqlite3.Connection], T],
        *,
        keep: Callable[[T], bool] = lambda _: True,
    ) -> T:
        """`compute`'s answer, remembered until the next write transaction (when `keep`
        says so: an unknown name or token is not remembered, so it cannot fill the cache)."""
        hit = self._cache.get(key, _MISSING)
        if hit is not _MISSING:
            return cast(T, hit)
        with self.lock, _damage_is_data_loss():
            value = compute(self._conn)
            if keep(value):
                self._cache[key] = value
            return value

    def cached_rows(
        self, key: Hashable, sql: str, args: tuple[object, ...], *, keep_empty: bool = False
    ) -> list[tuple]:
        """`query`, remembered (an empty answer only if `keep_empty`)."""
        return self.cached(
            key,
            lambda conn: conn.execute(sql, args).fetchall(),
            keep=lambda rows: bool(rows) or keep_empty,
        )

    def checkpoint(self) -> None:
        """Fold the WAL into the database and truncate it, so deleted pages leave the WAL.

        A reader in the middle of a snapshot can hold the checkpoint up (SQLite reports it
        busy after its busy timeout); it is tried again, a bounded number of times, and a
        checkpoint that still cannot finish is logged (the next one folds the same pages)."""
        with self.lock:
            for attempt in range(CHECKPOINT_TRIES):
                busy = self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
                if not busy:
                    return
                time.sleep(0.05 * (attempt + 1))
        log.warning("%s: the write-ahead log could not be truncated yet (readers busy)", self.path)


class _Ticket:
    """One submitter's place in a group commit: its gate is held until its items are
    written (`done`), or until it is to write the next batch (`batch`)."""

    __slots__ = ("batch", "done", "error", "gate")

    def __init__(self) -> None:
        self.gate = threading.Lock()
        self.gate.acquire()
        self.done = False
        self.error: BaseException | None = None
        self.batch: list[tuple[Sequence[Any], _Ticket]] | None = None


class GroupCommit(Generic[T]):
    """Items appended from many threads, written by `write` in as few calls as they allow.

    `submit` returns once its items are written (durable, when `write` commits with a full
    sync), or raises what the write raised. Whoever submits while no write is under way
    writes its items at once: a lone query waits for no window. What is submitted while a
    write runs waits; when it ends, the writer hands everything that waited to the first
    of those submitters, who writes it in one call (one transaction and one fsync for all
    the queries that arrived together), and the writer wakes only its own batch's
    submitters, each once (no herd of threads woken to learn whether their write was the
    one that finished). `writes` and `items` count both.
    """

    def __init__(self, write: Callable[[list[T]], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._waiting: list[tuple[Sequence[T], _Ticket]] = []
        self._writing = False
        self.writes = 0
        self.items = 0

    def submit(self, items: Sequence[T]) -> None:
        ticket = _Ticket()
        with self._lock:
            if self._writing:
                self._waiting.append((items, ticket))
                batch = None
            else:
                self._writing = True
                batch = [(items, ticket)]
        if batch is None:
            ticket.gate.acquire()  # released once written, or to write the next batch
            if not ticket.done:
                assert ticket.batch is not None
                batch = ticket.batch
        if batch is not None:
            self._write_batch(batch)
        if ticket.error is not None:
            raise _again(ticket.error)

    def _write_batch(self, batch: list[tuple[Sequence[T], _Ticket]]) -> None:
        """Write `batch` (its first ticket is the caller's), hand what waited meanwhile
        to its first submitter, then wake the rest of `batch`."""
        error: BaseException | None = None
        try:
            self._write([item for group, _ in batch for item in group])
        except BaseException as exc:  # every submitter of the batch gets it
            error = exc
        finally:
            with self._lock:
                self.writes += 1
                self.items += sum(len(group) for group, _ in batch)
                waiting, self._waiting = self._waiting, []
                self._writing = bool(waiting)
            for _, ticket in batch:
                ticket.done, ticket.error = True, error
            if waiting:
                first = waiting[0][1]
                first.batch = waiting
                first.gate.release()
            for _, ticket in batch[1:]:
                ticket.gate.release()


def _again(exc: BaseException) -> BaseException:
    """A fresh copy of `exc` for one more thread to raise (a raised exception's traceback
    is its own), chained to it."""
    try:
        copy = type(exc)(*exc.args)
    except Exception:
        return exc
    copy.__cause__ = exc
    return copy
