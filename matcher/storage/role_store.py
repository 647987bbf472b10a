"""What a two-server role holds, kept on disk under its `--data-dir` (docs/operations.md "Two
servers and a combiner"), so that a restarted role holds the same uploads and the same pair
budget (core/pairbudget.py) as before it stopped:

    DIR/twoserver-ROLE-held.sqlite   one row an upload (its name, records, the arrays'
                                     names, dtypes and shapes, their SHA-256: the audit's
                                     `twoserver.upload` digest) and the pair budget: each
                                     batch's pair keys evaluated, by the two uploads' rows;
                                     S1's extra and reach pairs by upload (its per-upload
                                     cap and reach quota, core/rowledger.py);
                                     and the queries counted against the role's query
                                     limit (name, member, records, when: no record)
    DIR/twoserver-ROLE-held/F.bin    an upload's arrays, one after the other (F random),
                                     held mapped (`mapped`), not read into memory; S1's
                                     band keys and tokens in files of their own beside
                                     it, `F.NAME.bin` (storage/role_files.py)

An upload's arrays go to a file of their own (an S1 upload of 50,000 realistic records is
several GB, beyond a SQLite blob's 1 GB), written to `F.tmp`, fsynced, renamed to `F.bin`
and the folder fsynced before its row is committed: a crash leaves the whole upload or none
(a file with no row is deleted at the next start). S1's spool writes the band keys and
tokens as the parts come into `F.NAME.tmp` (rpc/twoserver_spool.py, hashed as written),
fsynced and renamed to `F.NAME.bin` with `F.bin` (`write`'s `apart`): written once. The
row that replaces a member's earlier upload deletes that upload's row and its pairs in the
same transaction (its files after).
The pair keys of a batch, and S1's new ledger entries, are committed (synchronous=FULL)
before the batch is evaluated.
Forgetting an upload commits its row's deletion (its pages zeroed, secure_delete, and the
-wal checkpointed), then unlinks its file and fsyncs the folder, before the role replies.
An upload restored from a backup is *sealed* (table `sealed`, written into the backup's copy
by storage/role_backup.py): every pair of two sealed uploads counts as evaluated, since the
pairs evaluated after the backup was taken are not in it. Files 0600, the folder 0700; a
store others can read or write refuses the start, and so does one that cannot be read whole
(a damaged database, a missing or short file, arrays whose digest differs), naming the file:
nothing is half-loaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import secrets
import sqlite3
import stat
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.storage.datadir import FILE_MODE, fsync_path, make_private_dir
from blindmatch.matcher.storage.role_files import apart_file, apart_of, damage, digest_of
from blindmatch.matcher.storage.sqlite import Database, newer_layout, roll_back, stamp_layout

PRAGMAS = ("journal_mode=WAL", "synchronous=FULL", "secure_delete=ON")
SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    file TEXT NOT NULL,
    records INTEGER NOT NULL,
    meta TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS spent (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    upload_a INTEGER NOT NULL REFERENCES uploads(id),
    upload_b INTEGER NOT NULL REFERENCES uploads(id),
    reach INTEGER NOT NULL DEFAULT 0,  -- 1: evaluated at the run's reach cut-off
    keys BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS spent_a ON spent(upload_a);
CREATE INDEX IF NOT EXISTS spent_b ON spent(upload_b);
CREATE TABLE IF NOT EXISTS sealed (  -- restored from a backup (storage/role_backup.py)
    upload INTEGER PRIMARY KEY REFERENCES uploads(id),
    at REAL NOT NULL  -- when the backup was taken
);
CREATE TABLE IF NOT EXISTS ledger (  -- S1's per-upload cap on extra and reach pairs
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- (core/rowledger.py): a batch's new entries
    upload_a INTEGER NOT NULL REFERENCES uploads(id),
    upload_b INTEGER NOT NULL REFERENCES uploads(id),
    kind TEXT NOT NULL,  -- extra or reach
    run TEXT NOT NULL,
    rows_a BLOB NOT NULL,  -- <u4 each
    rows_b BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_a ON ledger(upload_a);
CREATE INDEX IF NOT EXISTS ledger_b ON ledger(upload_b);
CREATE TABLE IF NOT EXISTS queries (
    name TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    member TEXT NOT NULL,
    records INTEGER NOT NULL,
    at REAL NOT NULL
);
"""
# The held store's layout, kept in its header (`PRAGMA user_version`): written when the store
# is made, and at the first start on one written before the marker (which reads 0: layout 1);
# read before it is opened. A later blindmatch that changes the layout raises it; this one
# refuses a store of a layout it does not know, changing nothing.
LAYOUT = 1
DTYPES = ("|u1", "|b1", "<u4", "<i8", "<u8")  # what an upload's arrays are
READ_BYTES = 1 << 24  # a piece of an array written
T = TypeVar("T")
Arrays = list[tuple[str, npt.NDArray[np.generic]]]
Keys = npt.NDArray[np.uint64]
Rows = npt.NDArray[np.uint32]


def _pieces(array: npt.NDArray[np.generic]) -> Iterable[memoryview]:
    """An array's bytes, READ_BYTES at a time; one mapped from a file (an upload's spooled
    tokens, rpc/twoserver_uploads.py `Spool`) has each piece's pages dropped from the
    process's memory once used (they stay in the file), so writing it keeps S1's memory flat."""
    data = np.ascontiguousarray(array).data.cast("B")
    base: Any = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    base = base.obj if isinstance(base, memoryview) else base
    mapped = base if isinstance(base, mmap.mmap) and array.ctypes.data == _address(base) else None
    for lo in range(0, len(data), READ_BYTES):
        yield data[lo : lo + READ_BYTES]
        if mapped is not None:
            mapped.madvise(mmap.MADV_DONTNEED, lo, min(READ_BYTES, len(data) - lo))


def _address(mapped: mmap.mmap) -> int:
    """Where a map starts in memory."""
    return np.frombuffer(mapped, np.uint8, 1).ctypes.data if len(mapped) else -1


REFUSED = (
    "the role will not start on part of what it held. Recover: restore the data dir from a "
    "backup, or move the role's held store aside (twoserver-ROLE-held.sqlite and the folder "
    "twoserver-ROLE-held/) and have every member upload again"
)


def _refuse(path: Path, what: str) -> StartupRefused:
    return StartupRefused(f"{path}: {what}; {REFUSED}")


def refuse_newer(path: Path, folder: Path) -> None:
    """`StartupRefused` for a held store of a layout this blindmatch does not know (a
    newer one's), before anything opens it to write."""
    found = newer_layout(path, LAYOUT, opening=True)  # (not a database: the opening refuses it)
    if found is not None:
        raise StartupRefused(
            f"{newer_held(path, found)}. The role will not start on it and has changed "
            f"nothing: {roll_back(path.parent, _role_of(path))}"
        )


def _role_of(held: Path) -> str:
    """The role whose held store is `held` (DIR/twoserver-ROLE-held.sqlite)."""
    return held.name.removeprefix("twoserver-").removesuffix("-held.sqlite")


def newer_held(path: Path, found: int) -> str:
    """What is said of a held store of layout `found`, newer than this blindmatch's."""
    return (
        f"{path}: held store layout {found}, written by a newer blindmatch; this one knows "
        f"layout {LAYOUT} and older"
    )


@dataclass
class Restored(Generic[T]):
    """What a store held at start: the uploads (name -> what `build` made of them), the
    pair keys spent (by the two uploads' names, the lower first, and whether at the reach
    cut-off), the uploads restored from a backup (`sealed`: their pairs with each other
    count as evaluated) and the files of unfinished uploads deleted."""

    held: dict[str, T] = field(default_factory=dict)
    spent: dict[tuple[str, str, bool], Keys] = field(default_factory=dict)
    sealed: set[str] = field(default_factory=set)
    # S1's ledger entries (names in order, kind, rows, rows, run), in the order noted
    ledger: list[tuple[str, str, str, Rows, Rows, str]] = field(default_factory=list)
    backup_taken: float | None = None  # when the backup the sealed uploads came from was
    discarded: int = 0


class RoleStore:
    """One role's uploads and pair budget (`put`, `drop`, `spend`), read back by `load`."""

    def __init__(self, data_dir: Path, role: str) -> None:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = data_dir / f"twoserver-{role}-held.sqlite"
        self.folder = data_dir / f"twoserver-{role}-held"
        made = not self.path.exists()
        if not made:
            refuse_newer(self.path, self.folder)
        try:
            make_private_dir(self.folder)
            open_to_others = [f"{p} (mode {stat.S_IMODE(p.stat().st_mode):04o})"
                              for p in (self.folder, self.path, *self.folder.iterdir())
                              if p.exists() and p.stat().st_mode & 0o077]  # fmt: skip
            if open_to_others:
                raise StartupRefused(
                    f"{', '.join(open_to_others[:3])}: open to other users, and it holds the "
                    "members' shares; the role will not start. Make it its owner's only, then "
                    f"start again:\n  chmod -R go-rwx {self.folder} {self.path}"
                )
            self.db = Database(self.path, SCHEMA, pragmas=PRAGMAS)
            # A new store, and one from before the marker (0): stamped, so that an older
            # blindmatch's start can tell it (the latter said in the log, as the matcher's).
            with self.db.tx() as conn:
                stamped = stamp_layout(conn, LAYOUT)
            self.db.say_upgrade(LAYOUT, *(["the layout marker"] if stamped else []))
        except StartupRefused as exc:
            if exc.__cause__ is None:
                raise
            raise _refuse(self.path, f"damaged ({exc.__cause__})") from None
        except (sqlite3.Error, OSError) as exc:
            raise _refuse(self.path, f"cannot be opened ({exc})") from None

    def close(self) -> None:
        self.db.close()

    def new_file(self) -> str:
        """A fresh name for an upload's files (`write`'s `file`; S1's spool's, beforehand)."""
        return secrets.token_hex(16)

    def write(
        self, arrays: Arrays, file: str | None = None, apart: dict[str, str] | None = None
    ) -> tuple[str, str]:
        """Write an upload's arrays to a file of their own, durable: its name (for `put`)
        and the arrays' SHA-256. `apart`: the arrays already written, each to `F.NAME.tmp`
        in the folder (`file` F: rpc/twoserver_spool.py), by name, with their SHA-256: not
        written again, but fsynced and renamed to `F.NAME.bin` with `F.bin`, the upload's
        SHA-256 then `digest_of` theirs and `F.bin`'s (storage/role_files.py)."""
        name, apart = file or self.new_file(), apart or {}
        tmp, final = self.folder / f"{name}.tmp", self.folder / f"{name}.bin"
        moved = [(self.folder / f"{name}.{a}.tmp", self.folder / apart_file(name, a))
                 for a in apart]  # fmt: skip
        digest = hashlib.sha256()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as out, ThreadPoolExecutor(1) as hasher:
                for field_name, array in arrays:
                    if field_name in apart:
                        continue
                    for data in _pieces(array):  # each piece hashed while it is written
                        hashed = hasher.submit(digest.update, data)
                        out.write(data)
                        hashed.result()
                out.flush()
                os.fsync(out.fileno())
            for spooled, _ in moved:
                fsync_path(spooled)
            for spooled, kept in moved:
                os.rename(spooled, kept)
            os.rename(tmp, final)
            fsync_path(self.folder)
        except BaseException:
            self.discard(name, list(apart))
            raise
        if apart:
            return name, digest_of(digest.hexdigest(), apart.items())
        return name, digest.hexdigest()

    def discard(self, file: str, apart: Iterable[str] = ()) -> None:
        """Delete an upload's files no row came to name (an upload refused after `write`,
        or while its spool wrote the arrays `apart`)."""
        for suffix in ("bin", "tmp"):
            (self.folder / f"{file}.{suffix}").unlink(missing_ok=True)
            for a in apart:
                (self.folder / f"{file}.{a}.{suffix}").unlink(missing_ok=True)

    def put(
        self, name: str, file: str, records: int, meta: dict[str, object], arrays: Arrays,
        digest: str, replaces: Iterable[str] = (), apart: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        """Hold `name`'s upload, written by `write` to `file` (`apart`: as `write` had it),
        in place of its earlier one and those named in `replaces` (their pairs spent go with
        them)."""
        meta = {**meta, "sha256": digest,
                "arrays": [[n, a.dtype.str, list(a.shape)] for n, a in arrays]}  # fmt: skip
        if apart:
            meta["apart"] = [[n, h] for n, h in apart.items()]
        with self.db.tx() as conn:
            old = self._delete(conn, [name, *replaces])
            conn.execute("INSERT INTO uploads (name, file, records, meta) VALUES (?, ?, ?, ?)",
                         (name, file, records, json.dumps(meta)))  # fmt: skip
        self._unlink(old)

    def drop(self, names: Iterable[str]) -> None:
        """Forget uploads (and their pairs spent), durably, files and all."""
        names = list(names)
        if not names:
            return
        with self.db.tx() as conn:
            old = self._delete(conn, names)
        self._unlink(old)
        self.db.checkpoint()  # the deleted rows' pages out of the -wal too (secure_delete)

    def spend(self, member_a: str, member_b: str, keys: Keys, reach: bool = False) -> None:
        """The pair keys of a batch of `member_a`'s and `member_b`'s uploads (`reach`: at the
        run's reach cut-off), durable."""
        with self.db.tx(clears_cache=False) as conn:
            conn.execute(
                "INSERT INTO spent (upload_a, upload_b, reach, keys) SELECT a.id, b.id, ?, ? "
                "FROM uploads a, uploads b WHERE a.name = ? AND b.name = ?",
                (int(reach), np.ascontiguousarray(keys, "<u8").tobytes(), member_a, member_b),
            )

    def note_rows(self, member_a: str, member_b: str, kind: str, rows_a: Rows, rows_b: Rows,
                  run: str) -> None:  # fmt: skip
        """S1's new ledger entries of a batch (core/rowledger.py `RowLedger`), durable."""
        with self.db.tx(clears_cache=False) as conn:
            conn.execute(
                "INSERT INTO ledger (upload_a, upload_b, kind, run, rows_a, rows_b) SELECT a.id, "
                "b.id, ?, ?, ?, ? FROM uploads a, uploads b WHERE a.name = ? AND b.name = ?",
                (kind, run, np.ascontiguousarray(rows_a, "<u4").tobytes(),
                 np.ascontiguousarray(rows_b, "<u4").tobytes(), member_a, member_b),
            )  # fmt: skip

    def count_query(self, name: str, project: str, member: str, records: int, at: float) -> None:
        """A query the role counted against its query limit (rpc/twoserver_queries.py),
        durable before the query is evaluated. A name counted again (a watch's records, once
        their count has left the window: core/querylimit.py) replaces its earlier row, so the
        new count is the one read back after a restart."""
        with self.db.tx(clears_cache=False) as conn:
            conn.execute("INSERT INTO queries VALUES (?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE "
                         "SET project = excluded.project, member = excluded.member, "
                         "records = excluded.records, at = excluded.at",
                         (name, project, member, records, at))  # fmt: skip

    def queries_since(self, since: float) -> list[tuple[str, str, str, int, float]]:
        """The queries counted after `since` (name, project, member, records, when); older
        ones are deleted."""
        with self.db.tx(clears_cache=False) as conn:
            conn.execute("DELETE FROM queries WHERE at <= ?", (since,))
            rows = conn.execute("SELECT name, project, member, records, at FROM queries "
                                "ORDER BY at").fetchall()  # fmt: skip
        return [(str(n), str(p), str(m), int(r), float(a)) for n, p, m, r, a in rows]

    def _delete(self, conn: sqlite3.Connection, names: list[str]) -> list[str]:
        """The rows of `names` deleted, and their pairs; the files they named."""
        marks = ",".join("?" * len(names))
        rows = conn.execute(f"SELECT id, file, meta FROM uploads WHERE name IN ({marks})", names)
        found = rows.fetchall()
        files = []
        for upload, file, meta_text in found:
            files.append(f"{file}.bin")
            with contextlib.suppress(ValueError):  # (else they go at the next start)
                files += [apart_file(file, a) for a in apart_of(json.loads(meta_text))]
            conn.execute("DELETE FROM spent WHERE upload_a = ? OR upload_b = ?", (upload, upload))
            conn.execute("DELETE FROM ledger WHERE upload_a = ? OR upload_b = ?", (upload, upload))
            conn.execute("DELETE FROM sealed WHERE upload = ?", (upload,))
            conn.execute("DELETE FROM uploads WHERE id = ?", (upload,))
        return files

    def _unlink(self, files: list[str]) -> None:
        for f in files:
            (self.folder / f).unlink(missing_ok=True)
        if files:
            fsync_path(self.folder)

    def load(self, build: Callable[[dict[str, object], dict[str, npt.NDArray[np.generic]]], T]
             ) -> Restored[T]:  # fmt: skip
        """Everything held, each upload's arrays checked against its digest and made into
        what `build(meta, arrays)` returns (it raises ValueError, KeyError or TypeError on
        arrays that do not fit); files no row names deleted. `StartupRefused` naming the
        file on anything that cannot be read whole."""
        out: Restored[T] = Restored()
        try:
            with self.db.reading() as conn:
                rows = conn.execute("SELECT id, name, file, meta FROM uploads").fetchall()
                spent = conn.execute(
                    "SELECT a.name, b.name, s.reach, s.keys FROM spent s JOIN uploads a ON a.id = "
                    "s.upload_a JOIN uploads b ON b.id = s.upload_b ORDER BY s.seq"
                ).fetchall()
                sealed = conn.execute(
                    "SELECT u.name, s.at FROM sealed s JOIN uploads u ON u.id = s.upload"
                ).fetchall()
                ledger = conn.execute(
                    "SELECT a.name, b.name, l.kind, l.rows_a, l.rows_b, l.run FROM ledger l JOIN "
                    "uploads a ON a.id = l.upload_a JOIN uploads b ON b.id = l.upload_b "
                    "ORDER BY l.seq"
                ).fetchall()
        except sqlite3.Error as exc:
            raise _refuse(self.path, f"not a role's held store ({exc})") from None
        files = set()
        for _, name, file, meta_text in rows:
            files.add(f"{file}.bin")
            try:
                meta = json.loads(meta_text)
                files.update(apart_file(file, a) for a in apart_of(meta))
            except ValueError as exc:
                raise _refuse(self.path, f"upload {name!r}: its metadata ({exc})") from None
            out.held[name] = self._read(name, file, meta, build)
        by_pair: dict[tuple[str, str, bool], list[bytes]] = {}
        for a, b, reach, keys in spent:
            if len(keys) % 8:
                raise _refuse(self.path, f"pairs of {a!r} and {b!r}: {len(keys)} bytes")
            by_pair.setdefault((a, b, bool(reach)), []).append(keys)
        for pair, parts in by_pair.items():
            out.spent[pair] = np.frombuffer(b"".join(parts), "<u8").astype(np.uint64)
        for a, b, kind, rows_a, rows_b, run in ledger:
            if len(rows_a) % 4 or len(rows_a) != len(rows_b) or kind not in ("extra", "reach"):
                raise _refuse(self.path, f"ledger of {a!r} and {b!r}: not a {kind!r} batch")
            out.ledger.append(
                (
                    str(a),
                    str(b),
                    str(kind),
                    np.frombuffer(rows_a, "<u4").astype(np.uint32),
                    np.frombuffer(rows_b, "<u4").astype(np.uint32),
                    str(run),
                )
            )
        out.sealed = {str(name) for name, _ in sealed}
        out.backup_taken = max((float(at) for _, at in sealed), default=None)
        for path in self.folder.iterdir():
            if (
                path.name not in files and path.is_file()
            ):  # an upload that never finished, or a forgotten one's
                path.unlink()
                out.discarded += 1
        if out.discarded:
            fsync_path(self.folder)
        return out

    def _read(
        self, name: str, file: str, meta: dict[str, Any],
        build: Callable[[dict[str, object], dict[str, npt.NDArray[np.generic]]], T],
    ) -> T:  # fmt: skip
        layout = meta.get("arrays")
        path = self.folder / f"{file}.bin"
        if not isinstance(layout, list):
            raise _refuse(self.path, f"upload {name!r}: no arrays in its metadata")
        try:
            for field_name, dtype, _ in layout:
                if dtype not in DTYPES:
                    raise _refuse(path, f"upload {name!r}: array {field_name} of {dtype}")
            why = damage(self.folder, file, name, meta, hashed=True)  # (every file hashed)
            if why is not None:
                raise StartupRefused(f"{why}; {REFUSED}")
            arrays = self.mapped(file, layout, apart_of(meta))
        except OSError as exc:
            raise _refuse(path, f"upload {name!r} cannot be read ({exc})") from None
        except (ValueError, TypeError) as exc:
            raise _refuse(self.path, f"upload {name!r}: its arrays' layout ({exc})") from None
        try:
            return build(meta, arrays)
        except (ValueError, KeyError, TypeError) as exc:
            raise _refuse(path, f"upload {name!r}: {exc}") from None

    def mapped(self, file: str, layout: list[Any], apart: Iterable[str] = ()
               ) -> dict[str, npt.NDArray[np.generic]]:  # fmt: skip
        """The arrays of the upload `write` wrote to `file` ((name, dtype, shape) each, in
        order; those in `apart` each in its own file), read-only views of the files mapped
        (not read: their pages come into memory as they are read, and go back to the file's
        cache under pressure)."""
        main, apart = self.folder / f"{file}.bin", set(apart)
        held, size = _mapped(main)
        out: dict[str, npt.NDArray[np.generic]] = {}
        at = 0
        for field_name, dtype, shape in layout:
            kind = np.dtype(dtype)
            count = int(np.prod(shape))
            if field_name in apart:
                path = self.folder / apart_file(file, field_name)
                own, own_size = _mapped(path)
                if count * kind.itemsize != own_size:
                    raise ValueError(f"{path}: {own_size} bytes, not its array's")
                out[str(field_name)] = np.frombuffer(own, kind, count).reshape(shape)
                continue
            if at + count * kind.itemsize > size:
                raise ValueError(f"{main}: shorter than its arrays (array {field_name})")
            out[str(field_name)] = np.frombuffer(held, kind, count, at).reshape(shape)
            at += count * kind.itemsize
        return out


def _mapped(path: Path) -> tuple[mmap.mmap | bytes, int]:
    """A file mapped read-only (b"" if empty), and its size."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        return (mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""), size


__all__ = ["Restored", "RoleStore"]
