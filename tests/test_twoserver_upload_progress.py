"""`blindmatch upload` in a project in two-server mode shows its progress on stderr, as a CLK
upload does (docs/operations.md "A project in two-server mode", *A member's memory and
disk*): the megabytes sent to S1 and S2 as they go, then a line while each stores it; none
with --quiet. Before, nothing showed until S1 held the whole upload (about 42 kB a record: a
15,000-record member's took some 30 s on loopback, docs/performance.md "Two-server mode
walked through the CLI at 20,000 people")."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests import twoserver_world
from tests.twoserver_world import World, create

pytestmark = pytest.mark.server

world = twoserver_world.world  # the fixture
encoded = twoserver_world.encoded  # the fixture


def test_a_two_server_upload_shows_the_megabytes_sent_to_s1_and_s2_unless_quiet(
    world: World, encoded: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    project = create(world, "progress", "two-server")
    token = project.tokens["north"]
    capsys.readouterr()
    assert world.cli("upload", str(encoded["north"]), "--project", "progress", token=token) == 0
    err = capsys.readouterr().err
    sent = [int(m) for m in re.findall(r"uploading to S1: (\d+) MB", err)]
    s1_file = (encoded["north"] / "twoserver" / "s1.npz").stat().st_size
    assert sent and max(sent) >= s1_file // 2**20 // 2, err  # the bulk of S1's part counted
    assert "waiting for S1 to store it" in err and "waiting for S2 to store it" in err
    assert err.index("waiting for S1") < err.index("S2 to store")  # S1's part goes first
    assert world.cli("upload", str(encoded["north"]), "--project", "progress", "--quiet",
                     token=token) == 0  # fmt: skip
    assert "uploading to" not in capsys.readouterr().err
