"""The connection to the matcher: channels, gRPC failures as our exceptions, reachability.

`translate_errors` is the one place a `grpc.RpcError` becomes a `MatcherError`
subclass (a registry from status code to exception class); nothing above the
remote side catches gRPC's own exceptions.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from blindmatch.client.errors import (
    AuthError,
    BusyError,
    MatcherError,
    NotFoundError,
    RejectedError,
    UnavailableError,
)
from blindmatch.client.remote.retry import answered, is_busy
from blindmatch.client.remote.tls import check_plaintext_target, client_target

# A client waiting for a matcher that is down (a query session's new stream, any call with
# wait_for_ready) reconnects only when gRPC's reconnect back-off says so; left to gRPC's
# default, which grows to 120 s, it could miss a matcher back for a minute while its own
# timeout ran out. Capped, it tries again at least every ~2 s (2 s, +-20% jitter).
RECONNECT_BACKOFF_MAX_MS = 2000
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
]

# How long `check_reachable` waits for the matcher to answer at all.
REACH_SECONDS = 5.0

_ERRORS: dict[grpc.StatusCode, type[MatcherError]] = {
    grpc.StatusCode.UNAUTHENTICATED: AuthError,
    grpc.StatusCode.PERMISSION_DENIED: AuthError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: RejectedError,
    grpc.StatusCode.FAILED_PRECONDITION: RejectedError,
    grpc.StatusCode.ALREADY_EXISTS: RejectedError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RejectedError,
    grpc.StatusCode.OUT_OF_RANGE: RejectedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
}

_TLS_WORDS = ("ssl", "tls", "handshake", "certificate", "socket closed")
TLS_HINT = (
    "; if the matcher uses TLS, pass --ca-cert (and --client-cert/--client-key when it "
    "requires client certificates); see docs/security.md"
)

# The transient failures a call is retried on (see `client.remote.retry`).
TRANSIENT = (UnavailableError, BusyError)


def _resolve(
    target: str, credentials: grpc.ChannelCredentials | None, insecure: bool
) -> tuple[str, grpc.ChannelCredentials | None]:
    """The address to dial and the credentials to use: TLS for a `grpcs://` target (the
    system's CAs unless `credentials` name others), and plaintext only to loopback unless
    `insecure`, refused here, before any connection is made."""
    address, wants_tls = client_target(target)
    if credentials is None and wants_tls:
        credentials = grpc.ssl_channel_credentials()
    if credentials is None:
        check_plaintext_target(address, insecure=insecure)
    return address, credentials


def open_channel(
    target: str, credentials: grpc.ChannelCredentials | None, *, insecure: bool = False
) -> grpc.Channel:
    """A channel to `target`: TLS with `credentials` (or a `grpcs://` target), plaintext
    without (to loopback, or anywhere with `insecure`)."""
    address, credentials = _resolve(target, credentials, insecure)
    if credentials is None:
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


def open_aio_channel(
    target: str, credentials: grpc.ChannelCredentials | None, *, insecure: bool = False
) -> grpc.aio.Channel:
    """As `open_channel`, for asyncio (bound to the running event loop)."""
    address, credentials = _resolve(target, credentials, insecure)
    if credentials is None:
        return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.aio.secure_channel(address, credentials, options=CHANNEL_OPTIONS)


def _looks_like_tls(detail: str) -> bool:
    return any(w in detail.lower() for w in _TLS_WORDS)


@contextmanager
def translate_errors(target: str, party: str = "the matcher") -> Iterator[None]:
    """Turn a failed gRPC call into the matching `MatcherError` subclass (`party`: what
    answers at `target`, named when it cannot be reached), the call's `blindmatch-` trailing
    metadata kept as its `trailing` (facts of a refusal, never parsed from its message)."""
    try:
        yield
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        detail = exc.details() if hasattr(exc, "details") else str(exc)
        cls = _ERRORS.get(code, MatcherError)
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED and is_busy(exc):
            cls = BusyError
        # An UNAVAILABLE the matcher answered (a part of it down: a look-up server, S1 or
        # S2 behind the combiner) is said as it is; one gRPC made up is "cannot reach".
        if cls is UnavailableError and not answered(exc):
            hint = TLS_HINT if _looks_like_tls(detail) else party_hint(party, target)
            detail = f"cannot reach {party} at {target}: {detail}{hint}"
        error = cls(f"{detail} [{code.name}]")
        trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
        error.trailing = {k: v for k, v in trailing or () if k.startswith("blindmatch-")
                          and isinstance(v, str)}  # fmt: skip
        raise error from None


def party_hint(party: str, target: str) -> str:
    """What to do where S1 or S2 (a project's, at the address its matcher gave) does not
    answer: said nowhere before (twowalk, 2026-12-07); nothing for the matcher, whose own
    line says it (`check_reachable`)."""
    if party not in ("S1", "S2"):
        return ""
    return (
        f". Is {party} started (`blindmatch two-server role --role {party.lower()}`), and "
        f"is {target} its address (a project's: the matcher's --two-server-{party.lower()}, "
        "set by its operator)? Try again once it answers"
    )


def check_reachable(channel: grpc.Channel, target: str, timeout: float = REACH_SECONDS) -> None:
    """Raise `UnavailableError` at once, in one sentence, when nothing answers at `target`.

    Asks the standard health service (no token needed, nothing audited); any answer,
    even a refusal, means a matcher is there. A refused connection fails at once; a
    silent address after `timeout` seconds. A TLS mismatch keeps its hint.
    """
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=timeout, wait_for_ready=False
        )
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
        if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
            return
        detail = exc.details() if hasattr(exc, "details") else ""
        if _looks_like_tls(detail or ""):
            raise UnavailableError(
                f"cannot reach the matcher at {target}: {detail}{TLS_HINT} [{code.name}]"
            ) from None
        raise UnavailableError(
            f"no matcher at {target}: is `blindmatch serve` running, and is the address right?"
        ) from None
