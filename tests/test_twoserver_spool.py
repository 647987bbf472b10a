"""S1 with `--data-dir` writes an upload to its disk once: its spool writes the band keys and
tokens straight into the store's own files as the parts come, hashed as written
(rpc/twoserver_spool.py `Kept`), renamed into place beside `F.bin` when the upload is whole
(storage/role_store.py `write`'s `apart`, storage/role_files.py). The upload is held, kept,
restored, backed up, checked and forgotten with its several files; a crash leaves nothing
the store would load."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from blindmatch.client.encoding import sharing
from blindmatch.client.remote import twoserver_parts
from blindmatch.matcher.errors import StartupRefused
from blindmatch.matcher.rpc import twoserver_role, twoserver_uploads
from blindmatch.matcher.storage.role_backup import backup_role_dir
from blindmatch.matcher.storage.role_check import check_role_dir
from blindmatch.matcher.storage.role_store import RoleStore
from blindmatch.protos import blindmatch_pb2 as pb

pytestmark = pytest.mark.on_disk  # kills or races: tmp_path on the disk (tests/conftest.py)
SECRET = b"k" * 32
KEY, MEMBER_KEY = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
NAME = "p/north/t"
SPOOLED = [f"sealed{k}.{f}" for k in (0, 1) for f in ("keys", "sealed")]


def _upload() -> sharing.SharedUpload:
    clks = np.random.default_rng(7).integers(0, 256, (400, 2 * 128), dtype=np.uint8)
    return sharing.shared_upload(clks, SECRET, sharing.BandPlan(bits=20, bands=120),
                                 fallback_bits=1024)  # fmt: skip


def _s1(data_dir: Path) -> twoserver_role._Role:
    """S1 keeping what it holds in `data_dir` (its presorter off: not what is looked at)."""
    role = twoserver_role._Role("s1", KEY, MEMBER_KEY)
    assert role.presorter is not None
    role.presorter.close()
    role.presorter = None
    role.keep(data_dir)
    return role


def _as_sent(held: twoserver_uploads.Held, upload: sharing.SharedUpload) -> None:
    assert held.rows == 400 and np.array_equal(held.lacking, upload.s1.lacking)
    for mine, theirs in zip(held.sealed, upload.s1.bands, strict=True):
        for f in ("counts", "keys", "classes", "sealed"):
            assert np.array_equal(getattr(mine, f), getattr(theirs, f)), f
    for got, want in zip(held.shares + held.popshares, upload.s1.shares + upload.s1.popcounts,
                         strict=True):  # fmt: skip
        assert np.array_equal(got, want)


def _wrote() -> int:
    """The bytes this process has passed to write calls so far (every thread's)."""
    return int(Path("/proc/self/io").read_text().split("wchar:")[1].split()[0])


@pytest.fixture(autouse=True)
def _small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of 64 kB, and fields spooled past 16 kB (64 MB in production)."""
    monkeypatch.setattr(twoserver_parts, "PART_BYTES", 64 * 1024)
    monkeypatch.setattr(twoserver_uploads, "SPILL_BYTES", 16 * 1024)


def test_s1_with_a_data_dir_writes_an_upload_to_disk_once(tmp_path: Path) -> None:
    """S1 with a data dir wrote an upload twice: its spool (the band keys and tokens, as the
    parts came), then every array again to the store's file, the spool read back for the
    digest: 2.0x the upload's bytes through its write calls. The spool now writes into the
    store's own files, hashed as written: about 1x; held as sent, and after a restart."""
    upload = _upload()
    parts = list(twoserver_parts.upload_parts(NAME, "s1", upload))
    role = _s1(tmp_path / "s1")
    before = _wrote()
    role.upload(iter(parts), NAME)
    wrote = _wrote() - before
    size = sum(a.nbytes for a in role.held[NAME].arrays())
    assert size < wrote < 1.1 * size, (wrote, size)  # 1.95x before
    _as_sent(role.held[NAME], upload)
    role.close()
    role = _s1(tmp_path / "s1")  # restarted on its store: the same upload
    _as_sent(role.held[NAME], upload)
    role.close()


CRASH = """
import os, signal, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_twoserver_spool import NAME, _s1, _upload
from blindmatch.client.remote import twoserver_parts
from blindmatch.matcher.rpc import twoserver_uploads
from blindmatch.matcher.storage.role_store import RoleStore
twoserver_parts.PART_BYTES, twoserver_uploads.SPILL_BYTES = 64 * 1024, 16 * 1024
role = _s1(__import__("pathlib").Path({data_dir!r}))
parts = list(twoserver_parts.upload_parts(NAME, "s1", _upload()))
def kill(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
def cut_short():
    for n, part in enumerate(parts):
        if n == len(parts) * 2 // 3:
            kill()
        yield part
if {where!r} == "put":  # every file written, fsynced and renamed; its row not committed
    RoleStore.put = kill
role.upload(cut_short() if {where!r} == "parts" else iter(parts), NAME)
"""


@pytest.mark.parametrize("where", ["parts", "put"])
def test_a_crash_mid_upload_leaves_nothing_the_store_loads(tmp_path: Path, where: str) -> None:
    """S1 killed (SIGKILL) two thirds through an upload's parts, its spool's files half
    written in the store's folder, or once every file of the upload is written and renamed
    into place but before its row commits: the next start holds no upload, deletes the
    files, and `admin check` calls them repaired at start, not a problem."""
    data_dir = tmp_path / "s1"
    script = CRASH.format(tests=str(Path(__file__).parent), data_dir=str(data_dir), where=where)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert done.returncode == -9, done.stderr
    left = sorted(p.name for p in (data_dir / "twoserver-s1-held").iterdir())
    suffix = ".tmp" if where == "parts" else ".bin"
    assert left and all(n.endswith(suffix) for n in left), left
    report = check_role_dir(data_dir, "s1")
    # Each file of the upload is named; beside them, a -wal the kill left (when it held
    # changes) is said to be folded in at the next start (storefix), never a problem.
    held = [r for r in report.repairs if "twoserver-s1-held/" in r]
    assert report.ok and len(held) == len(left), report.render()
    rest = [r for r in report.repairs if r not in held]
    assert all("-wal: left by a process that did not close" in r for r in rest), report.render()
    store = RoleStore(data_dir, "s1")
    restored = store.load(twoserver_uploads.held_from)
    store.close()
    assert restored.held == {} and restored.discarded == len(left)
    assert not list((data_dir / "twoserver-s1-held").iterdir())


def test_an_upload_in_several_files_is_backed_up_checked_forgotten_and_restored(
    tmp_path: Path,
) -> None:
    """`admin backup` copies each of the upload's files (F.bin and its spooled arrays'),
    `admin check` passes the copy and names an apart file damaged in it, which the role's
    start refuses naming it too; `Forget` deletes every file; a role started on the backup
    holds the upload as sent."""
    upload = _upload()
    role = _s1(tmp_path / "s1")
    role.upload(twoserver_parts.upload_parts(NAME, "s1", upload), NAME)
    held = tmp_path / "s1" / "twoserver-s1-held"
    files = sorted(p.name for p in held.iterdir())
    stem = files[0].removesuffix(".bin")
    assert files == [f"{stem}.bin"] + [f"{stem}.{n}.bin" for n in SPOOLED], files
    key = tmp_path / "s1.audit.key"  # (kept apart from the backup, then restored beside it)
    report = backup_role_dir(tmp_path / "s1", tmp_path / "backup", "s1", key_out=key)
    shutil.copy2(key, tmp_path / "backup" / "twoserver-s1.audit.key")
    assert report.uploads == 5 and report.bytes_copied == sum(
        (held / f).stat().st_size for f in files
    )
    role.forget(pb.ForgetRequest(project="p", member="north"))
    assert not list(held.iterdir())
    role.close()
    checked = check_role_dir(tmp_path / "backup", "s1")
    assert checked.ok and checked.uploads_checked == 1, checked.render()
    role = _s1(tmp_path / "backup")
    _as_sent(role.held[NAME], upload)
    role.close()
    damaged = tmp_path / "backup" / "twoserver-s1-held" / f"{stem}.sealed1.sealed.bin"
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 1
    damaged.write_bytes(bytes(data))
    checked = check_role_dir(tmp_path / "backup", "s1")
    assert len(checked.problems) == 1 and f"{damaged} does not hash" in checked.problems[0]
    with pytest.raises(StartupRefused, match="will not start on part of what it held") as refused:
        _s1(tmp_path / "backup")
    assert f"{damaged} does not hash to the SHA-256 stored with it" in str(refused.value)


def test_an_upload_refused_midway_or_a_querys_leaves_nothing_in_the_store(tmp_path: Path) -> None:
    """An upload refused at a part after its fields were spooled into the store's files (a
    part naming another member) deletes them; a query's records, spooled there too, are
    held for the query (as sent) but their files go at once: the folder stays empty."""
    from blindmatch.matcher.core.tickets import query_name
    from blindmatch.matcher.errors import InvalidArgument

    upload = _upload()
    parts = list(twoserver_parts.upload_parts(NAME, "s1", upload))
    parts[len(parts) * 2 // 3].member = "p/south/t"
    role = _s1(tmp_path / "s1")
    held = tmp_path / "s1" / "twoserver-s1-held"
    with pytest.raises(InvalidArgument, match="one member an upload"):
        role.upload(iter(parts), NAME)
    assert not list(held.iterdir()) and not role.held
    query = query_name("p", "north", "q1")
    role.upload(twoserver_parts.upload_parts(query, "s1", upload), query)
    assert not list(held.iterdir())
    _as_sent(role.held[query], upload)
    role.close()
    store = RoleStore(tmp_path / "s1", "s1")
    assert store.load(twoserver_uploads.held_from).held == {}
    store.close()
