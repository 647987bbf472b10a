"""A two-server upload's progress when S1 refuses it as busy and `RoleClient` sends it again
(client/remote/twoserver.py `_upload_when_free`): the bytes of the refused stream are not
counted again on top of the next one's. A real S1 and S2 on loopback (tests/twoserver_world.py),
stderr captured with progress on."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

from blindmatch.client.encoding.sharing import SHARED_FOLDER, read_shared
from blindmatch.client.progress import size_text
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.client.remote.twoserver_parts import part_bytes, upload_parts
from tests.twoserver_world import (  # noqa: F401  (the fixtures)
    World,
    encoded,
    member_ticket,
    uploads_held_open,
    world,
)


def test_an_upload_sent_again_after_a_busy_refusal_counts_its_bytes_once(
    world: World,  # noqa: F811
    encoded: dict[str, Path],  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Before 2026-12-07 the count went on from the refused stream's: the parts gRPC had
    read of it were counted, then all of them again. Now the count starts afresh, said so."""
    s1 = world.roles["s1"]
    shared = read_shared(encoded["west"] / SHARED_FOLDER)
    total = sum(part_bytes(p) for p in upload_parts("m", "s1", shared))
    stored: list[int] = []
    failed: list[BaseException] = []

    def send() -> None:
        name = "one/west/00000001"
        try:
            with RoleClient("s1", f"127.0.0.1:{s1.port}", member_ticket(name)) as c:
                stored.append(c.upload(name, shared, progress=True))
        except BaseException as exc:  # reported below
            failed.append(exc)

    capsys.readouterr()
    sender = threading.Thread(target=send)
    with uploads_held_open(s1) as done:
        sender.start()
        while s1.service.upload_guard.refused == 0 and sender.is_alive():
            done.wait(0.02)  # refused as busy at least once
    sender.join(timeout=60)
    err = capsys.readouterr().err
    assert not failed and stored == [len(shared)], failed
    desc = r"uploading to S1 \(bytes as sent, band keys sealed\)"
    assert re.search(rf"{desc} again \(S1 was busy\)", err), err
    counts = re.findall(rf"{desc}(?: again \(S1 was busy\))?: (.+)", err)
    assert counts and all(f" of {size_text(total)} (" in c for c in counts), err
    assert counts[-1].startswith(f"{size_text(total)} of {size_text(total)} (100%)"), err
