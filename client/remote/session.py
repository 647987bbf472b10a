"""Query sessions: many real-time queries in one project over one stream.

A system that asks the matcher many questions (a records system checking each new
subject, an analyst's tool working down a list) pays for each `MatcherClient.query` as a
whole gRPC call: set-up, metadata, a request thread at the matcher, tear-down. A session
keeps one `QueryStream` open and sends each question as one message on it, answered by one
message, in order, which spares the matcher much of gRPC's cost per call (measured in
docs/performance.md, *Query sessions*). Every query is still checked, counted against the
member's quota, audited with its purpose and answered exactly as `query` answers it.

    async with AsyncQuerySession(target, token, "burglary", clk_bits=2048,
                                 fingerprint=fp) as session:
        answer = await session.query(clk, purpose="case 24/118")

    with client.query_session("burglary", clk_bits=2048, fingerprint=fp) as session:
        answer = session.query(clk, purpose="case 24/118")

`clk_bits` is the whole CLK's length as encoded and uploaded (`Encoding.clk_bits`): 2,048
under the default schema, a 1,024-bit record-level CLK followed by its 1,024-bit fallback CLK
(the index, not the query, tells the matcher where the fallback starts).

`AsyncQuerySession` is the session for asyncio programs; `QuerySession` (what
`MatcherClient.query_session` returns) runs one on a background event loop shared by the
process's sessions, for threaded programs. A session asks one question at a time (one
stream is one conversation); open one per concurrent asker.

The matcher caps open streams (per member and in all) and ends one that has been idle for
five minutes: a session opens a new stream on its next query without the caller noticing,
and when a stream is refused it asks by single `Query` calls for a while instead. An error
(a refused query, an exhausted quota) ends the stream with the same status `query` would
raise as the same exception; the next query opens a new stream. A stream the matcher ends as
it stops is one it ended with the question sent on it unread (`UNASKED_METADATA`): that
question is sent again on a new stream, which waits for the matcher to be back.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

import grpc

from blindmatch.client.errors import UnavailableError
from blindmatch.client.remote.channel import open_aio_channel, translate_errors
from blindmatch.client.remote.convert import query_answer, query_request
from blindmatch.client.remote.model import QueryAnswer
from blindmatch.client.remote.retry import is_busy
from blindmatch.protos import blindmatch_pb2 as pb
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc
from blindmatch.protos.wire import UNASKED_METADATA

# After the matcher refuses a stream (its caps), ask by single calls this long before
# trying a stream again.
SINGLE_CALLS_AFTER_REFUSAL = 30.0

T = TypeVar("T")


class _Unsent(Exception):
    """The question could not be written: the stream had ended first, so it was not asked."""


class AsyncQuerySession:
    """Queries in one project over one `QueryStream`, for asyncio programs."""

    def __init__(
        self,
        target: str,
        token: str | None,
        project: str,
        *,
        clk_bits: int,
        fingerprint: bytes,
        fallback_bits: int = 0,
        rule: tuple[float, float, float] | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float = 30.0,
        insecure: bool = False,
    ) -> None:
        self.target = target
        self.project = project
        self.clk_bits = clk_bits
        self.fingerprint = fingerprint
        self.scoring = (fallback_bits, rule)  # the schema's (MatcherClient.query)
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._channel = open_aio_channel(target, credentials, insecure=insecure)
        self._stub = pb_grpc.MatcherStub(self._channel)
        self._call: Any = None  # the open stream, if any
        self._single_until = 0.0
        self._turn = asyncio.Lock()

    async def query(self, clks: bytes | Sequence[bytes], *, purpose: str) -> QueryAnswer:
        """Which partners hold each of `clks`, within disclosure (as `MatcherClient.query`)."""
        request = query_request(
            self.project, clks, self.clk_bits, self.fingerprint, purpose, *self.scoring
        )
        async with self._turn:
            with translate_errors(self.target):
                try:
                    async with asyncio.timeout(self.timeout):
                        reply = await self._ask(request)
                except TimeoutError:
                    self._call = None  # cancelled with the wait: its answer, if any, is lost
                    raise UnavailableError(
                        f"cannot reach the matcher at {self.target}: no answer within "
                        f"{self.timeout:g}s [DEADLINE_EXCEEDED]"
                    ) from None
        return query_answer(reply)

    async def _ask(self, request: pb.QueryRequest) -> pb.QueryReply:
        if time.monotonic() < self._single_until:
            return await self._single(request)
        fresh = self._call is None or self._call.done()
        if fresh:
            self._call = self._stub.QueryStream(metadata=self._metadata, wait_for_ready=True)
        try:
            return await self._exchange(request)
        except _Unsent:
            self._call = None
            if fresh:  # refused as it opened (by the caps, most likely): not asked
                self._single_until = time.monotonic() + SINGLE_CALLS_AFTER_REFUSAL
                return await self._single(request)
        except grpc.RpcError as exc:
            self._call = None
            if fresh and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and is_busy(exc):
                self._single_until = time.monotonic() + SINGLE_CALLS_AFTER_REFUSAL
                return await self._single(request)  # refused before it was asked
            if fresh or not (exc.code() == grpc.StatusCode.CANCELLED or unasked(exc)):
                raise
        # The matcher ended the stream (as idle, or stopping) as this question went: it was
        # not asked. (A new stream waits for a stopped matcher to be back, up to `timeout`.)
        self._call = self._stub.QueryStream(metadata=self._metadata, wait_for_ready=True)
        try:
            return await self._exchange(request)
        except _Unsent:
            # This new stream, too, ended before the question went (refused as it opened: a
            # revoked token, say), and gRPC, whose write failed, says INTERNAL instead of the
            # matcher's status: a single call asks it and gets that status itself.
            self._call = None
            self._single_until = time.monotonic() + SINGLE_CALLS_AFTER_REFUSAL
            return await self._single(request)
        except grpc.RpcError:
            self._call = None
            raise

    async def _exchange(self, request: pb.QueryRequest) -> pb.QueryReply:
        try:
            await self._call.write(request)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as exc:
            # Writing on a stream the matcher has just ended, gRPC reports its own INTERNAL
            # error (or that the call is done) instead of the matcher's status: gRPC's core
            # had the status, this event loop had not taken it yet (a busy host), and the
            # failed write replaces it with INTERNAL for good.
            if isinstance(exc, grpc.aio.AioRpcError) and exc.code() != grpc.StatusCode.INTERNAL:
                raise
            raise _Unsent from exc
        reply = await self._call.read()
        if reply is grpc.aio.EOF:  # ended without an error status: never, but say so
            raise UnavailableError(
                f"cannot reach the matcher at {self.target}: the query stream ended "
                "without an answer"
            )
        return reply  # type: ignore[no-any-return]

    async def _single(self, request: pb.QueryRequest) -> pb.QueryReply:
        return await self._stub.Query(  # type: ignore[no-any-return]
            request, metadata=self._metadata, timeout=self.timeout, wait_for_ready=True
        )

    async def close(self) -> None:
        """End the stream and close the connection."""
        call, self._call = self._call, None
        if call is not None and not call.done():
            await call.done_writing()
        await self._channel.close()

    async def __aenter__(self) -> AsyncQuerySession:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def unasked(exc: grpc.RpcError) -> bool:
    """Whether the matcher ended the stream before reading the question sent on it (it is
    stopping: `UNASKED_METADATA`), so that the question may be sent again."""
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    return (UNASKED_METADATA, "1") in [(k, v) for k, v in trailing or ()]


# -- for threaded programs --------------------------------------------------------------------

_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _session_loop() -> asyncio.AbstractEventLoop:
    """The event loop the process's `QuerySession`s share, on a daemon thread of its own."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(
                target=loop.run_forever, name="blindmatch-query-sessions", daemon=True
            ).start()
            _loop = loop
        return _loop


class QuerySession:
    """An `AsyncQuerySession` for threaded programs (`MatcherClient.query_session`).

    Its stream lives on an event loop thread shared by the process's sessions; `query`
    blocks the calling thread until the answer (or the error) comes. One question at a
    time: concurrent calls on one session wait their turn.
    """

    def __init__(self, make: Callable[[], AsyncQuerySession]) -> None:
        """`make` builds the session (on the loop's thread: a gRPC aio channel is bound to
        the loop it was made on), e.g. `functools.partial(AsyncQuerySession, target, ...)`."""
        self._loop = _session_loop()

        async def build() -> AsyncQuerySession:
            return make()

        self._session = self._run(build())
        self._closed = False

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def query(self, clks: bytes | Sequence[bytes], *, purpose: str) -> QueryAnswer:
        """Which partners hold each of `clks`, within disclosure (as `MatcherClient.query`)."""
        if self._closed:
            raise ValueError("this query session is closed")
        return self._run(self._session.query(clks, purpose=purpose))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._run(self._session.close())

    def __enter__(self) -> QuerySession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
