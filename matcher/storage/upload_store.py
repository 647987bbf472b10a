"""Uploads: each member's CLKs for batch runs, as files in `clks/` and rows beside them.

An upload is acknowledged only after its file is fsynced into `clks/` and its row
committed, so a crash loses nothing acknowledged and never exposes half an upload.
Retries are idempotent: an upload may carry a client-chosen id, recorded in
`upload_keys` in the same transaction as the upload, so a retry of an acknowledged
upload finds it instead of storing it twice (`domain.retried_upload`), as long as it is
still the member's current upload (`blindmatch upload` derives the id from the content,
so sending content again after other content makes it current again). A full disk
becomes `ResourceExhausted` and leaves earlier data as it was; `min_free_bytes`
refuses an upload up front when it would leave less than that free.

A stored file is never trusted blindly: a run maps its inputs only after each file is
found whole (present, of the size its row promises, hashing to the SHA-256 it was
acknowledged with), and hashes the mapped bytes again before its links are stored
(`verified_clks`, `verify_again`); a damaged one is `DataLoss`, naming the member who must
upload again. `upload_damage` is the same check for the scrub and `admin check`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import numpy.typing as npt

from blindmatch.matcher.core import audit
from blindmatch.matcher.core.encodings import Held, check_compatible, same_scoring
from blindmatch.matcher.core.fallback import NO_RULE, Rule
from blindmatch.matcher.domain import Encoding, Upload, retried_upload
from blindmatch.matcher.errors import DataLoss, NotFound
from blindmatch.matcher.storage.base import ACTIVE_SQL, StoreBase
from blindmatch.matcher.storage.datadir import create_private_file, fsync_path, upload_id_of
from blindmatch.matcher.storage.diskroom import Claim
from blindmatch.matcher.storage.outcome_store import forget_outcomes
from blindmatch.matcher.storage.sqlite import disk_full, full_disk
from blindmatch.matcher.storage.ticket_store import settle

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS upload_schemas (
    upload_id TEXT PRIMARY KEY,
    schema_digest TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS upload_twoserver (
    upload_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    bits TEXT NOT NULL
);
"""

# upload_layouts.field_bits of a record-level upload with a fallback CLK: "fallback:BITS".
FALLBACK_PREFIX = "fallback:"
RULE_MARK = ":rule:"  # "fallback:BITS:rule:GAP,OFFSET,REACH" (older rows: no rule)


def _rule_layout(rule: Rule) -> str:
    return f"{RULE_MARK}{rule.text()}" if rule.active else ""


# The uploads whose CLK files the matcher still needs: each member's current one, and the
# inputs of runs that are queued or running. Every other file in clks/ is garbage.
NEEDED_UPLOADS = (
    "SELECT id FROM uploads WHERE current=1 UNION "
    "SELECT upload_id FROM run_inputs JOIN runs ON runs.id=run_inputs.run_id "
    f"WHERE runs.state IN {ACTIVE_SQL}"
)


log = logging.getLogger("blindmatch.matcher")

_UPLOAD_COLUMNS = "id, project, member, record_count, clk_bits, fingerprint, sha256"
_BLOCK = 8 << 20  # bytes hashed at a time by `upload_damage`


def needed_uploads(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute(NEEDED_UPLOADS)}


def upload_damage(
    path: Path,
    upload: Upload,
    *,
    hashed: bool = True,
    pace: Callable[[int], None] | None = None,
) -> str | None:
    """What is wrong with `upload`'s file at `path`, in words for its member (no path);
    None when it is whole (or, unless `hashed`, at least present and of its size).
    `pace(n)` is called after each n bytes hashed (to throttle)."""
    found = _size_damage(path, upload)
    if found is not None or not hashed or not upload.clk_bits:
        # (clk_bits 0: a two-server upload, its file empty, its sha256 its shares' at S2)
        return found
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while block := fh.read(_BLOCK):
                digest.update(block)
                if pace is not None:
                    pace(len(block))
    except FileNotFoundError:
        return MISSING
    return None if digest.hexdigest() == upload.sha256 else CHANGED


MISSING = "its stored file is missing"
CHANGED = "its stored CLKs no longer match the SHA-256 they were acknowledged with"


def _size_damage(path: Path, upload: Upload) -> str | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return MISSING
    expected = upload.record_count * (upload.clk_bits // 8)
    if size != expected:
        return (
            f"its stored file holds {size} bytes, not the {expected} of the "
            f"{upload.record_count} CLKs acknowledged"
        )
    return None


def damaged_upload(upload: Upload, reason: str) -> DataLoss:
    """The error a run fails with when one of its inputs is damaged: who must do what."""
    member = upload.member
    return DataLoss(
        f"{member}'s upload is damaged on the matcher ({reason}), so no run may use it; "
        f"{member} must upload its data again (`blindmatch upload`), then start a new run"
    )


class UploadStore(StoreBase):
    def new_upload_path(self) -> Path:
        """A new, empty, owner-only file in `tmp/` for an upload to be written to."""
        path = self.files.tmp / f"{uuid.uuid4().hex}.part"
        create_private_file(path)
        return path

    def ensure_room(self, nbytes: int) -> AbstractContextManager[Claim]:
        """Room for an upload of `nbytes`, held while it is received (storage/diskroom.py):
        refused where it would leave less than `min_free_bytes` free, counting what the
        uploads in flight were promised and have not written yet."""
        return self.room.claim(nbytes)

    def keyed_upload(self, project: str, member: str, client_upload_id: str) -> Upload | None:
        """The upload acknowledged earlier under this client-chosen id, if it is still the
        member's current one. (One the member has since replaced is not acknowledged
        again: its file may be gone, and sending it again means making it current again.)
        Nor is one whose file is damaged: the member told to upload again sends the same
        folder, under the same id, and it is stored anew."""
        rows = self.db.query(
            "SELECT k.upload_id FROM upload_keys k JOIN uploads u ON u.id=k.upload_id "
            "WHERE k.project=? AND k.member=? AND k.client_upload_id=? AND u.current=1",
            (project, member, client_upload_id),
        )
        if not rows:
            return None
        earlier = self.upload(rows[0][0])
        damage = upload_damage(self.files.clk_file(earlier.id), earlier)
        if damage is not None:
            log.warning("%s/%s sent upload %s again, whose stored file is damaged (%s): "
                        "stored anew", project, member, earlier.id, damage)  # fmt: skip
            return None
        return earlier

    def current_uploads(self, project: str) -> dict[str, Upload]:
        """Each member's current upload, earliest first (the first set the encoding)."""
        rows = self.db.cached_rows(
            ("uploads", project),
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE project=? AND current=1 "
            "ORDER BY created, id",
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
        rule: Rule = NO_RULE,
        check: Callable[[], None] | None = None,
        schema_digest: str = "",
        two_server: tuple[str, tuple[int, ...]] | None = None,
    ) -> tuple[Upload, bool]:
        """Make a fully received, fsynced upload file the member's current data.

        `two_server`: a two-server project's upload (clk_bits 0, its file empty: the matcher
        holds no record of it), the member's name at S1 and S2 for it and its CLKs' widths
        (`two_server_part`).

        With a `client_upload_id` already acknowledged for the same content,
        returns that earlier upload and stores nothing new. The flag says which: True
        for an earlier upload acknowledged again. `check` runs first inside the committing
        transaction and may refuse (the uploader's token revoked meanwhile, say).
        """
        upload = Upload(
            uuid.uuid4().hex, project, member, record_count, clk_bits, fingerprint, sha256
        )
        final = self.files.clk_file(upload.id)
        try:
            with self.db.tx() as tx:
                if check is not None:
                    check()
                mine = Encoding(clk_bits, fingerprint, fallback_bits, rule)
                earlier = self._keyed_for_commit(upload, client_upload_id, mine)
                if earlier is not None:
                    return earlier, True
                others = [u for m, u in self.current_uploads(project).items() if m != member]
                check_compatible(
                    mine,
                    [
                        Held("this project's other uploads", self.upload_encoding(u), plural=True)
                        for u in others
                    ],
                )
                os.replace(part, final)
                fsync_path(self.files.clks)
                self.audit.append_in(
                    tx,
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
                tx.execute(
                    "UPDATE uploads SET current=0 WHERE project=? AND member=? AND current=1",
                    (project, member),
                )
                forget_outcomes(tx, project, member)  # of its earlier upload
                tx.execute(
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
                if client_upload_id:  # (a replaced upload's id now names this one)
                    tx.execute(
                        "INSERT OR REPLACE INTO upload_keys VALUES (?,?,?,?)",
                        (project, member, client_upload_id, upload.id),
                    )
                if field_bits:  # field-level encodings (see core.fieldlevel)
                    tx.execute(
                        "INSERT INTO upload_layouts VALUES (?,?)",
                        (upload.id, ",".join(map(str, field_bits))),
                    )
                elif fallback_bits:  # record-level with a fallback CLK (core.fallback)
                    tx.execute(
                        "INSERT INTO upload_layouts VALUES (?,?)",
                        (upload.id, f"{FALLBACK_PREFIX}{fallback_bits}{_rule_layout(rule)}"),
                    )
                if schema_digest:  # for naming what differs when another upload is refused
                    tx.execute(
                        "INSERT INTO upload_schemas VALUES (?,?)", (upload.id, schema_digest)
                    )
                if two_server is not None:
                    name, widths = two_server
                    settle(tx, project, member, name)  # that upload whole now
                    tx.execute(
                        "INSERT INTO upload_twoserver VALUES (?,?,?)",
                        (upload.id, name, ",".join(map(str, widths))),
                    )
        except BaseException as exc:
            final.unlink(missing_ok=True)  # a new name: never an acknowledged upload's file
            if disk_full(exc):
                raise full_disk(exc) from exc
            raise
        self._collect_garbage()
        return upload, False

    def _keyed_for_commit(
        self, upload: Upload, client_upload_id: str, encoding: Encoding
    ) -> Upload | None:
        if not client_upload_id:
            return None
        earlier = self.keyed_upload(upload.project, upload.member, client_upload_id)
        if earlier is None:
            return None
        return retried_upload(
            earlier,
            client_upload_id,
            sha256=upload.sha256,
            record_count=upload.record_count,
            clk_bits=upload.clk_bits,
            same_scoring=same_scoring(self.upload_encoding(earlier), encoding),
        )

    def verified_clks(self, upload: Upload) -> npt.NDArray[np.uint8]:
        """An upload's CLKs as an (n, clk_bits/8) array, mapped from disk once its file is
        found whole; `DataLoss` naming the member otherwise."""
        path = self.files.clk_file(upload.id)
        self._raise_damage(upload, _size_damage(path, upload))
        if upload.record_count == 0:
            clks = np.zeros((0, upload.clk_bits // 8), dtype=np.uint8)
        else:
            clks = np.memmap(
                path, dtype=np.uint8, mode="r", shape=(upload.record_count, upload.clk_bits // 8)
            )
        self.verify_again(upload, clks)
        return clks

    def verify_again(self, upload: Upload, clks: npt.NDArray[np.uint8]) -> None:
        """`DataLoss` unless the bytes mapped for `upload` (the very bytes a run compares)
        still hash to its acknowledged SHA-256."""
        if hashlib.sha256(clks.data).hexdigest() != upload.sha256:
            self._raise_damage(upload, CHANGED)

    def _raise_damage(self, upload: Upload, reason: str | None) -> None:
        if reason is None:
            return
        log.error(
            "upload %s of %s/%s (%s) is damaged: %s; the member must upload again",
            upload.id,
            upload.project,
            upload.member,
            self.files.clk_file(upload.id),
            reason,
        )
        raise damaged_upload(upload, reason)

    def is_needed(self, upload_id: str) -> bool:
        """Whether the matcher still needs this upload's file (`NEEDED_UPLOADS`)."""
        return bool(self.db.query(f"SELECT 1 WHERE ? IN ({NEEDED_UPLOADS})", (upload_id,)))

    def needed_upload_rows(self) -> list[Upload]:
        """Every upload whose file the matcher still needs (`NEEDED_UPLOADS`)."""
        return [
            Upload(*r)
            for r in self.db.query(
                f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id IN ({NEEDED_UPLOADS}) "
                "ORDER BY project, member, created"
            )
        ]

    def _layout(self, upload_id: str) -> str:
        # Remembered until the next write (an upload's layout never changes): a real-time
        # query reads every current upload's (`upload_encoding`, core.encodings).
        rows = self.db.cached_rows(
            ("upload_layout", upload_id),
            "SELECT field_bits FROM upload_layouts WHERE upload_id=?",
            (upload_id,),
            keep_empty=True,
        )
        return str(rows[0][0]) if rows else ""

    def schema_digest(self, upload_id: str) -> str:
        """The SHA-256 of the schema an upload was made with, as its client sent it; ""."""
        rows = self.db.query(
            "SELECT schema_digest FROM upload_schemas WHERE upload_id=?", (upload_id,)
        )
        return str(rows[0][0]) if rows else ""

    def two_server_part(self, upload_id: str) -> tuple[str, tuple[int, ...]] | None:
        """A two-server upload's name at S1 and S2 (project/member/tag) and its CLKs'
        widths in bits (record-level, then the fallback); None for a CLK upload."""
        rows = self.db.query(
            "SELECT name, bits FROM upload_twoserver WHERE upload_id=?", (upload_id,)
        )
        if not rows:
            return None
        return str(rows[0][0]), tuple(int(b) for b in str(rows[0][1]).split(","))

    def field_bits(self, upload_id: str) -> tuple[int, ...]:
        """Segment sizes of a field-level upload; () for a record-level one."""
        layout = self._layout(upload_id)
        if not layout or layout.startswith(FALLBACK_PREFIX):
            return ()
        return tuple(int(b) for b in layout.split(","))

    def fallback_bits(self, upload_id: str) -> int:
        """Bits of the fallback CLK at the end of each of a record-level upload's CLKs; 0: none."""
        layout = self._layout(upload_id)
        if not layout.startswith(FALLBACK_PREFIX):
            return 0
        return int(layout[len(FALLBACK_PREFIX) :].split(RULE_MARK)[0])

    def score_rule(self, upload_id: str) -> Rule:
        """The rule over both CLKs an upload was sent with (core.fallback); NO_RULE: none."""
        layout = self._layout(upload_id)
        if not layout.startswith(FALLBACK_PREFIX) or RULE_MARK not in layout:
            return NO_RULE
        return Rule.parse(layout.split(RULE_MARK)[1])

    def upload_encoding(self, upload: Upload) -> Encoding:
        """An upload's CLK length and fingerprint, with its fallback CLK and rule: what
        `core.encodings.check_compatible` compares."""
        return Encoding(
            upload.clk_bits, upload.fingerprint, self.fallback_bits(upload.id),
            self.score_rule(upload.id),
        )  # fmt: skip

    def upload(self, upload_id: str) -> Upload:
        rows = self.db.query(f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id=?", (upload_id,))
        if not rows:
            raise NotFound(f"no upload {upload_id!r}")
        return Upload(*rows[0])

    def _collect_garbage(self) -> None:
        """Delete CLK files no current upload or active run needs any more."""
        with self.db.lock:
            keep = {r[0] for r in self.db.query(NEEDED_UPLOADS)}
            for path in self.files.clks.iterdir():
                if upload_id_of(path) not in keep:
                    path.unlink(missing_ok=True)

    def _forget_uploads(
        self, tx: sqlite3.Connection, project: str, member: str | None = None
    ) -> list[str]:
        """Delete the rows of a project's (or one member's) uploads inside `tx`; their ids,
        whose files the caller unlinks once `tx` has committed (`_unlink_uploads`)."""
        where, args = (
            ("project=?", (project,))
            if member is None
            else ("project=? AND member=?", (project, member))
        )
        uploads = [r[0] for r in tx.execute(f"SELECT id FROM uploads WHERE {where}", args)]
        tx.execute(f"DELETE FROM uploads WHERE {where}", args)
        tx.execute(f"DELETE FROM upload_keys WHERE {where}", args)
        tx.executemany("DELETE FROM upload_layouts WHERE upload_id=?", [(u,) for u in uploads])
        tx.executemany("DELETE FROM upload_schemas WHERE upload_id=?", [(u,) for u in uploads])
        tx.executemany("DELETE FROM upload_twoserver WHERE upload_id=?", [(u,) for u in uploads])
        forget_outcomes(tx, project, member)
        settle(tx, project, member)  # (S1 and S2 forget every tag of the member)
        return uploads

    def _unlink_uploads(self, uploads: list[str]) -> None:
        for upload_id in uploads:
            self.files.clk_file(upload_id).unlink(missing_ok=True)
