"""Client faults and resource limits, against a real matcher on loopback.

A client that vanishes mid-upload leaves nothing; a retried upload is stored
once; transient failures are retried with backoff; a full disk fails only the
upload that hit it; size limits are enforced before bytes are stored; one
member cannot hold every stream.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc
import pytest

from benchmarks.knownclks import Dataset, population, write
from blindmatch.cli import main
from blindmatch.client import MatcherClient, ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import BusyError, RejectedError, UnavailableError
from blindmatch.client.remote.retry import NO_RETRY, RetryPolicy
from blindmatch.matcher.server import create_server
from blindmatch.matcher.storage.integrity import check_data_dir
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from tests import support
from tests.portheld import HeldPorts
from tests.support import ADMIN_TOKEN, Matcher, dead_port

QUICK = RetryPolicy(attempts=8, initial_delay=0.05, max_delay=0.5)


@pytest.fixture
def datasets() -> dict[str, Dataset]:
    north, south = population(2, 600, 0.3, seed=3)
    return {"north": north, "south": south}


@pytest.fixture
def encoded(datasets: dict[str, Dataset], tmp_path: Path) -> dict[str, Encoded]:
    return {name: write(ds, tmp_path / f"{name}.encoded") for name, ds in datasets.items()}


def header_for(enc: Encoded, **overrides: object) -> pb.UploadHeader:
    fields: dict[str, object] = dict(
        project="trial",
        clk_bits=enc.clk_bits,
        record_count=enc.record_count,
        fingerprint=enc.fingerprint,
        sha256=enc.sha256,
    )
    fields.update(overrides)
    return pb.UploadHeader(**fields)  # type: ignore[arg-type]


def held_stream(
    header: pb.UploadHeader, first: bytes, release: threading.Event, rest: Iterable[bytes] = ()
) -> Iterator[pb.UploadRequest]:
    """An upload that sends its header and some CLKs, waits for `release`, then sends `rest`."""
    yield pb.UploadRequest(header=header)
    yield pb.UploadRequest(clks=first)
    release.wait(timeout=30)
    for block in rest:
        yield pb.UploadRequest(clks=block)


def wait_until(condition: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def upload_rows(matcher_dir: Path) -> int:
    import sqlite3

    db = sqlite3.connect(matcher_dir / "blindmatch.sqlite")
    try:
        return int(db.execute("SELECT COUNT(*) FROM uploads").fetchone()[0])
    finally:
        db.close()


# -- a client that vanishes ---------------------------------------------------------------


def test_a_client_that_disconnects_mid_stream_leaves_no_partial_data(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    enc = encoded["north"]
    first = next(enc.iter_chunks(100))
    release = threading.Event()
    with grpc.insecure_channel(matcher.target) as channel:
        call = pb_grpc.MatcherStub(channel).Upload.future(
            held_stream(header_for(enc), first, release),
            metadata=[("authorization", f"Bearer {project.tokens['north']}")],
        )
        wait_until(lambda: any((matcher.data_dir / "tmp").iterdir()))  # bytes are arriving
        call.cancel()
        release.set()
    wait_until(lambda: not any((matcher.data_dir / "tmp").iterdir()))
    assert not any((matcher.data_dir / "clks").iterdir())
    assert upload_rows(matcher.data_dir) == 0
    assert check_data_dir(matcher.data_dir).ok


# -- idempotent retries ----------------------------------------------------------------------


def test_a_retried_upload_gets_the_same_acknowledgement_and_is_stored_once(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    with matcher.member(project.tokens["north"]) as member:
        first = member.upload("trial", encoded["north"], upload_id="north-2024-06-export")
        again = member.upload("trial", encoded["north"], upload_id="north-2024-06-export")
    assert (again.upload_id, again.sha256, again.record_count) == (
        first.upload_id,
        first.sha256,
        first.record_count,
    )
    assert not first.replayed and again.replayed
    assert upload_rows(matcher.data_dir) == 1
    assert len(list((matcher.data_dir / "clks").iterdir())) == 1


def test_an_upload_id_reused_for_different_content_is_refused(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded], tmp_path: Path
) -> None:
    north, other = population(2, 50, 0.0, seed=9)
    with matcher.member(project.tokens["north"]) as member:
        member.upload("trial", write(north, tmp_path / "a"), upload_id="same-id")
        with pytest.raises(RejectedError, match="already used for a different upload"):
            member.upload("trial", write(other, tmp_path / "b"), upload_id="same-id")
    assert upload_rows(matcher.data_dir) == 1


def test_running_blindmatch_upload_again_stores_nothing_twice(
    matcher: Matcher,
    project: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The command derives its upload id from the content and project: re-running it (after
    a client killed while the matcher committed, say) is acknowledged, not stored again."""

    def upload(folder: Path) -> str:
        args = ["upload", str(folder), "--project", "trial", "--token", project.tokens["north"]]
        assert main([*args, "--server", matcher.target]) == 0  # (--quiet says nothing)
        return capsys.readouterr().out

    first = upload(tmp_path / "north.encoded")
    again = upload(tmp_path / "north.encoded")
    assert "the matcher had it already, nothing was stored twice" in again
    assert first.split("(upload ")[1][:32] == again.split("(upload ")[1][:32]
    assert upload_rows(matcher.data_dir) == 1
    assert len(list((matcher.data_dir / "clks").iterdir())) == 1

    # Other content, then the first again: the first becomes current again (stored anew).
    other = population(1, 50, 0.0, seed=8)[0]
    write(other, tmp_path / "other")
    upload(tmp_path / "other")
    back = upload(tmp_path / "north.encoded")
    assert "had it already" not in back
    assert upload_rows(matcher.data_dir) == 3
    with matcher.member(project.tokens["north"]) as member:
        shown = {m.name: m.record_count for m in member.describe("trial").members}
    assert shown["north"] == encoded["north"].record_count


def test_without_an_upload_id_each_upload_is_new(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    with matcher.member(project.tokens["north"]) as member:
        a = member.upload("trial", encoded["north"])
        b = member.upload("trial", encoded["north"])
    assert a.upload_id != b.upload_id  # each call picks a fresh id: a deliberate re-upload
    assert upload_rows(matcher.data_dir) == 2


# -- retries with backoff ----------------------------------------------------------------------


@pytest.mark.server
def test_the_client_retries_until_the_matcher_is_back(
    tmp_path: Path, encoded: dict[str, Encoded], capsys: pytest.CaptureFixture[str]
) -> None:
    server = create_server("127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN)
    port = server.port  # the restart below comes back on it (a stop-to-restart gap, 0.4 s)
    with MatcherClient(f"127.0.0.1:{port}", ADMIN_TOKEN) as op:
        tokens = op.create_project("trial", ["north", "south"]).tokens
    down = HeldPorts()  # (its port no other's meanwhile: tests/portheld.py)
    down.stop(port, lambda: server.stop(grace=None))  # the matcher goes away ...

    def come_back() -> None:
        time.sleep(0.4)
        down.release(port)
        nonlocal server
        server = create_server(f"127.0.0.1:{port}", tmp_path / "data", ADMIN_TOKEN)

    retries: list[str] = []
    restarter = threading.Thread(target=come_back)
    restarter.start()
    try:
        with MatcherClient(
            f"127.0.0.1:{port}", tokens["north"], retry=QUICK, on_retry=retries.append
        ) as member:
            reply = member.upload("trial", encoded["north"], progress=True)
        restarter.join()
        assert reply.record_count == encoded["north"].record_count
        assert retries and "UNAVAILABLE" in retries[0] and "retrying in" in retries[0]
        assert "retrying upload (attempt 2)" in capsys.readouterr().err  # the bar says so
    finally:
        restarter.join()
        down.close()
        server.stop(grace=None)


def test_the_client_gives_up_after_its_attempts(encoded: dict[str, Encoded]) -> None:
    quick = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02)
    retries: list[str] = []
    with (
        dead_port() as port,
        MatcherClient(f"127.0.0.1:{port}", "bm_x", retry=quick, on_retry=retries.append) as member,
        pytest.raises(UnavailableError, match="cannot reach the matcher"),
    ):
        member.upload("trial", encoded["north"])
    # Two retries, failing the same way: said once (twoleft, 2026-12-07: six lines before).
    assert len(retries) == 1 and "(attempt 2 of 3; said again only if the failure" in retries[0]


def test_backoff_grows_with_jitter_up_to_its_cap() -> None:
    import random

    policy = RetryPolicy(attempts=8, initial_delay=1.0, max_delay=8.0, multiplier=2.0)
    delays = list(policy.delays(random.Random(1)))
    assert len(delays) == 7
    ceilings = [1, 2, 4, 8, 8, 8, 8]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, so clients do not retry in lockstep


def test_final_errors_are_not_retried(matcher: Matcher, encoded: dict[str, Encoded]) -> None:
    retries: list[str] = []
    with (
        MatcherClient(matcher.target, "bm_wrong", retry=QUICK, on_retry=retries.append) as m,
        pytest.raises(Exception, match="UNAUTHENTICATED"),
    ):
        m.upload("trial", encoded["north"])
    assert retries == []


# -- per-member concurrency limits ---------------------------------------------------------


@pytest.fixture
def strict_matcher(tmp_path: Path) -> Iterator[Matcher]:
    """A matcher that lets each member have one stream in flight."""
    server = create_server("127.0.0.1:0", tmp_path / "strict", ADMIN_TOKEN, streams_per_member=1)
    try:
        yield Matcher(server, tmp_path / "strict", ADMIN_TOKEN)
    finally:
        server.stop(grace=None)


def test_a_member_over_its_stream_limit_is_told_busy_while_others_proceed(
    strict_matcher: Matcher, encoded: dict[str, Encoded]
) -> None:
    with strict_matcher.operator() as op:
        tokens = op.create_project("trial", ["north", "south"]).tokens
    enc = encoded["north"]
    release = threading.Event()
    with grpc.insecure_channel(strict_matcher.target) as channel:
        held = pb_grpc.MatcherStub(channel).Upload.future(
            held_stream(header_for(enc), next(enc.iter_chunks(10)), release),
            metadata=[("authorization", f"Bearer {tokens['north']}")],
        )
        wait_until(lambda: any((strict_matcher.data_dir / "tmp").iterdir()))
        with (
            MatcherClient(strict_matcher.target, tokens["north"], retry=NO_RETRY) as north,
            pytest.raises(BusyError) as busy,
        ):
            north.upload("trial", enc)
        assert "already has 1 uploads, result fetches or run watches in flight" in str(busy.value)
        assert "RESOURCE_EXHAUSTED" in str(busy.value)
        with strict_matcher.member(tokens["south"]) as south:  # another member is unaffected
            assert south.upload("trial", encoded["south"]).record_count == 600

        # A patient client waits its turn: it retries with backoff and gets through.
        threading.Timer(0.3, release.set).start()
        retries: list[str] = []
        with MatcherClient(
            strict_matcher.target, tokens["north"], retry=QUICK, on_retry=retries.append
        ) as north:
            assert north.upload("trial", enc).record_count == 600
        assert retries and "in flight" in retries[0]
        with pytest.raises(grpc.RpcError):
            held.result(timeout=10)  # the held stream was cut short: it stored nothing


# -- size limits -------------------------------------------------------------------------------


def raw_upload(target: str, token: str, messages: list[pb.UploadRequest]) -> grpc.RpcError:
    with grpc.insecure_channel(target) as channel:
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.MatcherStub(channel).Upload(
                iter(messages), metadata=[("authorization", f"Bearer {token}")], timeout=30
            )
        return err.value


def test_an_upload_too_big_to_store_is_refused_before_any_bytes(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    huge = header_for(encoded["north"], clk_bits=8192, record_count=20_000_000)  # 20 GB
    err = raw_upload(matcher.target, project.tokens["north"], [pb.UploadRequest(header=huge)])
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "over this matcher's limit" in (err.details() or "")
    assert not any((matcher.data_dir / "tmp").iterdir())


def test_a_message_over_16_mib_is_refused(
    matcher: Matcher, project: ProjectTokens, encoded: dict[str, Encoded]
) -> None:
    big = bytes(17 * 1024 * 1024)
    header = header_for(
        encoded["north"], record_count=len(big) // 128, sha256=hashlib.sha256(big).hexdigest()
    )
    err = raw_upload(
        matcher.target,
        project.tokens["north"],
        [pb.UploadRequest(header=header), pb.UploadRequest(clks=big)],
    )
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert upload_rows(matcher.data_dir) == 0


# -- disk space -------------------------------------------------------------------------------


@pytest.mark.server
def test_an_upload_that_would_eat_the_reserve_is_refused(
    tmp_path: Path, encoded: dict[str, Encoded]
) -> None:
    server = create_server(
        "127.0.0.1:0", tmp_path / "data", ADMIN_TOKEN, min_free_bytes=1 << 60
    )  # more than any disk
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, ADMIN_TOKEN) as op:
            tokens = op.create_project("trial", ["north", "south"]).tokens
        with (
            MatcherClient(target, tokens["north"]) as member,
            pytest.raises(RejectedError, match="not enough disk space on the matcher"),
        ):
            member.upload("trial", encoded["north"])
    finally:
        server.stop(grace=None)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with support.small_disk(tmp_path / "small-disk", "3m") as mount:
        yield mount


@pytest.mark.server
def test_a_full_disk_fails_that_upload_clearly_and_keeps_earlier_data(
    small_disk: Path, tmp_path: Path
) -> None:
    north, south = population(2, 8000, 0.3, seed=5)  # about 1 MiB each
    enc_north, enc_south = write(north, tmp_path / "n"), write(south, tmp_path / "s")
    data_dir = small_disk / "data"
    server = create_server("127.0.0.1:0", data_dir, ADMIN_TOKEN)
    target = f"127.0.0.1:{server.port}"
    try:
        with MatcherClient(target, ADMIN_TOKEN) as op:
            tokens = op.create_project("trial", ["north", "south"]).tokens
        with MatcherClient(target, tokens["north"]) as member:
            kept = member.upload("trial", enc_north)

        # South's upload passes the space check, then the disk fills while it streams.
        release = threading.Event()
        with grpc.insecure_channel(target) as channel:
            chunks = enc_south.iter_chunks(100)
            call = pb_grpc.MatcherStub(channel).Upload.future(
                held_stream(header_for(enc_south), next(chunks), release, chunks),
                metadata=[("authorization", f"Bearer {tokens['south']}")],
            )
            wait_until(lambda: any((data_dir / "tmp").iterdir()))
            filler = support.fill_disk(small_disk)  # (closing it may fail too: the disk is full)
            release.set()
            with pytest.raises(grpc.RpcError) as err:
                call.result(timeout=30)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "disk is full; nothing was stored" in (err.value.details() or "")
        assert not any((data_dir / "tmp").iterdir())
        report = check_data_dir(data_dir)
        assert report.ok, report.render()
        assert report.uploads_checked == 1
        stored = next((data_dir / "clks").iterdir())
        assert stored.stem == kept.upload_id
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == enc_north.sha256

        filler.unlink()  # space again (reading project state writes an audit entry)
        with MatcherClient(target, tokens["north"]) as member:
            info = member.describe("trial")
        assert [(m.name, m.uploaded) for m in info.members] == [("north", True), ("south", False)]
        # ... and the same upload now goes through
        with MatcherClient(target, tokens["south"]) as member:
            assert member.upload("trial", enc_south).record_count == 8000
    finally:
        server.stop(grace=None)
        shutil.rmtree(data_dir, ignore_errors=True)


def test_an_upload_stream_left_unfinished_holds_no_file_open(
    encoded: dict[str, Encoded],
) -> None:
    # gRPC keeps a refused upload's request iterator unfinished; a clks.bin it held open
    # would be closed only by the garbage collector, with a ResourceWarning at whatever
    # moment that runs (it once failed an unrelated test's set-up in the suite).
    enc = encoded["north"]
    chunks = enc.iter_chunks(1)
    first = next(chunks)
    clks = str((enc.path / "clks.bin").resolve())

    def open_files() -> set[str]:
        names = set()
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):  # (the listing's own descriptor, closed)
                names.add(os.readlink(f"/proc/self/fd/{fd}"))
        return names

    assert clks not in open_files()
    assert first + b"".join(chunks) == (enc.path / "clks.bin").read_bytes()
