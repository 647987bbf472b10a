"""Reading a data dir's databases without writing beside them (`admin check`, `admin backup`,
a look-up server's reads, a store's layout): `left_as_found`, `connect_read_only`.

A database in WAL mode read even read-only gets a -wal and a -shm made beside it (SQLite
needs the shared-memory index; a read-only connection cannot delete them again at its
close), and a -shm already there is written (the index rebuilt, a reader's mark set). How a
database is read, then, turns on whether a process has it open:

- none has, and its -wal is absent or empty (a matcher stopped cleanly; or killed with
  nothing left unfolded): read as immutable (`?immutable=1`), which makes nothing, takes no
  lock and sees the file as it is, which is all there is;
- none has, and its -wal holds changes (the matcher was killed, or the machine went down,
  before it folded them in; or a copy of such a data dir): read from a private copy of the
  database and its -wal, in a temporary folder, so the changes are read and nothing is made
  or written beside the original (`wal_left`: the check says so);
- one has (a serving matcher, a running role): read as any reader reads it, through its
  WAL (immutable would miss what the WAL holds, and could read a page as a checkpoint
  writes it); its -wal and -shm are there already, so nothing new is made.

"A process has it open": every SQLite connection to a WAL database holds a read lock on
one byte of its -shm (`_DMS_BYTE`) while it is open, which `fcntl`'s F_GETLK sees from
another process; one this process opened (storage/sqlite.py `Database`) is counted here,
as F_GETLK does not report a process's own locks. Should a database read as found at rest
be opened or changed meanwhile (a matcher started during the read), what was read may be
torn: `read()` is done again, reading it as one in use. One whose -wal is gone before it
is copied (a matcher started and stopped meanwhile: its close folded the -wal into the
database and deleted it) is looked at again as then found.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import struct
import tempfile
import threading
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from pathlib import Path
from types import MappingProxyType
from typing import TypeVar, cast

T = TypeVar("T")
# SQLite's unix VFS: the -shm byte each connection holds a shared lock on while it is open
# (its "dead man switch": 120 + the 8 WAL locks).
_DMS_BYTE = 128
_FLOCK = "hhqqi4x"  # struct flock on Linux: type, whence, start, len, pid
# The databases `left_as_found` read quietly, by absolute path: the URI each is read by
# (in the thread and context that called it only).
_READ_AS: ContextVar[Mapping[str, str]] = ContextVar(
    "blindmatch_read_as", default=MappingProxyType({})
)
# Those read from a copy of their database and -wal (the changes a killed matcher left).
_WAL_LEFT: ContextVar[frozenset[str]] = ContextVar("blindmatch_wal_left", default=frozenset())
# How often `left_as_found` looks at a database again where the -wal it was to copy was gone
# (folded in by a process that opened and closed it), before reading it as one in use.
QUIET_TRIES = 3
_CHANGED, _COPY_GONE = object(), object()  # `_quietly`: read again as in use; look again
_open_here: Counter[str] = Counter()
_open_lock = threading.Lock()

State = tuple[tuple[int, int, int] | None, ...]


def opened_here(path: Path, change: int) -> None:
    """Count a connection this process opens (+1) or closes (-1) on `path`."""
    key = str(Path(path).absolute())
    with _open_lock:
        _open_here[key] += change
        if _open_here[key] <= 0:
            del _open_here[key]


def _uri(path: Path, *, immutable: bool) -> str:
    return f"file:{urllib.parse.quote(str(path))}?mode=ro{'&immutable=1' if immutable else ''}"


def connect_read_only(path: Path) -> sqlite3.Connection:
    """A connection that never creates or changes the file (WAL readers still see commits).
    Within `left_as_found`, a database no process has open is read quietly instead."""
    uri = _READ_AS.get().get(str(Path(path).absolute())) or _uri(path, immutable=False)
    return sqlite3.connect(uri, uri=True, isolation_level=None)


def read_as_immutable(path: Path) -> bool:
    """Whether `connect_read_only` reads `path` here as found, no process having it open
    (`left_as_found`: as immutable, or from a copy): no writer to be held off either."""
    return str(Path(path).absolute()) in _READ_AS.get()


def wal_left(path: Path) -> bool:
    """Whether `path` is read here from a copy: no process has it open and its -wal holds
    changes not yet folded into it (a matcher killed, or the machine down, before it did)."""
    return str(Path(path).absolute()) in _WAL_LEFT.get()


def wal_notes(paths: Sequence[Path]) -> list[str]:
    """What a check says of each of `paths` read from a copy (`wal_left`), as a repair the
    next start makes by itself: not silence, and not a problem."""
    return [
        f"{path}-wal: left by a process that did not close {path.name} (killed, or the "
        "machine went down); the changes it holds were read from a copy (nothing was "
        "written beside it); the next start folds them into the database"
        for path in paths
        if wal_left(path)
    ]


def _identity(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _held(path: Path) -> bool:
    """Whether a process has the database `path` open (this one, or another holding its
    -shm's `_DMS_BYTE`)."""
    with _open_lock:
        if _open_here[str(Path(path).absolute())]:
            return True
    try:
        fd = os.open(f"{path}-shm", os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        asked = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, _DMS_BYTE, 1, 0)
        found = struct.unpack(_FLOCK, fcntl.fcntl(fd, fcntl.F_GETLK, asked))
    finally:
        os.close(fd)
    return found[0] != fcntl.F_UNLCK


def _unopened(path: Path) -> State | None:
    """A database no process has open, as its file's, -wal's and -shm's identity, size and
    last change; None for one a process has open, one a rollback journal is left to, or
    none there."""
    if os.path.exists(f"{path}-journal") or not path.is_file() or _held(path):
        return None
    return tuple(_identity(f"{path}{end}") for end in ("", "-wal", "-shm"))


@contextlib.contextmanager
def _copied(path: Path) -> Iterator[Path]:
    """The database `path` and its -wal, copied into a private temporary folder."""
    with tempfile.TemporaryDirectory(prefix="blindmatch-read-") as folder:
        copy = Path(folder) / path.name
        shutil.copyfile(path, copy)
        shutil.copyfile(f"{path}-wal", f"{copy}-wal")
        yield copy


def left_as_found(paths: Sequence[Path], read: Callable[[], T]) -> T:
    """`read()`, whose `connect_read_only` connections leave the folder of the databases
    `paths` as they found it (the module's docstring: as immutable, from a copy, or through
    the WAL of a process that has it open). A path an enclosing call reads already is read
    as it decided. Where one was opened, changed or closed during the read, what was read
    may be torn: it is read again as one in use. Where a -wal to be copied was gone (folded
    in by a process that opened and closed the database meanwhile), the database is looked
    at again, QUIET_TRIES times at most (then read as one in use)."""
    for _ in range(QUIET_TRIES):
        result = _quietly(paths, read)
        if result is not _COPY_GONE:
            break
    if result is _CHANGED or result is _COPY_GONE:
        return read()
    return cast(T, result)


def _quietly(paths: Sequence[Path], read: Callable[[], T]) -> T | object:
    """`read()` as `left_as_found` decides for each of `paths` as found now; `_CHANGED`
    where one was opened, changed or closed before it ended; `_COPY_GONE` where a file to
    be copied was gone (a process opened the database and closed it again: its close
    folded the -wal into it and deleted it), before anything was read."""
    outer = _READ_AS.get()
    found: dict[str, tuple[Path, State]] = {}
    uris: dict[str, str] = {}
    left: set[str] = set()
    with contextlib.ExitStack() as copies:
        for path in paths:
            key = str(path.absolute())
            if key in outer or (state := _unopened(path)) is None:
                continue
            found[key] = (path, state)
            if state[1] is not None and state[1][1] > 0:  # (a -wal holding changes)
                try:
                    copy = copies.enter_context(_copied(path))
                except FileNotFoundError:
                    if _unopened(path) == state:
                        raise
                    return _COPY_GONE
                uris[key] = _uri(copy, immutable=False)
                left.add(key)
            else:
                uris[key] = _uri(path, immutable=True)
        token = _READ_AS.set({**outer, **uris})
        wal_token = _WAL_LEFT.set(_WAL_LEFT.get() | left)
        try:
            result: T = read()
        except Exception:
            if all(_unopened(p) == state for p, state in found.values()):
                raise
        else:
            if all(_unopened(p) == state for p, state in found.values()):
                return result
        finally:
            _WAL_LEFT.reset(wal_token)
            _READ_AS.reset(token)
    return _CHANGED
