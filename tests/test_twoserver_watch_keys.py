"""A two-server watch whose records S1 holds without their band keys (sent
`band_keys_withheld`, which `project_watch` never does) is compared with a later upload S1
compares it whole against, and told so; and where S1 blocks it against a later upload (so
needs the keys it lacks) the watch ends FAILED_PRECONDITION `band_keys_needed`, naming the
partner, rather than passing the upload over in silence (matcher/realtime/twowatch.py). A
real matcher, S1 and S2 on loopback; S1's caps set on its service between the uploads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from benchmarks.exports import Export
from blindmatch.client.encoding.encoded import read_encoded
from blindmatch.client.remote import twoserver_realtime
from blindmatch.matcher.core import exhaustive
from blindmatch.protos.wire import BAND_KEYS_NEEDED
from tests.test_twoserver_project import World, create, world  # noqa: F401
from tests.test_twoserver_watch import Watching, members, until  # noqa: F401

pytestmark = pytest.mark.server


def test_a_watch_s1_holds_without_band_keys_says_so_where_an_upload_needs_them(
    world: World,  # noqa: F811
    members: dict[str, tuple[Export, Path]],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    two = create(world, "shares", "two-server")
    with world.operator() as op:
        op.set_query_limits("shares", allow_watch=True)
    assert world.cli("upload", str(members["north"][1]), "--project", "shares",
                     token=two.tokens["north"]) == 0  # fmt: skip
    real = twoserver_realtime.send_records

    def keyless(*args: Any, **kwargs: Any) -> Any:
        return real(*args[:8], keys=False)  # the watch's records to S1 without band keys

    monkeypatch.setattr(twoserver_realtime, "send_records", keyless)
    s1 = world.roles["s1"].service
    south = members["south"][1]
    bound = 10 * read_encoded(south).record_count  # records S1 compares a watch whole against
    s1.exhaustive, s1.small_member = exhaustive.QUERY_STREAM * bound, 0
    watch = Watching(world, two.tokens["north"], south, [0, 1])
    try:
        held = s1.held[watch.watch.name]
        assert held.records == 2 and not held.sealed  # no band key at S1
        # South's upload within S1's bound: compared whole, both records told.
        assert world.cli("upload", str(south), "--project", "shares",
                         token=two.tokens["south"]) == 0  # fmt: skip
        until(lambda: len(watch.events) == 2 or watch.error is not None)
        assert watch.error is None and {e.partner for e in watch.events} == {"south"}
        # S1 now blocks every pair: south's next upload needs the keys S1 lacks.
        s1.exhaustive = 0
        assert world.cli("upload", str(south), "--project", "shares",
                         token=two.tokens["south"]) == 0  # fmt: skip
        until(lambda: watch.error is not None)
        assert BAND_KEYS_NEEDED in str(watch.error) and "south" in str(watch.error)
        assert len(watch.events) == 2
    finally:
        watch.close()
