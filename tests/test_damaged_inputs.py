"""A damaged upload file is never used: the run fails saying whose upload and what to do.

Before a run compares anything it checks every input's file against the SHA-256 the
upload was acknowledged with; the scrub and `admin check` find the same damage without a
run. Overwritten rows, one flipped bit, a truncated file and a deleted one are all refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.knownclks import CLK_BYTES, population, write
from blindmatch.client import ProjectTokens
from blindmatch.matcher.storage.integrity import check_data_dir
from tests.support import Matcher


def overwrite_rows(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[10 * CLK_BYTES : 60 * CLK_BYTES] = bytes(50 * CLK_BYTES)  # 50 rows of zeros
    path.write_bytes(data)


def flip_one_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(data)


def truncate(path: Path) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 3 * CLK_BYTES)


def delete(path: Path) -> None:
    path.unlink()


DAMAGE: dict[str, tuple[Callable[[Path], None], str]] = {
    "overwritten rows": (overwrite_rows, "no longer match the SHA-256"),
    "a flipped bit": (flip_one_bit, "no longer match the SHA-256"),
    "truncated": (truncate, "holds 25216 bytes, not the 25600 of the 200 CLKs"),
    "deleted": (delete, "its stored file is missing"),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_input_fails_the_run_naming_the_member_who_must_upload_again(
    matcher: Matcher, project: ProjectTokens, tmp_path: Path, kind: str
) -> None:
    damage, reason = DAMAGE[kind]
    north, south = population(2, 200, 0.5, seed=5)
    with matcher.member(project.tokens["north"]) as client:
        uploaded = client.upload("trial", write(north, tmp_path / "north"))
    with matcher.member(project.tokens["south"]) as client:
        client.upload("trial", write(south, tmp_path / "south"))
    damage(matcher.data_dir / "clks" / f"{uploaded.upload_id}.bin")

    # Found without a run: by the scrub, and by `admin check`.
    found = matcher.server.scrubber.scrub().damaged
    assert [(u.member, why) for u, why in found] == [("north", found[0][1])]
    assert reason in found[0][1]
    check = check_data_dir(matcher.data_dir)
    assert not check.ok
    assert any(uploaded.upload_id in p and "north" in p for p in check.problems), check.render()

    with matcher.member(project.tokens["south"]) as client:
        run = client.start_run("trial")
        final = list(client.watch_run("trial", run.run_id))[-1]
        assert final.state == "failed"
        assert final.message.startswith("north's upload is damaged on the matcher (")
        assert reason in final.message
        assert "north must upload its data again (`blindmatch upload`)" in final.message
        assert str(matcher.data_dir) not in final.message and ".bin" not in final.message
        with pytest.raises(Exception, match="no finished run in this project yet"):
            client.results("trial")  # nothing was reported "done"

    # The member re-uploads, and the next run is done.
    with matcher.member(project.tokens["north"]) as client:
        client.upload("trial", write(north, tmp_path / "north-again"))
        run = client.start_run("trial")
        assert list(client.watch_run("trial", run.run_id))[-1].state == "done"
    assert check_data_dir(matcher.data_dir).ok
