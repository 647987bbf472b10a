"""Retrying transient matcher failures: exponential backoff with full jitter.

A call is retried when the failure says nothing about the request itself:

    UNAVAILABLE          the matcher is restarting, or the network dropped
    DEADLINE_EXCEEDED    it did not answer in time
    RESOURCE_EXHAUSTED   only when it is a concurrency limit (the matcher marks
                         those `blindmatch-retryable: 1`; gRPC's own limit says
                         "Concurrent RPC limit exceeded"), never "too big" or "disk full"

Every other status is final. Retried calls must be safe to repeat: uploads
carry a client-chosen upload id, so a retry never stores anything twice.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

RETRYABLE_METADATA = ("blindmatch-retryable", "1")
# The matcher's own status (matcher/rpc/status.py `abort`), not one gRPC made up for want of
# an answer (no connection, no answer in time).
ANSWERED_METADATA = "blindmatch-status"
GRPC_CONCURRENCY_LIMIT = "Concurrent RPC limit exceeded"


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: `attempts` in all, delays growing by `multiplier`."""

    attempts: int = 6
    initial_delay: float = 0.5
    max_delay: float = 20.0
    multiplier: float = 2.0

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The sleep before each retry (attempts - 1 of them), with full jitter."""
        rng = rng or random.Random()
        ceiling = self.initial_delay
        for _ in range(self.attempts - 1):
            yield rng.uniform(ceiling / 2, ceiling)
            ceiling = min(ceiling * self.multiplier, self.max_delay)


NO_RETRY = RetryPolicy(attempts=1)


def answered(exc: grpc.RpcError) -> bool:
    """Whether the server called ended `exc`'s call with a status of its own."""
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    return any(key == ANSWERED_METADATA for key, _ in trailing or ())


def is_busy(exc: grpc.RpcError) -> bool:
    """A RESOURCE_EXHAUSTED that is a limit on calls in flight, not on size or disk."""
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    if trailing and RETRYABLE_METADATA in [(k, v) for k, v in trailing]:
        return True
    details = exc.details() if hasattr(exc, "details") else ""
    return GRPC_CONCURRENCY_LIMIT in (details or "")
