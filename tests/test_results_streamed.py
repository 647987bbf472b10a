"""`blindmatch results` writes each hit as it arrives, to a temporary file beside --out that
is renamed over it at the end (since refcarry, 2026-12-08: before, every hit was held in
memory until the stream ended, ~0.5 GiB a million); a stream dropped part-way leaves no file
behind and is fetched again from the start. Through a real matcher, behind a proxy that
drops the first GetResults once its header is through."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from blindmatch.cli import main
from blindmatch.client import ProjectTokens
from blindmatch.client.encoding.encoded import Encoded
from blindmatch.protos import blindmatch_pb2 as pb
from tests.support import Matcher, Org, encode, uploaded_and_run


@pytest.fixture
def pair(matcher: Matcher) -> ProjectTokens:
    with matcher.operator() as op:
        return op.create_project("trial", ["north", "south"])


@pytest.fixture
def encoded(orgs: dict[str, Org], tmp_path: Path) -> dict[str, Encoded]:
    return {name: encode(org, tmp_path / f"{name}.encoded") for name, org in orgs.items()}


def _temporaries(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f".{out.name}.*"))


class DroppingProxy(grpc.GenericRpcHandler):
    """Forwards every Matcher call to `target`; the first GetResults is dropped
    (UNAVAILABLE) once its header is through and a temporary file beside `out` is seen (or
    20 s have passed without one): what was seen then is kept in `seen`."""

    def __init__(self, target: str, out: Path) -> None:
        self.channel = grpc.insecure_channel(target)
        self.out = out
        self.results_calls = 0
        self.seen: list[Path] = []
        service = pb.DESCRIPTOR.services_by_name["Matcher"]
        self.streams = {f"/{service.full_name}/{m.name}": m.server_streaming
                        for m in service.methods if not m.client_streaming}  # fmt: skip

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = details.method  # type: ignore[attr-defined]
        if method not in self.streams:
            return None

        def meta(context: grpc.ServicerContext) -> list[tuple[str, Any]]:
            return [(k, v) for k, v in context.invocation_metadata()
                    if not k.startswith((":", "grpc-")) and k != "user-agent"]  # fmt: skip

        def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
            reply: bytes = self.channel.unary_unary(method)(request, metadata=meta(context))
            return reply

        def streamed(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
            drop = method.endswith("/GetResults") and self.results_calls == 0
            self.results_calls += method.endswith("/GetResults")
            replies = self.channel.unary_stream(method)(request, metadata=meta(context))
            for i, reply in enumerate(replies):
                yield reply
                if drop and i == 0:  # the header is through
                    until = time.monotonic() + 20
                    while not _temporaries(self.out) and time.monotonic() < until:
                        time.sleep(0.05)
                    self.seen = _temporaries(self.out)
                    context.abort(grpc.StatusCode.UNAVAILABLE, "dropped by the test's proxy")

        if self.streams[method]:
            return grpc.unary_stream_rpc_method_handler(streamed)
        return grpc.unary_unary_rpc_method_handler(unary)


def test_results_are_written_as_they_come_and_a_dropped_stream_leaves_no_file_behind(
    matcher: Matcher,
    pair: ProjectTokens,
    encoded: dict[str, Encoded],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    uploaded_and_run(matcher, pair, encoded)
    out, direct = tmp_path / "hits.csv", tmp_path / "direct.csv"
    args = ["results", "--project", "trial", "--token", pair.tokens["north"],
            "--encoded", str(tmp_path / "north.encoded")]  # fmt: skip
    assert main([*args, "--out", str(direct), "--server", matcher.target]) == 0

    forward = DroppingProxy(matcher.target, out)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((forward,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        capsys.readouterr()
        assert main([*args, "--out", str(out), "--server", f"127.0.0.1:{port}"]) == 0
    finally:
        server.stop(None)
        forward.channel.close()
    # While the stream was open, the hits went to a temporary file beside --out (not yet
    # there); the drop deleted it, and the fetch again from the start wrote --out whole.
    assert forward.results_calls == 2
    assert [p.name.startswith(".hits.csv.") for p in forward.seen] == [True]
    assert "retrying" in capsys.readouterr().err
    assert _temporaries(out) == []
    assert out.read_text(encoding="utf-8") == direct.read_text(encoding="utf-8")
    assert out.read_text(encoding="utf-8").count("\n") == 4  # the header and three hits
