"""A gRPC proxy in front of S2, for benchmarks that take S2 down at a chosen moment of the
matcher's run (benchmarks/twoserver_rerun_project.py `--fail-after`): every TwoServerShares
call is forwarded as it came (bytes, metadata, status), after `before(method)` ran, so the
benchmark can act (SIGKILL S2) just before a given call reaches it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any

import grpc

from blindmatch.matcher.rpc.listen import EXCLUSIVE_PORT, add_port, cannot_listen
from blindmatch.matcher.rpc.twoserver_channel import channel_options
from blindmatch.matcher.rpc.twoserver_peers import CALL_SECONDS
from blindmatch.protos import blindmatch_pb2 as pb


class _Forward(grpc.GenericRpcHandler):
    def __init__(self, target: str, before: Callable[[str], None]) -> None:
        self.target = target
        self.channel = grpc.insecure_channel(target, options=channel_options())
        self.before = before
        service = pb.DESCRIPTOR.services_by_name["TwoServerShares"]
        self.kinds = {f"/{service.full_name}/{m.name}": (m.client_streaming, m.server_streaming)
                      for m in service.methods}  # fmt: skip

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = details.method  # type: ignore[attr-defined]
        kind = self.kinds.get(method)
        if kind is None:
            return None

        def meta(context: grpc.ServicerContext) -> list[tuple[str, Any]]:
            return [(k, v) for k, v in context.invocation_metadata()
                    if not k.startswith((":", "grpc-")) and k != "user-agent"]  # fmt: skip

        def call(stub: Any, request: Any, context: grpc.ServicerContext) -> Any:
            self.before(method.rsplit("/", 1)[1])
            try:
                return stub(request, metadata=meta(context), timeout=CALL_SECONDS)
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details())  # type: ignore[attr-defined]

        def streamed(stub: Any, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            self.before(method.rsplit("/", 1)[1])
            try:
                yield from stub(request, metadata=meta(context), timeout=CALL_SECONDS)
            except grpc.RpcError as exc:
                context.abort(exc.code(), exc.details())  # type: ignore[attr-defined]

        c = self.channel  # the channel now (`reconnect` replaces it)
        if kind == (False, False):
            return grpc.unary_unary_rpc_method_handler(
                lambda r, ctx: call(c.unary_unary(method), r, ctx)
            )
        if kind == (True, False):
            return grpc.stream_unary_rpc_method_handler(
                lambda r, ctx: call(c.stream_unary(method), r, ctx)
            )
        if kind == (False, True):
            return grpc.unary_stream_rpc_method_handler(
                lambda r, ctx: streamed(c.unary_stream(method), r, ctx)
            )
        return grpc.stream_stream_rpc_method_handler(
            lambda r, ctx: streamed(c.stream_stream(method), r, ctx))  # fmt: skip

    def reconnect(self) -> None:
        """A fresh channel to the target, for a target restarted on its address: the old
        channel, which saw it go, is in its reconnect back-off (up to a second) and fails a
        call at once ("Connection refused") although the target is up again."""
        old, self.channel = (
            self.channel,
            grpc.insecure_channel(self.target, options=channel_options()),
        )
        old.close()


class Proxy:
    """A started proxy: its server, its address, and `reconnect` (see `_Forward`)."""

    def __init__(self, server: grpc.Server, address: str, forward: _Forward) -> None:
        self.server, self.address, self.reconnect = server, address, forward.reconnect

    def stop(self, grace: float | None) -> None:
        self.server.stop(grace)


def proxy(target: str, before: Callable[[str], None]) -> Proxy:
    """A started proxy to `target` (S2) on a free loopback port."""
    # Its port its own, as the real servers' (matcher/rpc/listen.py `EXCLUSIVE_PORT`).
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16),
                         options=[*channel_options(), EXCLUSIVE_PORT])  # fmt: skip
    forward = _Forward(target, before)
    server.add_generic_rpc_handlers((forward,))
    port = add_port(server, "127.0.0.1:0", None)
    if not port:
        raise cannot_listen("127.0.0.1:0")
    server.start()
    return Proxy(server, f"127.0.0.1:{port}", forward)


__all__ = ["Proxy", "proxy"]
