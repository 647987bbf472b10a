"""A member's two-server upload files (ENCODED/twoserver/, `encode --two-server`): written a
range of bands at a time and only inside the encode's temporary folder, read back a part at
a time by `upload`, and refused, naming the file, when damaged (client/encoding/sharedwrite.py,
sharedfiles.py, npzfile.py)."""

from __future__ import annotations

import errno
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from benchmarks.messy import write_exports
from blindmatch.cli.app import main
from blindmatch.client.encoding import sealing, sharing
from blindmatch.client.errors import InputError
from blindmatch.client.remote import twoserver_parts
from tests.support import STRONG_SECRET
from tests.twoserver_world import EXPORTS, SCHEMA

SECRET = b"k" * 32


def test_encode_two_server_leaves_no_folder_without_its_complete_shares(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`encode --two-server` renamed the finished ENCODED folder into place and only then
    wrote twoserver/ into it: a kill or a full disk while S1's file was written left a
    complete-looking folder with a cut-short share file (or none), or replaced a good
    earlier folder with one. The shares are now written in the temporary folder, before
    its one rename."""
    from blindmatch.client.encoding import npzfile

    secret = tmp_path / "project.secret"
    secret.write_text(STRONG_SECRET + "\n")
    export = write_exports(tmp_path, seed=12, size=300)[EXPORTS["west"]]
    common = ["encode", str(export.csv), "--schema", str(SCHEMA), "--secret-file", str(secret),
              "--mapping", str(export.mapping), "--two-server", "--quiet"]  # fmt: skip

    def disk_full(*args: object) -> bytes:
        raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "north.encoded"
    with monkeypatch.context() as m:
        m.setattr(npzfile.Spool, "add", disk_full)
        with pytest.raises(OSError, match="No space left"):
            main([*common, "--out", str(out)])
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".north.encoded")]
    # An earlier folder stays whole where the next encode fails.
    assert main([*common, "--out", str(out)]) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with monkeypatch.context() as m:
        m.setattr(npzfile.Spool, "add", disk_full)
        with pytest.raises(OSError, match="No space left"):
            main([*common, "--out", str(out)])
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before and Path("twoserver/s1.npz") in after
    assert len(sharing.read_shared(out / sharing.SHARED_FOLDER)) > 0


def test_upload_reads_the_share_files_a_part_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`upload` read S1's, S2's and the combiner's files whole (`read_shared`: S1's is about
    137 kB a record) and made the parts on top: 571 MB peak for 2,400 records, about 12 GB
    at 50,000. It now reads each part's rows from the file as the part is made
    (`open_shared`): making every part to S1 and S2 holds a small fraction of the files,
    the same parts as from the upload in memory."""
    from blindmatch.client.encoding import npzfile
    from blindmatch.client.encoding.sharedfiles import open_shared

    monkeypatch.setattr(twoserver_parts, "PART_BYTES", 256 * 1024)
    monkeypatch.setattr(sealing, "CHECK_KEYS", 1 << 14)
    monkeypatch.setattr(npzfile, "READ_BYTES", 256 * 1024)
    clks = np.random.default_rng(5).integers(0, 256, (300, 2 * 128), dtype=np.uint8)
    upload = sharing.shared_upload(clks, SECRET, sharing.RECOMMENDED, fallback_bits=1024)
    folder = tmp_path / "twoserver"
    sharing.write_shared(folder, upload)
    size = sum(f.stat().st_size for f in folder.iterdir())
    held = {role: [p.SerializeToString() for p in twoserver_parts.upload_parts("n", role, upload)]
            for role in ("s1", "s2")}  # fmt: skip
    del upload
    tracemalloc.start()
    try:
        sent = 0
        with open_shared(folder) as files:
            for role in ("s1", "s2"):
                for k, part in enumerate(twoserver_parts.upload_parts("n", role, files)):
                    assert part.SerializeToString() == held[role][k]
                    sent += part.ByteSize()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert sent > 0.9 * size
    assert peak < size / 8, (peak, size)  # 1.29x the files' size before (read whole)


def test_the_upload_written_a_range_at_a_time_is_shared_uploads() -> None:
    """`write_upload` (what `encode --two-server` runs) writes the arrays `shared_upload`
    makes, without holding them: the same band counts, keys and classes, tokens S2's seal
    key opens into the rows holding each key, shares that XOR to the CLKs; files `np.load`
    reads."""
    from blindmatch.client.encoding.sharedwrite import write_upload

    rng = np.random.default_rng(8)
    clks = rng.integers(0, 256, (150, 2 * 128), dtype=np.uint8)
    clks[7] = clks[3]  # two records share every band key
    plan = sharing.BandPlan(12, 40)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "twoserver"
        assert write_upload(folder, clks, SECRET, plan, fallback_bits=1024) == 150
        assert folder.stat().st_mode & 0o777 == 0o700
        assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
            "s1.npz": 0o600, "s2.npz": 0o600, "combiner.npz": 0o600}  # fmt: skip
        with np.load(folder / "s1.npz") as f:
            assert {"band_keys_0", "slots_1", "lacking", "shares_1"} <= set(f.files)
            assert not {"sealed_0", "sealed_1"} & set(f.files)  # sealed as `upload` sends
        got = sharing.read_shared(folder)
    want = sharing.shared_upload(clks, SECRET, plan, fallback_bits=1024)
    for k in range(2):
        a, b = got.s1.bands[k], want.s1.bands[k]
        assert np.array_equal(a.counts, b.counts) and np.array_equal(a.keys, b.keys)
        assert np.array_equal(a.classes, b.classes) and len(a.sealed) == len(b.sealed)
        assert np.array_equal(got.s1.shares[k] ^ got.s2.shares[k], clks[:, 128 * k : 128 * (k + 1)])
        pops = got.s1.popcounts[k] ^ got.s2.popcounts[k]
        assert np.array_equal(pops, want.combiner.popcounts[k])
        assert np.array_equal(got.combiner.popcounts[k], want.combiner.popcounts[k])
        opened = np.frombuffer(
            Cipher(algorithms.AES(got.s2.seal_key), modes.ECB()).decryptor().update(
                a.sealed.tobytes()), dtype=np.uint8).reshape(-1, 16)  # fmt: skip
        assert (opened[:, 4] == k).all() and (opened[:, 5:8] == list(sealing.TOKEN_TAG)).all()
        rows = opened[:, :4].copy().view("<u4").ravel()
        assert set(rows[rows != sealing.TOKEN_PAD]) == set(range(150))
    assert np.array_equal(got.s1.lacking, want.s1.lacking)


def test_a_damaged_or_cut_short_share_file_is_refused_naming_it(tmp_path: Path) -> None:
    """A byte changed in S1's file, or the file cut short (a copy that stopped), was read
    with numpy's zip error unhandled (a traceback: `BadZipFile`); it is refused naming the
    file."""
    clks = np.random.default_rng(2).integers(0, 256, (40, 2 * 128), dtype=np.uint8)
    folder = tmp_path / "twoserver"
    sharing.write_shared(folder, sharing.shared_upload(clks, SECRET, sharing.BandPlan(8, 16),
                                                       fallback_bits=1024))  # fmt: skip
    s1 = folder / "s1.npz"
    data = bytearray(s1.read_bytes())
    data[len(data) // 2] ^= 0xFF
    s1.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"s1\.npz: not a two-server upload file .*CRC"):
        sharing.read_shared(folder)
    s1.write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(InputError, match=r"s1\.npz: not a two-server upload file"):
        sharing.read_shared(folder)


def test_sealed_band_keys_checked_a_range_at_a_time_as_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`check_sealed` and `token_ends` read CHECK_KEYS keys at a time (an upload's file):
    the same answers as over the whole arrays, at every cut between steps, a band's first
    key at a cut included, and a key repeated across a cut refused."""
    keys = sharing.record_keys(
        np.random.default_rng(4).integers(0, 256, (30, 128), dtype=np.uint8), SECRET,
        sharing.BandPlan(4, 6),
    )[0]  # fmt: skip
    bands = sealing.seal_bands(keys, 0, b"s" * 32)
    whole = bands.offsets()[np.concatenate([[0], np.cumsum(bands.counts)])]
    for step in (1, 2, 3, 7, int(bands.counts[0]), 1 << 20):
        monkeypatch.setattr(sealing, "CHECK_KEYS", step)
        assert np.array_equal(sealing.token_ends(bands), whole)
        sealing.check_sealed(bands, "here")
        cut = int(bands.counts[0]) + 1  # within the second band
        repeated = bands.keys.copy()
        repeated[cut] = repeated[cut - 1]
        with pytest.raises(ValueError, match=r"band_keys \(here\): a band's keys repeat"):
            sealing.check_sealed(sealing.SealedBands(bands.counts, repeated, bands.classes,
                                                     bands.sealed), "here")  # fmt: skip


def test_s1_and_s2_join_an_uploads_parts_as_they_come_holding_it_about_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """S1 and S2 kept every part of an upload and joined each field's parts at its end
    (matcher/rpc/twoserver_uploads.py): their peak was twice what they then held (3.1 GB at
    S1 for 10,000 records). Each field now grows as its parts arrive: the peak of taking an
    upload in many parts is about what is held, the arrays the member's own."""
    from blindmatch.matcher.rpc.twoserver_uploads import read_upload

    monkeypatch.setattr(twoserver_parts, "PART_BYTES", 8 * 1024)
    clks = np.random.default_rng(6).integers(0, 256, (300, 2 * 128), dtype=np.uint8)
    plan = sharing.BandPlan(bits=20, bands=60)
    upload = sharing.shared_upload(clks, SECRET, plan, fallback_bits=1024)
    for role in ("s1", "s2"):
        tracemalloc.start()
        try:  # each part made as it is taken, as gRPC hands them over
            member, held = read_upload(twoserver_parts.upload_parts("n", role, upload), role)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        kept = sum(a.nbytes for a in held.arrays())
        sent = upload.s1 if role == "s1" else upload.s2
        assert (member, held.rows) == ("n", 300)
        for got, want in zip(held.shares + held.popshares, sent.shares + sent.popcounts,
                             strict=True):  # fmt: skip
            assert got.dtype == want.dtype and np.array_equal(got, want)
        if role == "s1":
            assert np.array_equal(held.lacking, upload.s1.lacking)
            for mine, theirs in zip(held.sealed, upload.s1.bands, strict=True):
                for f in ("counts", "keys", "classes", "sealed"):
                    want = getattr(theirs, f)
                    assert getattr(mine, f).dtype == want.dtype
                    assert np.array_equal(getattr(mine, f), want)
        assert peak < 1.4 * kept, (role, peak, kept)  # 2.0x before


def test_s1_keeps_an_uploads_tokens_and_band_keys_in_its_store_file_not_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S1 held every upload's tokens and band keys in memory (and, with a data dir, in its
    store's file as well): about 220 kB a record at 50,000 records, 11 GB. They now go to a
    file as the parts come (`Spool`, past SPILL_BYTES) and are held mapped from the store's
    file once written there: taking an upload, and starting again on the store, peak at a
    small share of them in Python's memory (the whole upload and more before), the arrays
    the member's own, and nothing is left in the store's folder but the upload's file."""
    import secrets

    from blindmatch.matcher.rpc import twoserver_role, twoserver_uploads

    monkeypatch.setattr(twoserver_parts, "PART_BYTES", 64 * 1024)
    monkeypatch.setattr(twoserver_uploads, "SPILL_BYTES", 16 * 1024, raising=False)
    clks = np.random.default_rng(7).integers(0, 256, (400, 2 * 128), dtype=np.uint8)
    upload = sharing.shared_upload(clks, SECRET, sharing.BandPlan(bits=20, bands=120),
                                   fallback_bits=1024)  # fmt: skip
    big = sum(b.keys.nbytes + b.sealed.nbytes for b in upload.s1.bands)
    key, member_key = secrets.token_urlsafe(24), secrets.token_urlsafe(24)

    def held_as_sent(held: twoserver_uploads.Held) -> None:
        assert held.rows == 400 and np.array_equal(held.lacking, upload.s1.lacking)
        for mine, theirs in zip(held.sealed, upload.s1.bands, strict=True):
            for f in ("counts", "keys", "classes", "sealed"):
                assert np.array_equal(getattr(mine, f), getattr(theirs, f))
        for got, want in zip(held.shares, upload.s1.shares, strict=True):
            assert np.array_equal(got, want)

    def measured(step: object) -> tuple[twoserver_role._Role, int]:
        role = twoserver_role._Role("s1", key, member_key)
        assert role.presorter is not None
        role.presorter.close()  # (its sort of the keys, 12 bytes a key, is not measured here)
        role.presorter = None
        parts = list(twoserver_parts.upload_parts("p/north/t", "s1", upload))  # (the member's)
        tracemalloc.start()
        try:
            role.keep(tmp_path / "s1")
            if step == "upload":
                role.upload(iter(parts), "p/north/t")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return role, peak

    role, peak = measured("upload")
    held_as_sent(role.held["p/north/t"])
    assert peak < 0.3 * big, (peak, big)  # over 1x before (the whole upload in memory)
    role.close()
    kept = sorted(p.name for p in (tmp_path / "s1" / "twoserver-s1-held").iterdir())
    stem = kept[0].removesuffix(".bin")  # the upload's F.bin, its spooled arrays' beside it
    assert kept == [f"{stem}.bin"] + [f"{stem}.sealed{k}.{f}.bin" for k in (0, 1)
                                      for f in ("keys", "sealed")], kept  # fmt: skip
    role, peak = measured("restart")
    held_as_sent(role.held["p/north/t"])
    assert peak < 0.3 * big, (peak, big)  # over 1x before (read whole)
    role.close()


def test_s1s_share_file_grows_with_the_records_not_faster(tmp_path: Path) -> None:
    """S1's share file held every copy of every key's tokens (16 bytes each: a key two to
    four records share 16 of them, 256 bytes), so it grew faster than the records as more
    of them came to share keys: 137 kB a record at 2,400, 223 kB at 50,000. It now holds each
    key's slots' rows (4 bytes a slot), sealed as `upload` sends them: bytes a record do not
    grow where a band plan of 8 bits makes records share keys (about 4 a key at 800), and
    S1 is sent what it was (the same parts but the tokens' fresh randomness)."""
    from blindmatch.client.encoding.sharedfiles import open_shared
    from blindmatch.client.encoding.sharedwrite import write_upload

    rng = np.random.default_rng(9)
    plan = sharing.BandPlan(8, 40)
    size = {}
    for n in (100, 800):
        clks = rng.integers(0, 256, (n, 2 * 128), dtype=np.uint8)
        write_upload(tmp_path / str(n), clks, SECRET, plan, fallback_bits=1024)
        size[n] = (tmp_path / str(n) / "s1.npz").stat().st_size / n
    assert size[800] < 1.1 * size[100], size  # 5.7 kB and 26 kB a record before
    want = sharing.shared_upload(clks, SECRET, plan, fallback_bits=1024)
    with open_shared(tmp_path / "800") as files:
        sent = list(twoserver_parts.upload_parts("n", "s1", files))
    for got, made in zip(sent, twoserver_parts.upload_parts("n", "s1", want), strict=True):
        assert (got.band_counts, got.band_keys, got.classes) == (
            made.band_counts, made.band_keys, made.classes)  # fmt: skip
        assert len(got.sealed) == len(made.sealed)
        assert got.sealed != made.sealed or not got.sealed  # sealed afresh


def test_s1_takes_an_uploads_parts_without_writing_them_to_disk_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """S1 wrote each part's tokens and band keys to its spool file as it took the part, so
    the upload waited on S1's disk (4.1 of S1's 9.7 s at 10,000 records). A writer thread of
    the spool's own now writes them, in chunks of several parts: the thread taking the parts
    makes no write, and the spool's writes are fewer than its parts; the arrays the same."""
    import threading

    from blindmatch.matcher.rpc import twoserver_uploads

    monkeypatch.setattr(twoserver_parts, "PART_BYTES", 16 * 1024)
    monkeypatch.setattr(twoserver_uploads, "SPILL_BYTES", 512 * 1024)
    clks = np.random.default_rng(5).integers(0, 256, (300, 128), dtype=np.uint8)
    upload = sharing.shared_upload(clks, SECRET, sharing.BandPlan(bits=20, bands=120))
    parts = list(twoserver_parts.upload_parts("p/north/t", "s1", upload))

    def writes(task: str) -> int:
        text = Path(f"/proc/self/{task}io").read_text()
        return int(text.split("syscw:")[1].split()[0])

    mine = f"task/{threading.get_native_id()}/"
    before = writes(mine), writes("")
    _, held = twoserver_uploads.read_upload(iter(parts), "s1", tmp_path)
    mine_wrote, all_wrote = writes(mine) - before[0], writes("") - before[1]
    assert mine_wrote == 0, mine_wrote  # one or more a part before
    assert len(parts) > 40 and 0 < all_wrote < len(parts) / 2, (all_wrote, len(parts))
    for f in ("counts", "keys", "classes", "sealed"):
        assert np.array_equal(getattr(held.sealed[0], f), getattr(upload.s1.bands[0], f))
    assert np.array_equal(held.shares[0], upload.s1.shares[0])
