"""The matcher's exceptions, each tied to the gRPC status it becomes.

(`ServiceError`, not `MatcherError`: that name is the client's, for an error the matcher
returned.)

    ServiceError
    +-- InvalidArgument      INVALID_ARGUMENT     a field of the request is wrong
    +-- Unauthenticated      UNAUTHENTICATED      no token, or a token nobody holds
    +-- PermissionDenied     PERMISSION_DENIED    a valid token not allowed to do this
    +-- NotFound             NOT_FOUND            no such project or run
    +-- AlreadyExists        ALREADY_EXISTS       a project of that name exists
    +-- FailedPrecondition   FAILED_PRECONDITION  right request, wrong moment
    +-- ResourceExhausted    RESOURCE_EXHAUSTED   too big, or out of disk
    |   +-- Busy             RESOURCE_EXHAUSTED   too many calls in flight; retry later
    +-- DeadlineExceeded     DEADLINE_EXCEEDED    a stream left idle too long was ended
    +-- DataLoss             DATA_LOSS            stored data is damaged (a database page,
    |                                             an upload's file)
    +-- Unavailable          UNAVAILABLE          a look-up server holding shards a query
                                                  needs is down, behind or still loading
    StartupRefused                                the data dir cannot be served as it is
                                                  (not a call's error: `serve` refuses to start)

The gRPC edge maps them in one place (`rpc/status.py`); core code raises
them without knowing about gRPC. Every one is sent with the trailing metadata
`blindmatch-status: <STATUS>`, so a caller can tell a status the service
answered from one gRPC made up for want of an answer (rpc/status.py
`answered`). An error with `retryable = True` also sends
the trailing metadata `blindmatch-retryable: 1`, so a client can tell a
momentary limit (retry with backoff) from a permanent one (don't).
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base class: carries a message safe to send to the caller."""

    status_name = "INTERNAL"
    retryable = False
    # Facts of the refusal a client acts on, sent as trailing metadata (`blindmatch-` keys,
    # protos/wire.py) besides the message, which is for people (rpc/status.py `abort`).
    trailing: tuple[tuple[str, str], ...] = ()
    # A two-server batch's failure: False where S1 and S2 evaluated none of its pairs (S2
    # refused or missed the batch before S1 was asked, or S1 could not be connected to:
    # core/runjournal.py), True where they may have.
    evaluated = True
    # A call to S1 or S2 that gRPC failed before any connection carried it (the party was
    # down when it went: rpc/status.py `never_sent`): the party never saw it.
    sent = True


class InvalidArgument(ServiceError):
    """A request field is missing, malformed or out of range."""

    status_name = "INVALID_ARGUMENT"


class Unauthenticated(ServiceError):
    """No token, or one that matches nobody."""

    status_name = "UNAUTHENTICATED"


class PermissionDenied(ServiceError):
    """A valid token that may not do this."""

    status_name = "PERMISSION_DENIED"


class NotFound(ServiceError):
    """The project or run does not exist (or is not the caller's to see)."""

    status_name = "NOT_FOUND"


class AlreadyExists(ServiceError):
    """Something of that name already exists."""

    status_name = "ALREADY_EXISTS"


class FailedPrecondition(ServiceError):
    """The request is fine but the project is not ready for it."""

    status_name = "FAILED_PRECONDITION"


class ResourceExhausted(ServiceError):
    """Too large, too many, or the disk is full."""

    status_name = "RESOURCE_EXHAUSTED"


class Busy(ResourceExhausted):
    """A momentary limit (calls in flight per member): the same call may succeed later."""

    retryable = True


class DeadlineExceeded(ServiceError):
    """A stream whose client sent (or took) nothing for too long; the matcher ended it."""

    status_name = "DEADLINE_EXCEEDED"


class DataLoss(ServiceError):
    """Stored data is damaged: a database page, or an upload's file that no longer matches
    the SHA-256 it was acknowledged with. The message says who must do what (never a path)."""

    status_name = "DATA_LOSS"


class Unavailable(ServiceError):
    """A part of the matcher a call needs (a look-up server holding shards of the standing
    indexes, S1 or S2) cannot answer now, or the matcher is stopping (server.py `STOPPING`:
    an open watch, run watch or query stream ended); the message names it. Never answered
    as "no match".

    Marked retryable on purpose, the stop too: the same call may succeed once that part (or
    the matcher) is back, which is what each message tells the member to do, and what gRPC's
    own UNAVAILABLE (a matcher not reached) means to every client (client/remote/retry.py
    retries UNAVAILABLE marked or not; the mark decides only for RESOURCE_EXHAUSTED). Which
    client opens a stream again after a stop is the client's choice, not the mark's:
    `blindmatch run` does, a watch does not (docs/protocol.md "Retries")."""

    status_name = "UNAVAILABLE"
    retryable = True


class StartupRefused(Exception):
    """The data dir cannot be served as it is (a damaged database, a missing audit key);
    the message names what is wrong and how to recover."""
