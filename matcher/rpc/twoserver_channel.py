"""The channels between the parties of a two-server run: one function makes them all (the
combiner's to S1 and S2, S1's to S2, the reachability checks and the erasures' Forget), so
they share their options: message sizes, a short reconnect back-off, and subchannels of
their own."""

from __future__ import annotations

import grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # S2's setup for a batch is ~2.5 MB at 1,024 bits


def channel_options() -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.min_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
        # Subchannels of this channel's own: gRPC's global pool shares one between channels
        # with the same address and options, so a channel to a role restarted on an address
        # another channel had failed to reach began in that one's back-off ("Connection
        # refused" for up to a second, a call without wait_for_ready failing at once).
        ("grpc.use_local_subchannel_pool", 1),
    ]


def channel(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(address, options=channel_options())
    return grpc.secure_channel(address, credentials, options=channel_options())


__all__ = ["MAX_MESSAGE_BYTES", "channel", "channel_options"]
