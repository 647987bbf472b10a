"""A member's band over a message's size, uploaded to S1 cut over several parts
(client/remote/twoserver_parts.py `_sealed_parts`, SharedPart.band_continued; S1 joins them,
matcher/rpc/twoserver_uploads.py `_sealed_part`). Whole bands a part sent one band of 500,000
records' sealed keys as one 107 MB message, over the parties' 64 MiB limit: the upload failed
`RESOURCE_EXHAUSTED ... Sent message larger than max` past about 313,000 records. Here the
same at a small scale: the member's channel to the roles limited to 8 kB, its parts to 2 kB,
and members of 350 records whose bands are about 14 kB each (and one of 60, 2.5 kB)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from blindmatch.client.encoding import sharing
from blindmatch.client.encoding.sharedfiles import open_shared
from blindmatch.client.encoding.sharedwrite import write_upload
from blindmatch.client.remote import peers, twoserver_parts
from blindmatch.client.remote.twoserver import RoleClient
from blindmatch.matcher.core import tworun, twoserver
from blindmatch.matcher.core.twoblocking import open_tokens
from blindmatch.matcher.rpc.twoserver_service import RunningRole, create_role
from tests.support import MESSY_SECRET

pytestmark = pytest.mark.server

THRESHOLD = 0.8
PLAN = sharing.BandPlan(bits=20, bands=30)
NAMES = ("north", "south", "west")
MEMBER_KEY = "the members' key"
LIMIT = 8 * 1024  # the member's channel's message limit here (64 MiB in production)
Clks = npt.NDArray[np.uint8]


@pytest.fixture
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    """Parts of 2 kB, and the member's channels to the roles refusing to send more than
    LIMIT a message (the limit a 107 MB band met, at a scale a test reaches)."""
    monkeypatch.setattr(twoserver_parts, "PART_BYTES", 2 * 1024)
    options = [(k, LIMIT if k.endswith("message_length") else v) for k, v in peers.CHANNEL_OPTIONS]
    monkeypatch.setattr(peers, "CHANNEL_OPTIONS", options)


@pytest.fixture
def roles() -> Iterator[tuple[str, dict[str, RunningRole]]]:
    """The parties' key; S2, then S1 (which calls S2), then the combiner (which calls both)."""
    key = secrets.token_urlsafe(16)
    running: dict[str, RunningRole] = {}
    try:
        running["s2"] = create_role("s2", "127.0.0.1:0", key, MEMBER_KEY)
        s2 = f"127.0.0.1:{running['s2'].port}"
        running["s1"] = create_role("s1", "127.0.0.1:0", key, MEMBER_KEY, s2=s2)
        running["combiner"] = create_role("combiner", "127.0.0.1:0", key, MEMBER_KEY,
                                          s1=f"127.0.0.1:{running['s1'].port}", s2=s2)  # fmt: skip
        yield key, running
    finally:
        for role in running.values():
            role.stop(grace=None)


def test_a_band_over_the_message_limit_is_cut_over_parts_and_the_run_gives_the_same_links(
    small: None,
    roles: tuple[str, dict[str, RunningRole]],
    messy_members: tuple[list[Clks], int],
    tmp_path: Path,
) -> None:
    """Each member's upload written as `encode --two-server` writes it (its tokens sealed
    as they are sent, `SlotTokens`) goes to S1, S2 and the combiner in parts under the
    limit (whole bands a part: refused, the member's client's `Sent message larger than
    max`); S1 holds each band whole (the same counts, keys and classes, tokens opening to
    the same rows as the upload made in memory), and the run's links are the in-process
    run's over the in-memory uploads."""
    key, running = roles
    datasets, fallback_bits = messy_members
    want = [sharing.shared_upload(d, MESSY_SECRET, PLAN, fallback_bits) for d in datasets]
    smallest = min(int(b.offsets()[b.counts[0]] + 9 * b.counts[0]) for b in want[0].s1.bands)
    assert smallest > LIMIT  # a band's keys: more than a message's worth (about 14 kB)
    with ExitStack() as stack:
        for name, clks in zip(NAMES, datasets, strict=True):
            write_upload(tmp_path / name, clks, MESSY_SECRET, PLAN, fallback_bits)
            files = stack.enter_context(open_shared(tmp_path / name))
            for role, r in running.items():
                with RoleClient(role, f"127.0.0.1:{r.port}", MEMBER_KEY) as c:
                    assert c.upload(name, files) == len(clks)
            seal_key = files.seal_key
            held = running["s1"].service.held[name]
            for k, (got, made) in enumerate(zip(held.sealed, want[NAMES.index(name)].s1.bands,
                                                strict=True)):  # fmt: skip
                for f in ("counts", "keys", "classes"):
                    assert np.array_equal(getattr(got, f), getattr(made, f)), f
                rows = [open_tokens(s, k, t.sealed.reshape(-1, 16), len(clks), "a")
                        for s, t in ((seal_key, got), (want[NAMES.index(name)].s2.seal_key,
                                                       made))]  # fmt: skip
                assert np.array_equal(*rows)
    with RoleClient("combiner", f"127.0.0.1:{running['combiner'].port}", key) as c:
        got = c.run(THRESHOLD, NAMES)
    s1 = twoserver.BlockingServer([u.s1.bands for u in want], [u.s1.shares for u in want], b"",
                                  [u.s1.popcounts for u in want])  # fmt: skip
    s2 = twoserver.ShareServer([u.s2.shares for u in want], b"", [u.s2.popcounts for u in want],
                               [u.s2.seal_key for u in want])  # fmt: skip
    pops = [u.combiner.popcounts for u in want]
    links = tworun.run(s1, s2, twoserver.Combiner(pops, THRESHOLD)).links
    assert len(links.row) > 300
    assert got.members == list(NAMES)
    for f in ("dset", "row", "partner", "partner_row", "score"):
        assert np.array_equal(getattr(got, f), getattr(links, f)), f
