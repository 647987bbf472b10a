"""`blindmatch admin backup` of a two-server role beside members uploading and forgetting
(docs/operations.md "Backing up S1 and S2"). The role's held store and its audit log are two
SQLite files; the role logs an upload before it stores it, and drops a forgotten upload
before it logs the `Forget`. Snapshotted one after the other, a member's new upload between
the two failed the copy's check (its log's last entry named another SHA-256; 24 backups of
30 failed so beside a member uploading again and again), and a `Forget` between them left
an upload its own log says was forgotten, which a restored role would hold again. Read at
one moment (backup.py `read_together`), every backup passes, and none holds a forgotten
upload; a copy made the old way is named by `admin check`."""

from __future__ import annotations

import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import grpc
import numpy as np
import pytest

from blindmatch.client.encoding import sharing as client
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core import tickets
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from blindmatch.matcher.storage.backup import snapshot
from blindmatch.matcher.storage.role_backup import backup_role_dir
from blindmatch.matcher.storage.role_check import RoleFiles, check_role_dir
from blindmatch.matcher.storage.role_restore import restore_role_dir
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests.support import auth

pytestmark = [pytest.mark.server, pytest.mark.on_disk]  # (tests/conftest.py `tmp_path`)
PARTIES_KEY, MEMBER_KEY = "the parties' key of this test", "the members' key"
# west uploads again and again under one name: a stand-alone member's (no project: the
# members' key replaces what a name holds), since a project member's ticket admits one upload
# to each role (twoattack) and a new upload comes under a new ticket's name.
WEST, EAST = "west", "q/east/0000000b"
BACKUPS = 12
RNG = np.random.default_rng(3)
UPLOADS = [
    client.shared_upload(RNG.integers(0, 256, (40, 128), dtype=np.uint8), b"s",
                         client.BandPlan(4, 4))
    for _ in range(2)
]  # fmt: skip


@pytest.fixture
def s2(tmp_path: Path) -> Iterator[RunningRole]:
    role = create_role("s2", "127.0.0.1:0", PARTIES_KEY, MEMBER_KEY, data_dir=tmp_path / "s2")
    try:
        yield role
    finally:
        role.stop(grace=None)


def send(role: RunningRole, name: str, up: client.SharedUpload) -> None:
    """`up` under `name`: a project member's with a ticket of its own, a stand-alone
    member's (no "/") with the members' key."""
    key = tickets.issue(MEMBER_KEY, name, int(time.time()) + 600) if "/" in name else MEMBER_KEY
    with RoleClient("s2", f"127.0.0.1:{role.port}", key) as c:
        assert c.upload(name, up) == len(up)


def forget(role: RunningRole, project: str, member: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{role.port}") as channel:
        reply = pb_grpc.TwoServerSharesStub(channel).Forget(
            pb.ForgetRequest(project=project, member=member), metadata=auth(PARTIES_KEY)
        )
    return int(reply.dropped)


def logged(data_dir: Path, action: str, name: str) -> list[int]:
    """The seqs of `action` entries that name upload `name` (as the member, or dropped)."""
    path = RoleFiles(data_dir, "s2").audit_db
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT seq, member, detail FROM audit WHERE action=? ORDER BY seq",
                          (action,)).fetchall()  # fmt: skip
    return [seq for seq, member, detail in rows if name == member or name in detail]


def test_backups_beside_uploads_and_forgets_pass_their_check_and_hold_no_forgotten_upload(
    s2: RunningRole, tmp_path: Path
) -> None:
    stop, done = threading.Event(), {"uploads": 0, "forgets": 0}

    def reupload() -> None:  # west's upload, replaced by another again and again
        while not stop.is_set():
            send(s2, WEST, UPLOADS[done["uploads"] % 2])
            done["uploads"] += 1

    def upload_and_forget() -> None:
        while not stop.is_set():
            send(s2, EAST, UPLOADS[0])
            assert forget(s2, "q", "east") == 1
            done["forgets"] += 1

    threads = [threading.Thread(target=reupload), threading.Thread(target=upload_and_forget)]
    for thread in threads:
        thread.start()
    backups = []

    def churned(since: dict[str, int]) -> None:
        """Wait for an upload and a forget after `since`: churn beside every backup, however
        quick the backups are."""
        while any(done[k] <= since[k] for k in since) and all(t.is_alive() for t in threads):
            stop.wait(0.01)

    try:
        churned({"uploads": 0, "forgets": 0})
        for i in range(BACKUPS):  # (each raises if its copy fails its check)
            before = dict(done)
            backups.append(backup_role_dir(tmp_path / "s2", tmp_path / "backups" / f"b{i}", "s2"))
            churned(before)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert done["uploads"] > BACKUPS and done["forgets"] > BACKUPS // 2  # (churn throughout)
    for made in backups:
        report = check_role_dir(made.dest, "s2", audit_key_file=tmp_path / "s2" /
                                "twoserver-s2.audit.key")  # fmt: skip
        assert report.ok, report.render()
    # Restored, a backup's role holds west's upload, and east only if its log says so.
    restored = tmp_path / "restored"
    shutil.copytree(backups[-1].dest, restored)
    shutil.copy2(tmp_path / "s2" / "twoserver-s2.audit.key", restored)
    role = create_role("s2", "127.0.0.1:0", PARTIES_KEY, MEMBER_KEY, data_dir=restored)
    try:
        held = set(role.service.held)
    finally:
        role.stop(grace=None)
    uploads = logged(restored, "twoserver.upload", EAST)
    forgets = logged(restored, "twoserver.forget", EAST)
    assert WEST in held
    if EAST in held:  # (not held: forgotten, or logged and in flight at the backup's moment)
        assert uploads and (not forgets or forgets[-1] < uploads[-1])


def copied_apart(source: Path, dest: Path, between: Callable[[], None]) -> Path:
    """The old backup: the held store snapshotted, `between`, then the audit log."""
    src, out = RoleFiles(source, "s2"), RoleFiles(dest, "s2")
    dest.mkdir(mode=0o700)
    shutil.copytree(src.folder, out.folder)
    snapshot(src.held_db, out.held_db)
    between()
    snapshot(src.audit_db, out.audit_db)
    return dest  # (its key, as a backup's, kept apart: the live dir's)


def test_a_copy_holding_an_upload_its_log_says_was_forgotten_is_named(
    s2: RunningRole, tmp_path: Path
) -> None:
    send(s2, WEST, UPLOADS[0])
    send(s2, EAST, UPLOADS[1])
    copy = copied_apart(tmp_path / "s2", tmp_path / "copy",
                        lambda: forget(s2, "q", "east"))  # fmt: skip
    report = check_role_dir(copy, "s2", audit_key_file=tmp_path / "s2" / "twoserver-s2.audit.key")
    assert not report.ok
    assert [p for p in report.problems if f"upload {EAST!r}" in p and "forgotten at entry" in p]
    assert check_role_dir(tmp_path / "s2", "s2").ok  # (the live dir: dropped, then logged)
    # `admin restore` of such a copy drops the upload its own log says was forgotten.
    restored = restore_role_dir(copy, tmp_path / "restored", "s2",
                                key_file=tmp_path / "s2" / "twoserver-s2.audit.key")  # fmt: skip
    assert restored.dropped == [EAST] and restored.uploads == 1


def test_an_upload_logged_after_the_copy_of_its_store_is_noted_not_a_problem(
    s2: RunningRole, tmp_path: Path
) -> None:
    send(s2, WEST, UPLOADS[0])
    copy = copied_apart(tmp_path / "s2", tmp_path / "copy",
                        lambda: send(s2, WEST, UPLOADS[1]))  # fmt: skip
    report = check_role_dir(copy, "s2", audit_key_file=tmp_path / "s2" / "twoserver-s2.audit.key")
    assert report.ok, report.render()
    assert [r for r in report.repairs if f"upload {WEST!r} logged again" in r]
    # Restored, the upload it holds is dropped: the member's newer one (acknowledged after
    # the copy) is not in it, and the older must not stand in for it.
    restored = restore_role_dir(copy, tmp_path / "restored", "s2",
                                key_file=tmp_path / "s2" / "twoserver-s2.audit.key")  # fmt: skip
    assert restored.dropped == [WEST] and restored.uploads == 0
