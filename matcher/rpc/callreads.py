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
from blindmatch.matcher.rpc.status import bounded, trailing_of

try:  # grpc's server call state, which `answer` ends a call through (grpcio 1.x)
    from grpc import _server as grpc_server

    _CANCELLED: Any = grpc_server._CANCELLED
except (ImportError, AttributeError):  # pragma: no cover - another grpc: `end` only
    grpc_server, _CANCELLED = None, object()

# What `CallReads.interrupt` hands a read waiting for the client's next message; what
# `reading` gets at the end of the client's messages.
_WOKEN, _ENDED = object(), object()


class CallReads:
    """The reads of one call's request stream, and its ending from any thread."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context
        self._interrupted: ServiceError | None = None  # `interrupt`'s error, once called
        self._reading = False  # the handler waits for the client's next message (`reading`)
        self._answered = False  # `answer` sent the call's status

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

    def answer(self, exc: ServiceError) -> bool:
        """Send `exc`'s status, message and trailing metadata (rpc/status.py `trailing_of`)
        now, from any thread, as the handler's own end would; False where it cannot (the
        call over, its status sent, another grpc). The call is then over for grpc and the
        handler alike (`is_active()` false, anything it sends or ends with afterwards
        dropped: no second status). A status sent while a message waits for a client that
        takes nothing follows that message; `stop` again cancels the call (`end`)."""
        state: Any = getattr(self._context, "_state", None)
        call = getattr(getattr(self._context, "_rpc_event", None), "call", None)
        condition = getattr(state, "condition", None)
        if grpc_server is None or call is None or not isinstance(condition, threading.Condition):
            return False
        with condition:
            if getattr(state, "client", _CANCELLED) is _CANCELLED or state.statused:
                return False
            state.trailing_metadata = trailing_of(exc)
            state.code = getattr(grpc.StatusCode, exc.status_name)
            state.details = bounded(str(exc)).encode("utf-8")
            # grpc's own abort (grpcio 1.x `_server._abort`): the initial metadata if not
            # sent yet, then the status with `state`'s code, details and trailing metadata.
            grpc_server._abort(state, call, None, state.details)
            state.initial_metadata_allowed = False
            # As if the client had cancelled: grpc then sends nothing more (`_status`,
            # `_abort` and `_send_response` look at `client`), and wakes what waits.
            state.client = _CANCELLED
            condition.notify_all()
        self._answered = True
        return True

    def stop(self, exc: ServiceError) -> None:
        """End the call with `exc` from any thread (rpc/streams.py: a stream idle, its
        caller's access ended): where the handler waits for the client's next message, as
        `interrupt` does, so that the status carries its trailing metadata (`blindmatch-status`:
        the matcher answered, docs/protocol.md "Who answered"); otherwise (a response
        stream's handler waiting for news or sending, a busy request stream's) with the
        status sent from here (`answer`: its trailing metadata too); `stop` again, or
        without grpc's call state, at once (`end`: the status and message only). Before
        protowalk every such end was `end`'s (an upload idle for `--stream-idle-seconds`
        ended DEADLINE_EXCEEDED as if gRPC had made it up), before streamstatus a response
        stream's."""
        state: Any = getattr(self._context, "_state", None)
        condition = getattr(state, "condition", None)
        if isinstance(condition, threading.Condition) and hasattr(state, "request"):
            with condition:
                if self._reading and state.request is None and self._interrupted is None:
                    self._interrupted = exc
                    state.request = _WOKEN
                    condition.notify_all()
                    return
        if self._answered or not self.answer(exc):
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
