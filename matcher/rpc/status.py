"""The matcher's exceptions become gRPC statuses here, and only here.

Each `ServiceError` names its status (matcher/errors.py), and goes with the trailing
metadata `blindmatch-status: <STATUS>`, so a caller can tell a status the service answered
from one gRPC made up for want of an answer (`UNAVAILABLE` or `DEADLINE_EXCEEDED` of a
connection that failed: the party was not reached) by the status alone, never by its text.
One that is `retryable` also sends `blindmatch-retryable: 1`, so a client can tell a
momentary limit (retry with backoff) from a permanent one (don't). One with facts a client
acts on sends them too (`ServiceError.trailing`: a two-server watch's `band_keys_needed` end
names the partner in `blindmatch-blocked-partner`, protos/wire.py), never parsed from its text.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn, Protocol, TypeVar

import grpc

from blindmatch.matcher.errors import ServiceError

F = TypeVar("F", bound=Callable[..., Any])

ANSWERED_METADATA = "blindmatch-status"  # the service's own status (`answered`)
RETRYABLE_METADATA = ("blindmatch-retryable", "1")
OPERATOR_CALLER = "(operator)"  # how refusals name the operator

log = logging.getLogger("blindmatch.matcher")


class Aborts(Protocol):
    def set_trailing_metadata(self, trailing_metadata: tuple[tuple[str, str], ...]) -> None: ...

    def abort(self, code: grpc.StatusCode, details: str) -> NoReturn: ...


# The most of a status's message sent, in UTF-8 bytes: it travels as trailing metadata
# (percent-encoded, up to 3 bytes a byte), whose size a gRPC client caps (8 KiB, then 16 KiB
# hard). A message quoting a huge field whole (a 200,000-character batch id, say) made the
# client drop the status and report RESOURCE_EXHAUSTED "received metadata size exceeds hard
# limit" instead (benchmarks/rpcfuzz.py found it).
MAX_DETAIL_BYTES = 2000


# The most of each client-supplied string a log line quotes (a project name as sent, a
# refusal's message), in UTF-8 bytes: a refused call naming a 1 MB project made a 1 MB
# WARNING line (refusals.py `Refusals.note`, `bounded(..., MAX_LOGGED_BYTES)`).
MAX_LOGGED_BYTES = 300


def bounded(message: str, limit: int = MAX_DETAIL_BYTES) -> str:
    """`message`, cut to `limit` UTF-8 bytes (whole characters) and saying so where it was."""
    raw = message.encode("utf-8", "replace")
    if len(raw) <= limit:
        return message
    kept = raw[: max(limit - 60, 0)].decode("utf-8", "ignore")
    return f"{kept}... ({len(message) - len(kept):,} more characters left out)"


def trailing_of(exc: ServiceError) -> tuple[tuple[str, str], ...]:
    """The trailing metadata `exc`'s status goes with: `blindmatch-status`, its facts, and
    `blindmatch-retryable` where it is momentary."""
    trailing = ((ANSWERED_METADATA, exc.status_name), *exc.trailing)
    return trailing + ((RETRYABLE_METADATA,) if exc.retryable else ())


def abort(context: Aborts, exc: ServiceError) -> NoReturn:
    """End the call with `exc`'s status and message (`bounded`), marked as the service's own."""
    context.set_trailing_metadata(trailing_of(exc))
    context.abort(getattr(grpc.StatusCode, exc.status_name), bounded(str(exc)))


def note_refusal(servicer: Any, method: str, request: Any, context: Any, exc: ServiceError) -> None:
    """Tell the servicer's `refusals` (rpc/refusals.py), if it has one, of a refused call."""
    refusals = getattr(servicer, "refusals", None)
    if refusals is None:
        return
    caller = getattr(context, "caller", None)
    own = getattr(caller, "project", "")
    project = getattr(request, "project", "") or own
    project = project if isinstance(project, str) else ""
    member = getattr(caller, "member", "")
    user = getattr(caller, "user", "")
    if not member:
        member = OPERATOR_CALLER
    elif project != own:  # a member's token used in another project: say whose it is
        member = f"{member} (of project {own})"
    peer = context.peer() if hasattr(context, "peer") else ""
    refusals.note(
        method=method,
        status=exc.status_name,
        message=str(exc),
        project=project,
        member=member,
        peer=peer,
        user=user if isinstance(user, str) else "",
    )


def answered(exc: grpc.RpcError) -> bool:
    """Whether the service called ended `exc`'s call with a status of its own (`abort`), not
    gRPC for want of one (no connection, a deadline passed, a connection lost)."""
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    return any(key == ANSWERED_METADATA for key, _ in trailing or ())


def never_sent(exc: grpc.RpcError) -> bool:
    """Whether gRPC failed `exc`'s call before any connection carried it: UNAVAILABLE with
    its pick failure ("failed to connect to all addresses"), which gRPC gives a call only
    where no connection to the party could be made for it (a call sent and then cut fails
    otherwise: "Socket closed", "Connection reset", a GOAWAY). The party never saw it."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else "") or ""
    return (code is grpc.StatusCode.UNAVAILABLE and not answered(exc)
            and details.startswith("failed to connect to all addresses"))  # fmt: skip


def retryable(exc: grpc.RpcError) -> bool:
    """Whether the service called marked `exc`'s status as a momentary limit."""
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    return RETRYABLE_METADATA in tuple(trailing or ())


INTERNAL_ERROR = "internal error on the matcher; the operator's log has the details"


def _internal(context: Aborts, method: str, exc: Exception) -> NoReturn:
    """An exception of no kind of ours: the caller gets INTERNAL with a fixed message (gRPC
    would send `Exception calling application: ...`, which can name the matcher's files);
    the log gets the traceback. gRPC's own abort (a bare Exception) passes through."""
    if type(exc) is Exception and not exc.args:  # context.abort() already set the status
        raise exc
    active = getattr(context, "is_active", None)
    if isinstance(exc, grpc.RpcError) and callable(active) and not active():
        # The call ended under its handler (cancelled by its client, or by the matcher ending
        # the stream: a revoked token, an erasure, a stop), whose next read of the request
        # stream raised: there is no one to answer and nothing wrong in the matcher.
        log.info("%s: the call ended while its handler ran", method)
        raise exc
    log.exception("%s failed", method)
    context.set_trailing_metadata(((ANSWERED_METADATA, "INTERNAL"),))
    context.abort(grpc.StatusCode.INTERNAL, INTERNAL_ERROR)
    raise AssertionError("unreachable: abort raises")


def rpc_errors(method: F) -> F:
    """Turn the project's exceptions into gRPC statuses, for unary and streaming methods."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def stream(self: Any, request: Any, context: Any) -> Iterator[Any]:
            try:
                yield from method(self, request, context)
            except ServiceError as exc:
                note_refusal(self, method.__name__, request, context, exc)
                abort(context, exc)
            except Exception as exc:
                _internal(context, method.__name__, exc)

        return stream  # type: ignore[return-value]

    @functools.wraps(method)
    def unary(self: Any, request: Any, context: Any) -> Any:
        try:
            return method(self, request, context)
        except ServiceError as exc:
            note_refusal(self, method.__name__, request, context, exc)
            abort(context, exc)
        except Exception as exc:
            _internal(context, method.__name__, exc)

    return unary  # type: ignore[return-value]
