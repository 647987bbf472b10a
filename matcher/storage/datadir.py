"""The data dir's layout: every file and folder the matcher keeps, named once.

    DIR/blindmatch.sqlite   projects, members (token hashes, consent), uploads, runs,
                            links, audit (the hash-chained log)
    DIR/index.sqlite        standing-index records and encodings, query limits and
                            settings, the query volume log
    DIR/clks/<upload>.bin   an upload's CLKs, written once, fsynced, then renamed in
    DIR/tmp/                uploads in flight; emptied at start-up
    DIR/audit.key           the audit chain's HMAC key (unless kept elsewhere)
    DIR/operator.token      the operator token `blindmatch serve` made for this run, when
                            none was given (owner-only; the command line writes it)

SQLite keeps `-wal` and `-shm` files beside each database while it is open.

Everything in it is its owner's only, whatever the umask: folders 0700, files 0600 (SQLite
gives a database's `-wal` and `-shm` the database file's mode, and the matcher makes that file
0600 before SQLite opens it). A data dir that other users can read or write is refused at
start-up (`check_private`), with the command that fixes it.
"""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from blindmatch.matcher.errors import StartupRefused

DB_NAME = "blindmatch.sqlite"
INDEX_DB_NAME = "index.sqlite"
AUDIT_KEY_NAME = "audit.key"
OPERATOR_TOKEN_NAME = "operator.token"
CLKS_NAME = "clks"
TMP_NAME = "tmp"
CLK_SUFFIX = ".bin"
DIR_MODE = 0o700
FILE_MODE = 0o600


@dataclass(frozen=True)
class DataDir:
    """Paths in one data dir (nothing is created by naming it)."""

    root: Path

    @property
    def db(self) -> Path:
        return self.root / DB_NAME

    @property
    def index_db(self) -> Path:
        return self.root / INDEX_DB_NAME

    @property
    def audit_key(self) -> Path:
        return self.root / AUDIT_KEY_NAME

    @property
    def operator_token(self) -> Path:
        return self.root / OPERATOR_TOKEN_NAME

    @property
    def clks(self) -> Path:
        return self.root / CLKS_NAME

    @property
    def tmp(self) -> Path:
        return self.root / TMP_NAME

    def clk_file(self, upload_id: str) -> Path:
        return self.clks / f"{upload_id}{CLK_SUFFIX}"

    def make(self) -> None:
        """Create the folders, owner-only (the databases and the key are made by their
        owners). Folders above the data dir are not the matcher's to restrict."""
        self.root.parent.mkdir(parents=True, exist_ok=True)
        for d in (self.root, self.clks, self.tmp):
            make_private_dir(d)

    def open_to_others(self) -> list[str]:
        """What in the data dir others may read, write or enter ('PATH (mode 0755)'): the
        data dir itself, every file and folder the matcher keeps there, and `clks/`'s files."""
        if not self.root.exists():
            return []
        paths = [self.root, *sorted(self.root.iterdir())]
        for d in (self.clks, self.tmp):
            if d.is_dir():
                paths += sorted(d.iterdir())
        found = []
        for path in paths:
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:  # gone meanwhile (a finished upload's part)
                continue
            if not stat.S_ISLNK(mode) and mode & 0o077:
                found.append(f"{path} (mode {stat.S_IMODE(mode):04o})")
        return found

    def check_private(self) -> None:
        """Refuse a data dir that other users can read or write, saying how to fix it."""
        found = self.open_to_others()
        if found:
            shown = ", ".join(found[:3]) + (f" and {len(found) - 3} more" if found[3:] else "")
            raise StartupRefused(
                f"{self.root} is open to other users ({shown}), and it holds encodings of "
                "personal data and the tokens' hashes: the matcher will not serve it. Make it "
                f"its owner's only, then start again:\n  chmod -R go-rwx {self.root}"
            )


def make_private_dir(path: Path) -> None:
    """A folder only its owner may use (0700 whatever the umask), if it is not there."""
    path.mkdir(mode=DIR_MODE, exist_ok=True)


def create_private_file(path: Path) -> None:
    """An empty file only its owner may read or write (0600 whatever the umask), unless
    it exists already."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))


def copy_private(source: Path | BinaryIO, dest: Path) -> None:
    """Copy a file (or an open one, from its start) to a new owner-only file, fsynced."""
    if isinstance(source, Path):
        with open(source, "rb") as src:  # first: a source not there leaves no empty `dest`
            copy_private(src, dest)
        return
    source.seek(0)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(fd, "wb") as out:
        shutil.copyfileobj(source, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


def upload_id_of(clk_file: Path) -> str | None:
    """The upload a file in `clks/` belongs to; None for anything else found there."""
    return clk_file.stem if clk_file.suffix == CLK_SUFFIX and clk_file.is_file() else None


def fsync_path(path: Path) -> None:
    """Make a file durable, or (for a folder) the names created or renamed in it."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
