"""The client's exceptions, in one small tree.

    BlindmatchError                 anything the CLI reports as `Error: ...`
    +-- InputError                  a local file is unusable (names file/row/column)
    +-- MatcherError                the matcher refused or failed a call
        +-- AuthError               wrong or missing token (UNAUTHENTICATED, PERMISSION_DENIED)
        +-- NotFoundError           unknown project or run (NOT_FOUND)
        +-- RejectedError           bad request or wrong state (INVALID_ARGUMENT,
        |                           FAILED_PRECONDITION, ALREADY_EXISTS, ...)
        +-- UnavailableError        the matcher cannot be reached (UNAVAILABLE, DEADLINE_EXCEEDED)
        +-- BusyError               too many of this member's calls in flight
                                    (RESOURCE_EXHAUSTED marked retryable)

`UnavailableError` and `BusyError` are *transient*: `MatcherClient` retries them
with backoff (see `client.remote.retry`) before giving up and raising them.

`client.remote.channel.translate_errors` turns every `grpc.RpcError` into one of
these; the command line (`blindmatch.cli.errors`) maps each to a message and an
exit code, in one table.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType


class BlindmatchError(Exception):
    """Base class: a failure the user can act on, with a message that says how."""


class InputError(BlindmatchError):
    """A local input (CSV, mapping, schema, secret, encoded folder) is unusable."""


class MatcherError(BlindmatchError):
    """The matcher answered with an error status. `trailing`: the `blindmatch-` trailing
    metadata it came with (facts of a refusal to act on, protos/wire.py; empty: none)."""

    trailing: Mapping[str, str] = MappingProxyType({})


class AuthError(MatcherError):
    """The token is wrong, missing, or not allowed to do this."""


class NotFoundError(MatcherError):
    """The project or run does not exist."""


class RejectedError(MatcherError):
    """The matcher refused the request as invalid or out of order."""


class UnavailableError(MatcherError):
    """The matcher could not be reached in time."""


class BusyError(MatcherError):
    """The matcher refused the call for now: this member has too many calls in flight."""
