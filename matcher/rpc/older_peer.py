"""A peer of an older blindmatch than the matcher's: the one way its missing call is said.

A call the matcher makes to S1, S2 or a look-up server that the peer does not know is
answered UNIMPLEMENTED by gRPC ("Method not found!" alone). Its version is what went wrong
(a fleet upgraded in part: docs/operations.md "Upgrade"), so every such call, whichever it
is, says so by naming the peer and how to mend it (`older_peer`), and becomes the project's
`FailedPrecondition` (`older_peer_error`): a refusal to act, not a peer that cannot be
reached, and not retried.
"""

from __future__ import annotations

import grpc

from blindmatch.matcher import errors

UPGRADE = 'docs/operations.md "Upgrade"'


def is_older(exc: grpc.RpcError) -> bool:
    """Whether the peer answered `exc` for want of the call: UNIMPLEMENTED."""
    return hasattr(exc, "code") and exc.code() is grpc.StatusCode.UNIMPLEMENTED


def older_peer(who: str, rpc: str = "", fleet: str = "the matcher, S1 and S2") -> str:
    """What is said of `who` (named with its host:port) that does not know the call `rpc`
    (one the matcher makes, where not known: gRPC's answer does not name it)."""
    return f"{who} {older_why(rpc, fleet)}"


def older_why(rpc: str = "", fleet: str = "the matcher, S1 and S2") -> str:
    """`older_peer` without the peer's name: what follows it where a peer's state is said
    after its name (a look-up server's, rpc/lookup_load.py `_older`)."""
    call = f"the call {rpc}" if rpc else "a call the matcher makes"
    return (
        f"does not know {call} (UNIMPLEMENTED): it runs an older blindmatch than the "
        f"matcher's; upgrade {fleet} together to the matcher's version ({UPGRADE})"
    )


def older_peer_error(
    who: str, rpc: str = "", fleet: str = "the matcher, S1 and S2"
) -> errors.FailedPrecondition:
    """`older_peer` as the project's error (rpc/status.py maps it once: FAILED_PRECONDITION)."""
    return errors.FailedPrecondition(older_peer(who, rpc, fleet))


LOOKUP_FLEET = "the matcher and its look-up servers"

__all__ = ["LOOKUP_FLEET", "is_older", "older_peer", "older_peer_error", "older_why"]
