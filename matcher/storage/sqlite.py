"""One SQLite database behind one connection: the transaction discipline both databases keep.

Every statement runs under one lock (SQLite has a single writer anyway, and WAL mode keeps
that cheap). A write transaction commits whole or rolls back whole; a full disk (ENOSPC
from a write, SQLITE_FULL from the database) becomes `ResourceExhausted` and leaves the
database as it was. What every request reads (projects, token owners, query limits) can be
cached here, until the next write transaction clears it.
"""

from __future__ import annotations

import errno
import sqlite3
import threading
from collections.abc import Callable, Hashable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar, cast

from blindmatch.matcher.errors import ResourceExhausted

DISK_FULL = "the matcher's disk is full; nothing was stored (earlier uploads are intact)"

T = TypeVar("T")
_MISSING = object()


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk (or the database's space) ran out."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return False


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never creates or changes the file (WAL readers still see commits)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)


class Database:
    """One database file: `schema` applied at opening, `pragmas` set on the connection."""

    def __init__(self, path: Path, schema: str, *, pragmas: Sequence[str]) -> None:
        self.path = path
        self.lock = threading.RLock()
        self._cache: dict[Hashable, object] = {}
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        for pragma in pragmas:
            self._conn.execute(f"PRAGMA {pragma}")
        self._conn.executescript(schema)

    def close(self) -> None:
        with self.lock:
            self._conn.close()

    @contextmanager
    def tx(self, *, clears_cache: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction. Unless it changes nothing a cached read could have seen
        (`clears_cache=False`: an append to a log), it forgets what `cached` remembered."""
        with self.lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                if disk_full(exc):
                    raise ResourceExhausted(DISK_FULL) from exc
                raise
            finally:
                if clears_cache:
                    self._cache.clear()

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, for a read that streams its rows."""
        with self.lock:
            yield self._conn

    def query(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple]:
        with self.lock:
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
        with self.lock:
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
        """Fold the WAL into the database and truncate it, so deleted pages leave the WAL."""
        with self.lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
