"""The data dir's layout: every file and folder the matcher keeps, named once.

    DIR/blindmatch.sqlite   projects, members (token hashes, consent), uploads, runs,
                            links, audit (the hash-chained log)
    DIR/index.sqlite        standing-index records and encodings, query limits and
                            settings, the query volume log
    DIR/clks/<upload>.bin   an upload's CLKs, written once, fsynced, then renamed in
    DIR/tmp/                uploads in flight; emptied at start-up
    DIR/audit.key           the audit chain's HMAC key (unless kept elsewhere)

SQLite keeps `-wal` and `-shm` files beside each database while it is open.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DB_NAME = "blindmatch.sqlite"
INDEX_DB_NAME = "index.sqlite"
AUDIT_KEY_NAME = "audit.key"
CLKS_NAME = "clks"
TMP_NAME = "tmp"
CLK_SUFFIX = ".bin"


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
    def clks(self) -> Path:
        return self.root / CLKS_NAME

    @property
    def tmp(self) -> Path:
        return self.root / TMP_NAME

    def clk_file(self, upload_id: str) -> Path:
        return self.clks / f"{upload_id}{CLK_SUFFIX}"

    def make(self) -> None:
        """Create the folders (the databases and the key are made by their owners)."""
        for d in (self.root, self.clks, self.tmp):
            d.mkdir(parents=True, exist_ok=True)


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
