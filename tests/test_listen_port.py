"""A port a server listens on is its own: a second server started on it is refused.

gRPC sets SO_REUSEPORT by default on Linux, so a second matcher (or look-up server, or
two-server role) started on a port a first one of the same user still listened on started
too, and the kernel shared the connections between the two: a client reached either, at
random (found walking docs/operations.md on loopback with the README's matcher still
running: `project create` was refused UNAUTHENTICATED by the other matcher, then not)."""

from __future__ import annotations

from pathlib import Path

import pytest

from blindmatch.matcher.rpc.lookup_service import create_lookup_server
from blindmatch.matcher.rpc.twoserver_service import create_role
from blindmatch.matcher.server import create_server
from tests.support import ADMIN_TOKEN


def test_a_second_server_on_a_port_in_use_is_refused(tmp_path: Path) -> None:
    first = create_server("127.0.0.1:0", tmp_path / "first", ADMIN_TOKEN)
    try:
        taken = f"127.0.0.1:{first.port}"
        with pytest.raises(OSError, match="could not listen on"):
            create_server(taken, tmp_path / "second", ADMIN_TOKEN).stop()
        with pytest.raises(OSError, match="could not listen on"):
            create_role("s2", taken, "k" * 43, "m" * 43).stop()
        with pytest.raises(OSError, match="could not listen on"):
            create_lookup_server(taken, None, 0, 1, key="k" * 43).stop()
    finally:
        first.stop()
