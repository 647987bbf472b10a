"""Who is calling (authentication, an interceptor) and what they may do (authorisation).

Every Matcher call carries `authorization: Bearer <token>` in its metadata. `Authenticator`
is a server interceptor that decides the caller from that metadata alone, before the
handler reads a single request message (for a stream, before its first one): the
operator token makes the caller the operator; a member token, the member it was issued
to, of one project; no token, or a token nobody holds, ends the call UNAUTHENTICATED at
once, so an unauthenticated stream never holds a request thread waiting for a message.
A stream of a known caller is then counted in by `streams.StreamGuard` (refused past its
caps, ended when idle or when the caller's access ends), still before any message is read.
The handler gets the caller with its context (`Call.caller`, `Call.stream`).

Who may call what is the table in docs/security.md (tests/test_authz.py walks it). Each
RPC declares its kind where it is defined, with `@operator_call`, `@member_call` or
`@either_call`; the interceptor words its refusals by that kind, `@operator_call` refuses
members itself, and a member call authorises its caller for the project the request
names with `require_member`: a token is good for its own project only, and the operator's
for no member call. A token nobody holds is UNAUTHENTICATED; a real token used where it
has no business is PERMISSION_DENIED.
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar

import grpc

from blindmatch.matcher.core import audit
from blindmatch.matcher.core.tokens import same_hash, token_hash
from blindmatch.matcher.errors import (
    InvalidArgument,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
)
from blindmatch.matcher.rpc.callreads import CallReads
from blindmatch.matcher.rpc.refusals import Refusals
from blindmatch.matcher.rpc.status import abort, rpc_errors
from blindmatch.matcher.rpc.streams import OpenStream, StreamGuard
from blindmatch.matcher.storage.retired_tokens import ROTATED, Retired
from blindmatch.matcher.storage.store import Store

OPERATOR_CALL, MEMBER_CALL, EITHER_CALL = "operator", "member", "either"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the operator, or one member of one project (by its own
    token, or by one of its named users' tokens)."""

    project: str = ""
    member: str = ""  # empty: the operator
    user: str = ""  # the named user; empty: the member's own (administrator's) token

    @property
    def is_operator(self) -> bool:
        return not self.member


OPERATOR = Caller()


class Call(CallReads):
    """A call's gRPC context, with the caller the interceptor authenticated; its request
    stream's reads, and its ending from another thread (`end`, `interrupt`, `reading`), are
    `CallReads`'s (rpc/callreads.py)."""

    def __init__(
        self,
        context: grpc.ServicerContext,
        caller: Caller,
        authenticate: Callable[[object], Caller],
    ) -> None:
        super().__init__(context)
        self.caller = caller
        self._authenticate = authenticate
        self.stream: OpenStream | None = None  # a stream's place in the StreamGuard

    def still_valid(self) -> None:
        """Raise unless this call may still commit what it carried: its stream was not
        ended by the matcher (its token revoked or rotated, its member erased, its project
        expired) and its token still authenticates the same caller. Called inside the
        committing transaction, so a revocation is either before it (refused) or after."""
        if self.stream is not None:
            self.stream.check()
        try:
            now: Caller | None = self._authenticate(None)
        except Unauthenticated:
            now = None
        if now != self.caller:
            raise Unauthenticated(
                "this call's token was revoked or rotated while the call was open; nothing "
                "it sent was kept"
            )

    def recheck(self, request: object) -> Caller:
        """The caller, authenticated again by the call's token: for each request of a long
        stream, so that a token revoked or rotated meanwhile stops it at once."""
        return self._authenticate(request)

    def is_active(self) -> bool:
        return bool(self._context.is_active())

    def peer(self) -> str:
        return str(self._context.peer())

    def cancel(self) -> None:
        self._context.cancel()

    def set_trailing_metadata(self, trailing_metadata: tuple[tuple[str, str], ...]) -> None:
        self._context.set_trailing_metadata(trailing_metadata)

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        self._context.abort(code, details)
        raise AssertionError("unreachable: abort raises")


def bearer_token(metadata: object) -> str | None:
    """The token from `authorization: Bearer <token>` call metadata, if any.
    Unauthenticated where the call carries more than one `authorization` entry (two tokens,
    or an empty one beside another): which one is meant cannot be told, and before srvleft
    the first one that held a token was taken, whatever else the call carried."""
    entries = [value for key, value in metadata or () if key == "authorization"]  # type: ignore[attr-defined]
    if len(entries) > 1:
        raise Unauthenticated(more_than_one(entries))
    for value in entries:
        if isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def more_than_one(entries: list[object]) -> str:
    """Why a call carrying these `authorization` entries is refused (never a token)."""
    empty = sum(1 for v in entries if not isinstance(v, str) or not v.partition(" ")[2].strip())
    which = f", {empty} of them without a token" if empty else ""
    return (
        f"the call carries {len(entries)} `authorization` metadata entries{which}: send "
        "exactly one, `authorization: Bearer <token>` (which one was meant cannot be told)"
    )


# -- authorisation, per RPC ------------------------------------------------------------------


def _declare(kind: str, method: F) -> F:
    wrapped = rpc_errors(method)
    wrapped.call_kind = kind  # type: ignore[attr-defined]
    return wrapped


def require_operator(caller: Caller) -> None:
    if not caller.is_operator:
        raise PermissionDenied("only the operator may do this; this is a member token")


def operator_call(method: F) -> F:
    """An RPC only the operator may call."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def checked_stream(self: Any, request: Any, context: Call) -> Iterator[Any]:
            require_operator(context.caller)
            yield from method(self, request, context)

        return _declare(OPERATOR_CALL, checked_stream)  # type: ignore[return-value]

    @functools.wraps(method)
    def checked(self: Any, request: Any, context: Call) -> Any:
        require_operator(context.caller)
        return method(self, request, context)

    return _declare(OPERATOR_CALL, checked)  # type: ignore[return-value]


def member_call(method: F) -> F:
    """An RPC for members, each of its own project (`require_member`)."""
    return _declare(MEMBER_CALL, method)


def either_call(method: F) -> F:
    """An RPC for the operator and for members (`caller_name`)."""
    return _declare(EITHER_CALL, method)


def call_kinds(servicer: object, methods: list[str]) -> dict[str, str]:
    """Each RPC's declared kind (a method without one is a mistake: KeyError at start-up)."""
    kinds = {}
    for name in methods:
        kind = getattr(getattr(type(servicer), name), "call_kind", None)
        if kind is None:
            raise KeyError(f"{name} declares no call kind (@operator_call, @member_call, ...)")
        kinds[name] = kind
    return kinds


OPERATOR_ON_MEMBER_CALL = (
    "the operator token cannot be used for member calls; use the member's token"
)


def require_member(caller: Caller, project: str, store: Store) -> str:
    """The calling member's name, if it may act in `project`. A member's token for another
    project is refused in one wording whether or not that project exists (or has expired):
    project names are sensitive, and a member of one project must not probe for others'.
    (`store`: the project's own calls look it up after this, NotFound once it expired.)"""
    if not project:
        raise InvalidArgument("project: required")
    if caller.is_operator:
        raise PermissionDenied(OPERATOR_ON_MEMBER_CALL)
    if caller.project != project:
        raise PermissionDenied(f"this token does not belong to project {project!r}")
    return caller.member


def require_administrator(caller: Caller, project: str, store: Store) -> str:
    """The calling member's name, if it calls with its own (administrator's) token."""
    member = require_member(caller, project, store)
    if caller.user:
        raise PermissionDenied(
            f"only {member}'s administrator (the member's own token) manages its users; "
            f"this is user {caller.user!r}'s token"
        )
    return member


def require_consulting_member(caller: Caller, project: str, store: Store) -> str:
    """The calling member's name, for a consultation or disclosure (results, a request
    reference issued or resolved, a query, a watch): in a project that requires named users,
    only a user's token will do."""
    member = require_member(caller, project, store)
    if not caller.user and store.project(project).require_users:
        raise PermissionDenied(
            f"project {project!r} requires a named user for results, request references, "
            f"queries and watches, and this is {member}'s organisation token: ask your "
            "administrator for a user token (`blindmatch user add`) and use that"
        )
    return member


def caller_name(caller: Caller, project: str, store: Store) -> str:
    """audit.OPERATOR, or the calling member's name (for calls open to both)."""
    return audit.OPERATOR if caller.is_operator else require_member(caller, project, store)


# -- authentication, for every call ------------------------------------------------------------


class Authenticator(grpc.ServerInterceptor):
    """Authenticates every call to `service` (whose RPCs' kinds are `kinds`) from its
    metadata; other services (health, reflection) need no token."""

    def __init__(
        self,
        admin_token: str,
        token_owner: Callable[[bytes], tuple[str, str, str] | None],
        service: str,
        kinds: Mapping[str, str],
        streams: StreamGuard | None = None,
        refusals: Refusals | None = None,
        retired: Callable[[bytes], Retired | None] | None = None,
    ) -> None:
        self._streams = streams
        self._refusals = refusals
        self._admin_hash = token_hash(admin_token)
        self._token_owner = token_owner
        self._retired = retired
        self._prefix = f"/{service}/"
        self._kinds = dict(kinds)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        method = details.method
        if handler is None or not method.startswith(self._prefix):
            return handler
        name = method[len(self._prefix) :]
        kind = self._kinds[name]
        try:
            token, ambiguous = bearer_token(details.invocation_metadata), None
        except Unauthenticated as exc:  # refused on the call's own thread (`_known`)
            token, ambiguous = None, exc
        digest = token_hash(token or "")  # once a call, however many requests it carries
        # This runs on gRPC's serving thread: the look-up of the token waits for the
        # call's own thread, in `_authenticated`.
        return _authenticated(
            handler,
            lambda request, peer=None: self._caller(token, digest, kind, request, peer, ambiguous),
            lambda request, context, exc: self._refused(method, request, context, exc),
            name,
            self._streams,
        )

    def _refused(
        self, method: str, request: object, context: grpc.ServicerContext, exc: ServiceError
    ) -> None:
        if self._refusals is not None:
            project = getattr(request, "project", "")
            self._refusals.note(
                method=method,
                status=exc.status_name,
                message=str(exc),
                project=project if isinstance(project, str) else "",
                member="",
                peer=str(context.peer()),
            )

    def _caller(
        self,
        token: str | None,
        digest: bytes,
        kind: str,
        request: object,
        peer: str | None = None,
        ambiguous: Unauthenticated | None = None,
    ) -> Caller:
        """The caller `token` (whose hash is `digest`) makes; `peer` (the client's address,
        for a call's first authentication) has its refusals counted by `Refusals.at_door`
        (past its limit, its calls are refused unread)."""
        if token is not None and same_hash(digest, self._admin_hash):
            return OPERATOR  # no look-up to save: never refused for its address
        if peer is None or self._refusals is None:  # a recheck inside an open call
            return self._known(token, digest, kind, request, ambiguous)
        return self._refusals.at_door(
            peer, digest, lambda: self._known(token, digest, kind, request, ambiguous)
        )

    def _known(
        self,
        token: str | None,
        digest: bytes,
        kind: str,
        request: object,
        ambiguous: Unauthenticated | None = None,
    ) -> Caller:
        if ambiguous is not None:  # more than one `authorization` entry (`bearer_token`)
            raise ambiguous
        if token is None:
            # Said of the metadata too, for a client written from docs/protocol.md: one that
            # sent `Token ...` or a bare token was told only the command line's options.
            raise Unauthenticated(
                "no token: the call carries no `authorization: Bearer <token>` metadata ("
                + (
                    "blindmatch commands: set BLINDMATCH_ADMIN_TOKEN to the operator token)"
                    if kind == OPERATOR_CALL
                    else "blindmatch commands: pass --token or set BLINDMATCH_TOKEN)"
                )
            )
        owner = self._token_owner(digest)
        if owner is not None:
            return Caller(*owner)
        gone = self._retired(digest) if self._retired is not None else None
        if gone is not None:  # the caller holds this token: telling it so tells it nothing
            raise Unauthenticated(retired_message(gone))
        if kind == OPERATOR_CALL:
            raise Unauthenticated("the operator token is wrong (check BLINDMATCH_ADMIN_TOKEN)")
        # A unary request is in hand already (gRPC reads it before any handler runs):
        # name its project. A stream's first message is not read for a stranger.
        project = getattr(request, "project", "")
        if project:
            raise Unauthenticated(f"the token is not valid for project {project!r}")
        raise Unauthenticated("the token is not valid for any project")


def retired_message(gone: Retired) -> str:
    """What the holder of a revoked or rotated-away token is told (UNAUTHENTICATED)."""
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(gone.at))
    if gone.reason == ROTATED:
        return f"this token was replaced by a new one on {when} (ask the project's operator for it)"
    whom = "your member's administrator" if gone.is_user else "the project's operator"
    return f"this token was revoked on {when} (ask {whom} for a new one)"


def _as_user(user: str, responses: Iterator[Any]) -> Iterator[Any]:
    """`responses`, each made with `user` as the audit log's current user (closed with
    this stream, so its own clean-up runs when the call ends early)."""
    try:
        while True:
            mark = audit.set_current_user(user)
            try:
                response = next(responses)
            except StopIteration:
                return
            finally:
                audit.reset_current_user(mark)
            yield response
    finally:
        close = getattr(responses, "close", None)
        if close is not None:
            close()


def _as(
    user: str, behavior: Callable[[Any, Any], Any], request: Any, call: Call, streams_out: bool
) -> Any:
    """behaviour(request, call) with `user` as the audit log's current user (for a
    response stream, while each response is made)."""
    mark = audit.set_current_user(user)
    try:
        answer = behavior(request, call)
    finally:
        audit.reset_current_user(mark)
    return _as_user(user, answer) if streams_out else answer


def _authenticated(
    handler: grpc.RpcMethodHandler,
    caller_of: Callable[..., Caller],
    refused: Callable[[object, grpc.ServicerContext, ServiceError], None],
    method: str,
    streams: StreamGuard | None,
) -> grpc.RpcMethodHandler:
    """`handler` with its behaviour called as behaviour(request, Call(context, caller)),
    once the caller is known; refused (UNAUTHENTICATED) without touching a request stream.
    A stream is counted in by `streams` first (refused RESOURCE_EXHAUSTED past a cap).
    The caller's named user, if any, is the audit log's current user while the behaviour
    runs (for a response stream, while each response is made): every entry the call makes
    names it."""
    streaming = handler.request_streaming
    guarded = streams is not None and (handler.request_streaming or handler.response_streaming)

    def wrap(behavior: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def run(request: Any, context: grpc.ServicerContext) -> Any:
            try:
                caller = caller_of(None if streaming else request, context.peer())
            except ServiceError as exc:
                refused(None if streaming else request, context, exc)
                abort(context, exc)
            call = Call(context, caller, caller_of)
            if streaming:  # (ended by `Call.interrupt` when the matcher stops, if it does)
                request = call.reading(request)
            if not guarded:
                return _as(caller.user, behavior, request, call, handler.response_streaming)
            assert streams is not None
            try:
                stream = streams.open(caller.project, caller.member, method, call.stop, caller.user)
            except ServiceError as exc:
                abort(context, exc)
            call.stream = stream
            # However the call ends (a client gone before its first response, say).
            if not context.add_callback(lambda: streams.close_stream(stream)):
                streams.close_stream(stream)  # it has ended already
                return iter(()) if handler.response_streaming else None
            if streaming:
                request = streams.requests(stream, request)
            if handler.response_streaming:
                answer = _as(caller.user, behavior, request, call, True)
                return streams.responses(stream, answer)
            try:
                return _as(caller.user, behavior, request, call, False)
            finally:
                streams.close_stream(stream)

        return run

    make = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    behavior = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
    return make(
        wrap(behavior),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
