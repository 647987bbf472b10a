"""What S1 and S2 keep of a batch until the combiner acknowledges it (core/batchkeep.py):
the same bytes again, bounded in number and time, dropped on acknowledgement or when its
uploads go, kept on disk across a restart, and a refusal that says why; and which pairs of
members S1 may be asked to resume (rpc/twoserver_resume.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from blindmatch.matcher import errors
from blindmatch.matcher.core.batchkeep import BatchKeep, Gone, Kept, pack, unpack
from blindmatch.matcher.rpc.twoserver_resume import resume_pairs
from blindmatch.matcher.rpc.twoserver_uploads import only_pairs
from blindmatch.protos import blindmatch_pb2 as pb


def kept(batch: str, members: tuple[str, str] = ("p/a/1", "p/b/1")) -> Kept:
    return Kept(batch, members, 3, batch.encode() * 10, rounds=7, sent=11, received=13)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_kept_batch_is_given_again_byte_for_byte_until_acknowledged() -> None:
    keep = BatchKeep()
    keep.put(kept("b1"))
    assert keep.get("b1").shares == b"b1" * 10
    assert keep.get("b1").shares == b"b1" * 10  # (a re-ask changes nothing)
    assert keep.acknowledge(["b1", "other"]) == 1
    with pytest.raises(Gone, match="batch 'b1': acknowledged"):
        keep.get("b1")
    with pytest.raises(Gone, match="batch 'nope': never evaluated here"):
        keep.get("nope")


def test_it_holds_at_most_its_bound_and_for_its_time() -> None:
    clock = Clock()
    keep = BatchKeep(clock=clock, max_batches=2, ttl=60.0)
    for b in ("b1", "b2", "b3"):
        keep.put(kept(b))
    assert keep.held() == 2 and keep.nbytes() == 2 * 20
    with pytest.raises(Gone, match="keeps at most 2 batches"):
        keep.get("b1")
    clock.now += 61
    with pytest.raises(Gone, match="expired"):
        keep.get("b2")
    assert keep.held() == 0


def test_a_batch_goes_with_its_uploads() -> None:
    keep = BatchKeep()
    keep.put(kept("b1", ("p/a/1", "p/b/1")))
    keep.put(kept("b2", ("p/a/1", "p/c/1")))
    assert keep.forget(["p/b/1"]) == 1
    with pytest.raises(Gone, match="its uploads were replaced or dropped"):
        keep.get("b1")
    assert keep.get("b2").members == ("p/a/1", "p/c/1")


def test_on_disk_it_survives_a_restart_and_a_torn_file_is_dropped(tmp_path: Path) -> None:
    keep = BatchKeep(tmp_path)
    keep.put(kept("b1"))
    keep.put(kept("b2"))
    keep.acknowledge(["b2"])
    (tmp_path / "torn.batch").write_bytes(b"\x05\x00")
    again = BatchKeep(tmp_path)
    got = again.get("b1")
    assert (got.shares, got.members, got.pairs, got.rounds, got.sent, got.received) == (
        b"b1" * 10, ("p/a/1", "p/b/1"), 3, 7, 11, 13)  # fmt: skip
    with pytest.raises(Gone):
        again.get("b2")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        next(p.name for p in tmp_path.iterdir() if p.name != "torn.batch")
    ]


def test_on_disk_only_it_holds_no_bytes_in_memory_and_reads_them_back(tmp_path: Path) -> None:
    # (each batch's inputs at a role with a data dir: S2's 5.2 MB a batch, up to 84 MB)
    keep = BatchKeep(tmp_path, memory=False)
    keep.put(kept("b1"))
    assert keep.held() == 1 and keep.nbytes() == 0
    assert keep.get("b1").shares == b"b1" * 10 and keep.get("b1").rounds == 7
    again = BatchKeep(tmp_path, memory=False)  # restarted: the headers read, not the bytes
    assert again.nbytes() == 0 and again.get("b1").shares == b"b1" * 10
    for path in tmp_path.iterdir():
        path.unlink()  # (its file gone from under it: refused, saying so)
    with pytest.raises(Gone, match="its kept file could not be read"):
        again.get("b1")
    assert BatchKeep(memory=False).memory  # (no directory: in memory, where else)


def test_resume_pairs_must_be_pairs_of_members_s1_proposes_parts_for() -> None:
    def request(pairs: list[tuple[int, int]], resumed: list[tuple[int, int]], only: bool = True
                ) -> pb.ProposeRequest:  # fmt: skip
        return pb.ProposeRequest(
            members=["p/a/1", "p/b/1", "p/c/1"], only_pairs=only,
            pairs=[pb.MemberPair(member_a=a, member_b=b) for a, b in pairs],
            resume_pairs=[pb.MemberPair(member_a=a, member_b=b) for a, b in resumed],
        )  # fmt: skip

    ok = request([(0, 1), (1, 2)], [(0, 1)])
    assert resume_pairs(ok, only_pairs(ok)) == {(0, 1)}
    for bad in (request([(0, 1)], [(1, 2)]), request([(0, 1)], [(0, 1), (0, 1)]),
                request([], [(0, 1)], only=False)):  # fmt: skip
        with pytest.raises(errors.InvalidArgument, match="resume_pairs"):
            resume_pairs(bad, only_pairs(bad))


def test_a_batch_s_inputs_are_kept_as_byte_strings_in_one_and_read_back_whole(
    tmp_path: Path,
) -> None:
    parts = (b"", b"batch", bytes(range(256)) * 3)
    assert unpack(pack(*parts)) == list(parts)
    keep = BatchKeep(tmp_path, max_batches=2)
    keep.put(Kept("b1", ("p/a/", "p/b/"), 3, pack(*parts)))
    assert keep.has("b1") and not keep.has("b2")
    assert unpack(BatchKeep(tmp_path).get("b1").shares) == list(parts)  # from disk
    keep.drop("b1", "its output shares are kept")
    with pytest.raises(Gone, match="its output shares are kept"):
        keep.get("b1")
    assert not BatchKeep(tmp_path).has("b1")


def test_its_folder_and_files_are_the_owners_only_whatever_the_umask(tmp_path: Path) -> None:
    """A kept batch is S1's or S2's output shares (or S2's inputs): 0700 and 0600, as the rest
    of a role's data dir, not the umask's 0755 and 0644; those an earlier version made by the
    umask are tightened when the role starts on them."""
    old = os.umask(0o022)
    try:
        keep = BatchKeep(tmp_path / "batches")
        keep.put(kept("b1"))
        (tmp_path / "batches").chmod(0o755)  # as an earlier version left them
        for f in (tmp_path / "batches").iterdir():
            f.chmod(0o644)
        BatchKeep(tmp_path / "batches").put(kept("b2"))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "batches").iterdir()}
    assert stat.S_IMODE((tmp_path / "batches").stat().st_mode) == 0o700
    assert len(modes) == 2 and set(modes.values()) == {0o600}, modes
