"""The channels a member's client keeps to S1 and S2 (client/remote/twoserver.py): a
two-server project's queries reach them over one channel each, kept for the client's life
(`MatcherClient.close` closes them), not a new connection a query (docs/realtime.md "Queries
in a two-server project")."""

from __future__ import annotations

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


def drop_peer_channels(client: MatcherClient) -> None:
    """Close the channels `client` keeps to S1 and S2 (a later query opens new ones)."""
    with client._peers_lock:
        kept, client._peers = list(client._peers.values()), {}
    for c in kept:
        c.close()


__all__ = ["CHANNEL_OPTIONS", "drop_peer_channels", "peer_channel", "role_channel"]
