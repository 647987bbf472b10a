"""The channels a member's client keeps to S1 and S2 (client/remote/twoserver.py): a
two-server project's queries reach them over one channel each, kept for the client's life
(`MatcherClient.close` closes them), not a new connection a query (docs/realtime.md "Queries
in a two-server project")."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import grpc

from blindmatch.client.remote.channel import RECONNECT_BACKOFF_MAX_MS, _resolve

if TYPE_CHECKING:
    from blindmatch.client.remote.client import MatcherClient

CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    # As the matcher's channel (channel.py): a restarted S1 or S2 is seen within ~2 s, not
    # after gRPC's reconnect back-off has grown towards its 120 s default.
    ("grpc.max_reconnect_backoff_ms", RECONNECT_BACKOFF_MAX_MS),
]


def role_channel(
    target: str, credentials: grpc.ChannelCredentials | None, insecure: bool
) -> grpc.Channel:
    """A channel to a role at `target` (plaintext only to loopback unless `insecure`)."""
    address, creds = _resolve(target, credentials, insecure)
    if creds is None:
        return grpc.insecure_channel(address, options=CHANNEL_OPTIONS)
    return grpc.secure_channel(address, creds, options=CHANNEL_OPTIONS)


def peer_channel(client: MatcherClient, target: str) -> grpc.Channel:
    """The channel to S1 or S2 at `target` that `client` keeps for its life (closed with it,
    `MatcherClient.close`): a member's queries then pay no connection set-up to S1 and S2 a
    query (docs/realtime.md "Queries in a two-server project")."""
    with client._peers_lock:
        kept = client._peers.get(target)
        if kept is None:
            kept = client._peers[target] = role_channel(target, client.credentials,
                                                        client.insecure)  # fmt: skip
        return kept


# A role not connected to in this long is said to be waited for (`say_waiting`) ...
WAIT_SAID_SECONDS = 1.0
LOOK_SECONDS = 0.02  # ... its channel's state looked at this often meanwhile


def say_waiting(
    channel: grpc.Channel, party: str, target: str, on_wait: Callable[[str], None] | None
) -> None:
    """Before a call to `party` (S1 or S2) at `target` on `channel`: where the channel is
    neither connected nor failed within WAIT_SAID_SECONDS (an address that accepts
    connections but never answers, which gRPC gives its ~20 s handshake before the call
    fails: `translate_errors`' "cannot reach"), `on_wait` is told once what the call waits
    for. Before (twoleft, 2026-12-07) those seconds passed with nothing said.

    The state is looked at, not subscribed to: a subscription's poll, a thread of gRPC's,
    outlives the unsubscribe by up to 0.2 s and raises on that thread where the channel is
    closed meanwhile (a query's kept channels, `drop_peer_channels`). gRPC's look is private
    (`Channel._channel.check_connectivity_state`); where a gRPC lacks it nothing is said."""
    look = getattr(getattr(channel, "_channel", None), "check_connectivity_state", None)
    if on_wait is None or look is None:
        return
    from grpc._common import CYGRPC_CONNECTIVITY_STATE_TO_CHANNEL_CONNECTIVITY as STATES

    settled = (grpc.ChannelConnectivity.READY, grpc.ChannelConnectivity.TRANSIENT_FAILURE,
               grpc.ChannelConnectivity.SHUTDOWN)  # fmt: skip
    end = time.monotonic() + WAIT_SAID_SECONDS
    try:
        state = STATES.get(look(True))  # (asks an idle channel to connect)
        while state not in settled:
            if time.monotonic() >= end:
                on_wait(f"waiting for {party} at {target} (it accepted the connection but "
                        "has not answered yet; gRPC gives up after about 20 s) ...")  # fmt: skip
                return
            time.sleep(LOOK_SECONDS)
            state = STATES.get(look(False))
    except ValueError:  # (a channel closed already: the call says so)
        return


def drop_peer_channels(client: MatcherClient) -> None:
    """Close the channels `client` keeps to S1 and S2 (a later query opens new ones)."""
    with client._peers_lock:
        kept, client._peers = list(client._peers.values()), {}
    for c in kept:
        c.close()


__all__ = [
    "CHANNEL_OPTIONS",
    "WAIT_SAID_SECONDS",
    "drop_peer_channels",
    "peer_channel",
    "role_channel",
    "say_waiting",
]
