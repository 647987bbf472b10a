"""One server per data dir: `blindmatch serve` and `two-server role --data-dir` hold an
exclusive lock on their data dir's folder for as long as they run, and a second one started
on the same folder is refused before it changes anything there.

Before, a second `serve` on a data dir another one served started too: it emptied `tmp/` (the
first one's uploads in flight), replaced `operator.token` (the first one's token, still the
one it checks, no longer written anywhere) and served the same databases beside it. The lock
is `flock` on the folder itself, so nothing is written to take it (a data dir a newer
blindmatch wrote stays untouched: *Refusing to start*), and the kernel lets go of it when the
process ends, however it ends: no stale lock after a SIGKILL or a power cut. Look-up servers
read the data dir beside the matcher and take no lock. `admin restore` asks whether a role
still serves `--previous`, the data dir being replaced (`in_use`): it would go on writing the
audit log the restore replays.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.storage.datadir import DIR_MODE


@contextmanager
def held(root: Path, what: str, error: type[Exception] = StartupRefused) -> Iterator[None]:
    """`hold` for the block's length, its refusal raised as `error` (the command line's
    InputError, say): let go of when the block ends, however it ends (a start refused after
    the lock was taken leaves the folder free for the next one)."""
    try:
        fd = hold(root, what)
    except StartupRefused as exc:
        raise error(str(exc)) from None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)


def hold(root: Path, what: str) -> int | None:
    """Lock the data dir `root` (made, owner-only, if it is not there) for this process's
    life: the open folder's descriptor, which the caller keeps open, or None where the folder
    cannot be locked (not a folder, not made, a file system without `flock`): the start goes
    on and says its own error. `what` names the server for the refusal (`blindmatch serve`)."""
    try:  # (exists() itself fails on a name too long: the start says so, naming --data-dir)
        if not root.exists():
            root.parent.mkdir(parents=True, exist_ok=True)
            root.mkdir(mode=DIR_MODE, exist_ok=True)
    except OSError:
        return None
    fd, busy = _locked(root, fcntl.LOCK_EX)
    if busy:
        raise StartupRefused(
            f"--data-dir {root}: another process is serving it (a `blindmatch serve` or "
            f"`two-server role` still running on it), so {what} will not start on it and "
            "has changed nothing: one data dir, one process. Stop that one first (SIGTERM), "
            "or give this one a data dir of its own"
        )
    return fd


def in_use(root: Path) -> bool:
    """Whether a running server holds the data dir `root` (its lock is taken); a folder
    that cannot be opened or locked counts as not."""
    fd, busy = _locked(root, fcntl.LOCK_SH)
    if fd is not None:
        os.close(fd)  # (closing lets go of the shared lock taken)
    return busy


def _locked(root: Path, how: int) -> tuple[int | None, bool]:
    """The folder `root` open and locked `how` (LOCK_EX, LOCK_SH), or None; and whether
    another process's lock is what refused it."""
    fd = _open(root)
    if fd is None:
        return None, False
    try:
        fcntl.flock(fd, how | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        return None, exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    return fd, False


def _open(root: Path) -> int | None:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
