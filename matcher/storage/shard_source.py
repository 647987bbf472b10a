"""What a look-up server reads of the matcher's data dir: its shards, and the look-up key.

A look-up server (`blindmatch lookup-server`; matcher/realtime/shards.py) rebuilds its
shards of the standing indexes from the matcher's `index.sqlite`, opened read-only (it
never writes the matcher's databases), in one read transaction: every index as of one
commit. The project thresholds its LSH tables are built for come from
`blindmatch.sqlite`, read-only too.

`DIR/lookup.key` is the secret the matcher presents to its look-up servers (and they
require): whoever can read it can read `index.sqlite` beside it, so it grants nothing
more. Made, owner-only, by whichever of the matcher or a look-up server starts first.
A look-up server on another machine, without the data dir, is given a copy of it
(`--key-file`, `read_lookup_key`: refused unless owner-only, as it is made).

`DIR/lookup.epoch` orders the matcher's processes for its look-up servers (`lookup_epoch`,
pb.ShardFence `epoch`): each start takes its start time, or one more than the last start's
if the clock is behind that, so that a later process's forwards are never taken for an
earlier one's.

`DIR/lookup.stopped` is what the matcher's process knew of its look-up servers when it
stopped (`record_stop`): which had missed a change (behind). The next start reads it and
removes it (`behind_at_last_stop`) before it stores anything, so a process killed leaves
none, and a record that index.sqlite still matches means no process stored anything since
(`read_after_stop`: a look-up server reading its shards then holds every change stored, and
says so, pb.ShardState `read_after_stop`); a start that finds none
(killed, stopped while a forward was in flight, or a data dir from before this record), or
one left beside another index.sqlite (restored from a copy), knows nothing of what the
servers missed, and has every one read its shards again (or loads it). A process without
look-up servers writes at its start that it has none (`record_without_servers`): the next
start with servers has every one read its shards again and says why, as it does when no
process had servers yet (no `lookup.epoch`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from blindmatch.matcher.core.fallback import Rule
from blindmatch.matcher.domain import Encoding
from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.storage import index_store, project_store
from blindmatch.matcher.storage.datadir import FILE_MODE, INDEX_DB_NAME, DataDir, fsync_path
from blindmatch.matcher.storage.integrity import newer_store_in
from blindmatch.matcher.storage.keyfile import KeyFileProblem, read_owner_only
from blindmatch.matcher.storage.quietread import connect_read_only, left_as_found
from blindmatch.matcher.storage.sqlite import newer_store

LOOKUP_KEY_NAME = "lookup.key"
LOOKUP_EPOCH_NAME = "lookup.epoch"
LOOKUP_STOPPED_NAME = "lookup.stopped"


@dataclass(frozen=True)
class ShardRecords:
    """One index's records that fall in a shard: refs and their CLKs, concatenated."""

    encoding: Encoding
    refs: list[str]
    clks: bytes


def refuse_newer_stores(data_dir: str | Path) -> None:
    """`StartupRefused` where the data dir's store or index.sqlite is of a layout this
    blindmatch does not know (a newer one wrote it: project_store.py and index_store.py
    `LAYOUT`), before the look-up server reads or writes anything there (its look-up key)
    or listens. One of a layout it knows is read as it is, one from before the marker (0)
    too: a look-up server only reads, and never records a layout (the matcher does, at its
    start)."""
    newer = newer_store_in(DataDir(Path(data_dir)))
    if newer is not None:
        raise StartupRefused(
            f"{newer}. The look-up server will not start on it and has changed nothing: "
            "upgrade its blindmatch to the matcher's"
        )


class NewerLayout(StartupRefused):
    """A store of the data dir is of a layout newer than this look-up server knows: it does
    not read its shards from it (at its start, or when the matcher asks it to read again)."""


def newer_stores(data_dir: str | Path) -> NewerLayout | None:
    """`NewerLayout` (naming the file and both layouts) where the data dir's store or
    index.sqlite is of a layout this blindmatch does not know, else None; read without
    changing the folder (sqlite.py `layout_of`)."""
    newer = newer_store_in(DataDir(Path(data_dir)))
    return _unreadable(newer) if newer is not None else None


def _unreadable(newer: str) -> NewerLayout:
    return NewerLayout(
        f"{newer}. The look-up server does not read its shards from it, and answers no "
        "search from those it holds until it can: upgrade its blindmatch to the matcher's"
    )


def _layout_known(conn: sqlite3.Connection, path: Path, known: int) -> None:
    """`NewerLayout` if the database `conn` reads (in its read transaction, if one is open:
    the snapshot read, whatever replaced the file since) is of a layout newer than `known`."""
    found = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if found > known:
        raise _unreadable(newer_store(path, found, known))


def read_shards(
    data_dir: str | Path, keep: Callable[[str], bool]
) -> tuple[dict[tuple[str, str], ShardRecords], dict[str, float]]:
    """Every standing index's records whose ref `keep` accepts, by (project, member), as of
    one commit; and every project's threshold. A store of a layout this blindmatch does not
    know is refused (`NewerLayout`), as read, not as checked before. The data dir is left
    as it was found (quietread.py `left_as_found`): a stopped matcher's databases are read as
    immutable, which makes no -wal or -shm beside them; a serving one's through their WAL
    (each read decides anew: a look-up server outlives many matcher starts and stops)."""
    files = DataDir(Path(data_dir))
    for path in (files.index_db, files.db):
        if not path.is_file():
            raise StartupRefused(
                f"{path}: not found; --data-dir must be the matcher's data dir (its "
                "index.sqlite and blindmatch.sqlite), on storage this server can read"
            )
    return left_as_found([files.db, files.index_db], lambda: _read_shards(files, keep))


def _read_shards(
    files: DataDir, keep: Callable[[str], bool]
) -> tuple[dict[tuple[str, str], ShardRecords], dict[str, float]]:
    conn = connect_read_only(files.db)
    try:
        conn.execute("BEGIN")
        _layout_known(conn, files.db, project_store.LAYOUT)
        thresholds = {n: float(t) for n, t in conn.execute("SELECT name, threshold FROM projects")}
        conn.execute("COMMIT")
    finally:
        conn.close()
    conn = connect_read_only(files.index_db)
    found: dict[tuple[str, str], ShardRecords] = {}
    try:
        conn.execute("BEGIN")  # one snapshot for every index
        _layout_known(conn, files.index_db, index_store.LAYOUT)
        columns = {r[1] for r in conn.execute("PRAGMA table_info(index_meta)")}
        rule_column = "rule" if "rule" in columns else "''"  # (a data dir from before it)
        meta = conn.execute(
            "SELECT project, member, clk_bits, fingerprint, fallback_bits, "
            f"{rule_column} FROM index_meta"
        ).fetchall()
        for project, member, bits, fingerprint, fallback_bits, rule in meta:
            refs: list[str] = []
            clks: list[bytes] = []
            for ref, clk in conn.execute(
                "SELECT ref, clk FROM index_records WHERE project=? AND member=?",
                (project, member),
            ):
                if keep(ref):
                    refs.append(ref)
                    clks.append(clk)
            if refs:
                encoding = Encoding(bits, bytes(fingerprint), fallback_bits, Rule.parse(rule))
                found[(project, member)] = ShardRecords(encoding, refs, b"".join(clks))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return found, thresholds


def lookup_key(data_dir: str | Path) -> str:
    """The data dir's look-up key, made now (owner-only, atomically) if it is not there."""
    path = Path(data_dir) / LOOKUP_KEY_NAME
    if not path.exists():
        temp = path.with_name(f".{LOOKUP_KEY_NAME}.{secrets.token_hex(8)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        with os.fdopen(fd, "w") as out:
            out.write("bm_lookup_" + secrets.token_urlsafe(32) + "\n")
            out.flush()
            os.fsync(out.fileno())
        with contextlib.suppress(FileExistsError):  # the other side made it first
            os.link(temp, path)
        temp.unlink()
    key = path.read_text().strip()
    if not key:
        raise StartupRefused(f"{path} is empty; delete it and start the matcher again")
    return key


def read_lookup_key(path: str | Path) -> str:
    """The matcher's look-up key from a copy of its `lookup.key` (a look-up server without
    the data dir); refused unless the file is the owner's only, as the matcher makes it."""
    path = Path(path)
    try:
        return read_owner_only(path)
    except KeyFileProblem as problem:
        raise StartupRefused({
            "missing": f"{path}: not found; copy the matcher's DIR/{LOOKUP_KEY_NAME} here "
            "(owner-only)",
            "not text": f"{path}: not a look-up key file (DIR/{LOOKUP_KEY_NAME})",
            "readable": f"{path}: readable by others than its owner (mode {problem.mode:o}); "
            "it lets whoever reads it send this server changes and read its records: "
            f"chmod 600 {path}",
            "empty": f"{path} is empty; copy the matcher's DIR/{LOOKUP_KEY_NAME}",
        }[problem.problem]) from None  # fmt: skip


def lookup_epoch(data_dir: str | Path, now: Callable[[], int] = time.time_ns) -> int:
    """This matcher process's epoch: its start time (`now`: ns since 1970), or one more than
    the previous start's if the clock is behind it; kept in DIR/lookup.epoch (atomically)."""
    path = Path(data_dir) / LOOKUP_EPOCH_NAME
    try:
        before = int(path.read_text().strip() or 0)
    except (FileNotFoundError, ValueError):
        before = 0
    epoch = max(now(), before + 1)
    _replace_private(path, f"{epoch}\n")
    return epoch


def _replace_private(path: Path, text: str) -> None:
    """Replace `path` with `text` atomically, owner-only, fsynced."""
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    temp.replace(path)


# Why every look-up server may have missed a change though a record says something (`why`).
NEVER_WITH_SERVERS = (
    "the look-up servers are new to this data dir: its indexes were stored by a matcher "
    "without look-up servers"
)
RAN_WITHOUT_SERVERS = (
    "the matcher's last run used no look-up servers, so none was told of the changes it stored"
)
INDEX_RESTORED = (
    "index.sqlite is not the file the matcher's last run stopped beside (restored from a copy?)"
)


@dataclass(frozen=True)
class LastStop:
    """What the matcher's previous process left its look-up servers in, as it recorded on
    stopping (`record_stop`): its servers, in shard order, and which of them were behind."""

    servers: tuple[str, ...] | None  # None: a new data dir (no server was ever told anything)
    behind: frozenset[int] = frozenset()
    # servers == (): why every server may have missed a change (NEVER_WITH_SERVERS, ...)
    why: str = field(default="", compare=False)
    # The record's own id (`record_stop`): a server whose shards were read after it, with
    # index.sqlite unchanged since, says so (`read_after_stop`); "" for none
    id: str = field(default="", compare=False)

    def stale(self, addresses: Sequence[str]) -> set[int]:
        """Which of `addresses` (this process's servers) may have missed a change: those
        left behind; every one if the servers are not the same, in the same order (one
        named otherwise may be one left behind)."""
        if self.servers is None:
            return set()
        if list(self.servers) != list(addresses):
            return set(range(len(addresses)))
        return set(self.behind)

    def cause(self, addresses: Sequence[str]) -> str:
        """Why the servers `stale` names may have missed a change, as the matcher can tell."""
        if self.servers == ():
            return self.why
        if self.servers is not None and list(self.servers) != list(addresses):
            return (
                "the matcher's last run stopped with other look-up servers, or these in another "
                f"order ({', '.join(self.servers)})"
            )
        return "the matcher's last run stopped with it behind"


NOTHING_MISSED = LastStop(None)  # a new data dir's (and a matcher's not told otherwise)


def record_stop(data_dir: str | Path, servers: Sequence[str], behind: set[int]) -> None:
    """Keep, for the matcher's next start, its look-up servers and which of them are behind
    as it stops (DIR/lookup.stopped, written atomically)."""
    path = Path(data_dir) / LOOKUP_STOPPED_NAME
    index = _file_state(Path(data_dir) / INDEX_DB_NAME)
    record = {
        "servers": list(servers),
        "behind": sorted(behind),
        "index": index,
        "id": secrets.token_hex(8),
    }
    _replace_private(path, json.dumps(record))
    fsync_path(path.parent)


def record_without_servers(data_dir: str | Path) -> None:
    """Keep, for the matcher's next start, that this process has no look-up servers: it
    forwards none of the changes it stores, whether it stops or is killed (so it is
    written at start), and a next start with servers says so (`RAN_WITHOUT_SERVERS`)."""
    path = Path(data_dir) / LOOKUP_STOPPED_NAME
    _replace_private(path, json.dumps({"servers": [], "behind": [], "without": True}))
    fsync_path(path.parent)


def _file_state(path: Path) -> list[int] | None:
    """index.sqlite as the record finds it (closed): its inode, size and modification
    time; a file restored since (copied over it, or a folder copied in its place) differs."""
    try:
        found = path.stat()
    except FileNotFoundError:
        return None
    return [found.st_ino, found.st_size, found.st_mtime_ns]


def forget_stop(data_dir: str | Path) -> None:
    """Remove the record `record_stop` kept (durably): from now on a change may be stored
    that a look-up server misses, and a process killed must leave no record."""
    path = Path(data_dir) / LOOKUP_STOPPED_NAME
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        fsync_path(path.parent)


def behind_at_last_stop(data_dir: str | Path) -> LastStop | None:
    """What the matcher's previous process recorded of its look-up servers as it stopped,
    read and removed (`forget_stop`); for a new data dir (no index stored, no look-up
    server ever told of a change), nothing behind; None if there is no record (the previous
    process was killed, or a forward followed its record): any server may have missed a
    change. Where the matcher can tell why every server may have missed one, a record of
    no servers saying so (`LastStop.why`): index.sqlite is not the file it left, the last
    run had no look-up servers (`record_without_servers`), or no run had any. Called at
    each start before the matcher stores anything, with or without look-up servers (a
    process without them forwards nothing: it records that instead)."""
    root = Path(data_dir)
    if not any((root / name).exists() for name in (INDEX_DB_NAME, LOOKUP_EPOCH_NAME)):
        forget_stop(root)
        return NOTHING_MISSED
    record: LastStop | None
    try:
        found = json.loads((root / LOOKUP_STOPPED_NAME).read_text())
        if found.get("without") is True:  # `record_without_servers`
            record = LastStop((), why=RAN_WITHOUT_SERVERS)
        else:
            record = LastStop(
                tuple(str(a) for a in found["servers"]),
                frozenset(int(i) for i in found["behind"]),
                id=str(found.get("id", "")),
            )
            if found["index"] != _file_state(root / INDEX_DB_NAME):
                record = LastStop((), why=INDEX_RESTORED)  # not the one it left
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none, or not ours
        record = None
        if not (root / LOOKUP_EPOCH_NAME).exists():  # no matcher with look-up servers yet
            record = LastStop((), why=NEVER_WITH_SERVERS)
    forget_stop(root)
    return record


def read_after_stop(data_dir: str | Path) -> str:
    """The id of the matcher's stop record (`record_stop`) if the data dir holds one that its
    index.sqlite still matches, else "". Such a record means no matcher process has stored
    anything since it stopped (a process removes it before it stores anything, and a change
    forwarded after it is written voids it): a read of the shards begun after this call holds
    every change stored before that process stopped, and the next process, starting from
    this record, need not have the server read them again (rpc/lookup_load.py)."""
    root = Path(data_dir)
    try:
        found = json.loads((root / LOOKUP_STOPPED_NAME).read_text())
        if found.get("without") is True or found["index"] != _file_state(root / INDEX_DB_NAME):
            return ""
        return str(found.get("id", ""))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # none, or not ours
        return ""
