"""A call's request stream read so that another thread can end it (`CallReads`, what
rpc/auth.py's `Call` is built on): the matcher stopping, or a member's access ending, ends a
stream whose handler waits for the client's next message at once, with the error the handler
would raise (its status, message and trailing metadata), not a bare cancel.

`interrupt` relies on grpc's server call state (grpcio 1.x `_server._RPCState`: its
condition, an RLock's, and the request it hands the reader); without it, `end` (the status
and message only)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc

from blindmatch.matcher.errors import ServiceError

# What `CallReads.interrupt` hands a read waiting for the client's next message; what
# `reading` gets at the end of the client's messages.
_WOKEN, _ENDED = object(), object()


class CallReads:
    """The reads of one call's request stream, and its ending from any thread."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context
        self._interrupted: ServiceError | None = None  # `interrupt`'s error, once called
        self._reading = False  # the handler waits for the client's next message (`reading`)

    def end(self, exc: ServiceError) -> None:
        """End the call now, from any thread, with `exc`'s status and message (a thread
        blocked reading the call's next message wakes with an RpcError)."""
        code = getattr(grpc.StatusCode, exc.status_name)
        # The server call's cancel with a status (grpc_call_cancel_with_status) is not in
        # grpc's public API; without it the call is ended as CANCELLED.
        call = getattr(getattr(self._context, "_rpc_event", None), "call", None)
        try:
            call.cancel(code.value[0], str(exc))  # type: ignore[union-attr]
        except (AttributeError, TypeError):
            self._context.cancel()

    def stop(self, exc: ServiceError) -> None:
        """End the call with `exc` from any thread (rpc/streams.py: a stream idle, its
        caller's access ended): where the handler waits for the client's next message, as
        `interrupt` does, so that the status carries its trailing metadata (`blindmatch-status`:
        the matcher answered, docs/protocol.md "Who answered"); otherwise at once (`end`: the
        status and message only, for a handler busy or sending to a client that takes
        nothing). Before protowalk every such end was `end`'s: an upload idle for
        `--stream-idle-seconds` ended DEADLINE_EXCEEDED as if gRPC had made it up."""
        state: Any = getattr(self._context, "_state", None)
        condition = getattr(state, "condition", None)
        if isinstance(condition, threading.Condition) and hasattr(state, "request"):
            with condition:
                if self._reading and state.request is None and self._interrupted is None:
                    self._interrupted = exc
                    state.request = _WOKEN
                    condition.notify_all()
                    return
        self.end(exc)

    def interrupt(self, exc: ServiceError) -> None:
        """End a request stream's call with `exc`, from any thread, as the handler would
        raise it (its status, message and trailing metadata: rpc/status.py `abort`), not a
        bare cancel: the handler's wait for the client's next message (`reading`) ends now,
        raising `exc`; a handler busy with a message raises it at its next read. Relies on
        grpc's server call state (grpcio 1.x `_server._RPCState`: its condition, an RLock's,
        and the request it hands the reader); without it, `end` (the status and message
        only)."""
        state: Any = getattr(self._context, "_state", None)
        condition = getattr(state, "condition", None)
        if not isinstance(condition, threading.Condition) or not hasattr(state, "request"):
            self._interrupted = exc
            self.end(exc)
            return
        with condition:
            self._interrupted = exc
            # Waiting inside grpc's read (which released the condition) with nothing
            # received: hand it a request that is none, which `reading` raises for.
            if self._reading and state.request is None:
                state.request = _WOKEN
                condition.notify_all()

    def reading(self, requests: Iterator[Any]) -> Iterator[Any]:
        """A request stream's messages, until `interrupt` (then its error is raised). Each
        read holds grpc's call condition but while it waits (which releases it), so that
        `interrupt` finds the handler either waiting in the read or not reading at all."""
        state: Any = getattr(self._context, "_state", None)
        condition = getattr(state, "condition", None)
        if not isinstance(condition, threading.Condition):
            condition = threading.Condition()  # (another grpc: `interrupt` uses `end`)
        while True:
            with condition:
                if self._interrupted is not None:
                    raise self._interrupted
                self._reading = True
                try:
                    request = next(requests, _ENDED)
                finally:
                    self._reading = False
            if request is _ENDED:
                return  # the client has sent its last message
            if request is _WOKEN:
                assert self._interrupted is not None
                raise self._interrupted
            yield request


__all__ = ["CallReads"]
