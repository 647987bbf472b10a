"""The servicer's real-time RPCs (ChangeIndex, ListIndex, Query, QueryStream, Watch): part of
`MatcherService` (matcher/rpc/servicer.py), which holds what they share (the store, the
real-time engine, the held changes and query streams) and the caller's authorisation; each
converts the request, calls the real-time engine (matcher/realtime/) and converts its answer."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from blindmatch.matcher.errors import InvalidArgument, PermissionDenied
from blindmatch.matcher.realtime.engine import Realtime, takes_clks
from blindmatch.matcher.rpc import convert
from blindmatch.matcher.rpc.auth import (
    OPERATOR_ON_MEMBER_CALL,
    Call,
    Caller,
    member_call,
    require_consulting_member,
)
from blindmatch.matcher.rpc.heldchanges import HeldChanges
from blindmatch.matcher.rpc.streams import QueryStreams
from blindmatch.matcher.storage.store import Store
from blindmatch.protos import blindmatch_pb2 as pb

log = logging.getLogger("blindmatch.matcher")

# Without `end_follows` the matcher cannot tell a stream cut short (a message over the size
# limit, a cancel: gRPC ends it as it ends a finished one) from a whole change, and stored
# what it read; since 2026-12-06 such a change is refused whole, before its puts are read.
NO_END_FOLLOWS = (
    "header.end_follows: required (this client leaves it unset, as clients from before "
    "field 41 did): a change is stored only once its IndexEnd is read, so that a stream cut "
    "short stores nothing. Upgrade blindmatch (every `blindmatch index` command sets it); "
    "nothing was changed"
)


class RealtimeCalls:
    """Mixed into `MatcherService`, which provides the attributes and helpers below."""

    store: Store
    realtime: Realtime
    held_changes: HeldChanges
    query_streams: QueryStreams

    if TYPE_CHECKING:

        def _member(self, context: Call, project: str) -> str: ...

        def _commit_check(self, context: Call, project: str) -> Callable[[], None]: ...

        def _stream_header(
            self, requests: Iterator[Any], context: Call, what: str
        ) -> tuple[Any, str]: ...

    @member_call
    def ChangeIndex(
        self, request_iterator: Iterator[pb.IndexChange], context: Call
    ) -> pb.IndexChangeReply:
        header, member = self._stream_header(request_iterator, context, "an index change")
        takes_clks(self.store.project(header.project))  # before its CLKs are read
        if not header.end_follows:
            raise InvalidArgument(NO_END_FOLLOWS)
        with self.held_changes.holding() as hold:  # until applied: it is held till then
            encoding, puts, removes = convert.index_change(header, request_iterator, hold)
            summary, replayed = self.realtime.change_index(
                header.project,
                member,
                encoding,
                puts,
                removes,
                header.client_change_id,
                self._commit_check(context, header.project),
            )
        log.info(
            "%s/%s index: +%d ~%d -%d = %d%s",
            header.project,
            member,
            summary.added,
            summary.replaced,
            summary.removed,
            summary.record_count,
            " (a retry, acknowledged again)" if replayed else "",
        )
        return pb.IndexChangeReply(
            added=summary.added,
            replaced=summary.replaced,
            removed=summary.removed,
            record_count=summary.record_count,
            replayed=replayed,
        )

    @member_call
    def ListIndex(self, request: pb.ListIndexRequest, context: Call) -> Iterator[pb.IndexListing]:
        member = self._member(context, request.project)
        yield from convert.index_listings(*self.realtime.list_index(request.project, member))

    @member_call
    def Query(self, request: pb.QueryRequest, context: Call) -> pb.QueryReply:
        return self._query(request, context.caller)

    @member_call
    def QueryStream(
        self, requests: Iterator[pb.QueryRequest], context: Call
    ) -> Iterator[pb.QueryReply]:
        """Query as a conversation: one reply for each request, in order.

        The stream is its token's member's from the start, before any request is read, so
        it counts against that member's query streams (`QueryStreams`) and is ended when
        idle even if it never asks; every request is then checked and answered exactly as
        by Query. An error ends the stream with the status Query would have returned. The
        matcher stopping ends it (`QueryStreams.end_all`) once its question, if any, is
        answered: UNAVAILABLE, its next question not read, so neither asked nor counted.
        """
        caller = context.caller
        if caller.is_operator:
            raise PermissionDenied(OPERATOR_ON_MEMBER_CALL)
        with self.query_streams.open(
            caller.project, caller.member, context.cancel, context.interrupt
        ) as stream:
            for request in requests:
                if not self.query_streams.begin(stream):
                    return  # ended as idle just as this request came: it is not answered
                try:  # the token is checked again for every request
                    reply = self._query(request, context.recheck(request))
                finally:
                    self.query_streams.done(stream)
                yield reply

    def _query(self, request: pb.QueryRequest, caller: Caller) -> pb.QueryReply:
        member = require_consulting_member(caller, request.project, self.store)
        answer = self.realtime.query(
            request.project, member, request.purpose, convert.query_encoding(request), request.clks,
            two_server_ticket=request.two_server_ticket, records=request.two_server_records,
            catch_up_ticket=request.catch_up_ticket,
        )  # fmt: skip
        reply = convert.query_reply(answer.disclosed, answer.partners, answer.level)
        reply.not_searched.update(answer.not_searched)
        return reply

    @member_call
    def Watch(self, request: pb.QueryRequest, context: Call) -> Iterator[pb.WatchEvent]:
        member = require_consulting_member(context.caller, request.project, self.store)
        if request.catch_up_ticket:
            raise InvalidArgument("catch_up_ticket: a query's (a watch's catch-up), not a watch's")
        watch = self.realtime.watch(
            request.project, member, request.purpose, convert.query_encoding(request), request.clks,
            two_server_ticket=request.two_server_ticket, records=request.two_server_records,
        )  # fmt: skip
        try:
            yield pb.WatchEvent(ready=True)
            for event in self.realtime.follow(watch, context.is_active):
                yield convert.watch_event(*event)
        finally:
            self.realtime.unwatch(watch)
