"""The channels between the parties of a two-server run: one function makes them all (the
combiner's to S1 and S2, S1's to S2, the reachability checks and the erasures' Forget), so
they share their options: message sizes, a short reconnect back-off, and subchannels of
their own; and the matcher's channels to S1 and S2 kept for its life (`KeptChannels`)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc

from blindmatch.matcher import errors
from blindmatch.protos import blindmatch_pb2_grpc as pb_grpc

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


# How long a channel's close waits for gRPC to stop polling its state: past the longest wait
# on a subscription (rpc/twoserver_peers.py `CONNECT_SECONDS`, 5 s) and gRPC's 0.2 s poll
POLLED_SECONDS = 6.0
POLL_PERIOD = 0.2  # gRPC's connectivity poll (grpc/_channel.py `_poll_connectivity`)


def close_unwatched(c: grpc.Channel) -> None:
    """Close `c` once gRPC no longer polls its connectivity (POLLED_SECONDS at most). gRPC's poll
    of a channel's state, a thread of its own, outlives the last `unsubscribe` by up to its
    0.2 s period, and one that finds its channel closed raises on that thread ("Cannot
    monitor channel state: Channel closed!"). Whether it still polls is private to gRPC
    (`Channel._connectivity_state.polling`, read under its lock, so that no poll starts
    between the look and the close); where a gRPC lacks it, a poll period is waited out."""
    state = getattr(c, "_connectivity_state", None)
    lock = getattr(state, "lock", None)
    if state is None or lock is None or not hasattr(state, "polling"):
        time.sleep(POLL_PERIOD * 1.5)
        c.close()
        return
    end = time.monotonic() + POLLED_SECONDS
    while True:
        with lock:
            if not state.polling or time.monotonic() >= end:
                c.close()
                return
        time.sleep(0.02)


# What gRPC (1.85) raises, a ValueError, for a call made on a closed channel (the matcher's
# kept ones after its stop): the call was never sent.
CLOSED_CHANNEL = "Cannot invoke RPC on closed channel!"


def closed_channel(exc: BaseException) -> bool:
    """Whether `exc` is gRPC's refusal of a call on a closed channel (`CLOSED_CHANNEL`, that
    ValueError alone: any other is a fault of ours, not the channel's)."""
    return type(exc) is ValueError and str(exc) == CLOSED_CHANNEL


class Stopping(errors.Unavailable):
    """A wait on a kept channel given up (rpc/twoserver_project.py `reachable`, a batch's
    rpc/twoserver_peers.py `connected`): the matcher's set-up is closing them (its stop)."""


class KeptChannels:
    """The matcher's one channel to each of S1 and S2 (rpc/twoserver_project.py
    `combiner_setup`), shared by its runs' and queries' calls for its life: opened with it,
    and again by `open` (a matcher started again on the same set-up); `close` (the matcher's
    stop) closes them, once their state is watched no more."""

    def __init__(self, s1: str, s2: str, credentials: grpc.ChannelCredentials | None) -> None:
        self._addresses, self._credentials = (s1, s2), credentials
        self._lock = threading.Lock()
        self._pair: tuple[grpc.Channel, grpc.Channel] = self._opened()
        self._closing = threading.Event()  # the pair's: `close` has begun

    def _opened(self) -> tuple[grpc.Channel, grpc.Channel]:
        s1, s2 = self._addresses
        pair = channel(s1, self._credentials), channel(s2, self._credentials)
        # Their stubs' methods registered now, while they are open: gRPC (1.85) crashes the
        # process (SIGSEGV) registering a method on a closed channel, and a stub made after
        # `close` (rpc/twoserver_holds.py `role_stub`, `RemoteServers`) finds them
        # registered: its calls raise ValueError ("Cannot invoke RPC on closed channel!").
        pb_grpc.TwoServerBlockingStub(pair[0])
        pb_grpc.TwoServerSharesStub(pair[1])
        return pair

    def open(self) -> None:
        """Two channels opened where the pair was closed (else nothing)."""
        with self._lock:
            if self._closing.is_set():
                self._pair, self._closing = self._opened(), threading.Event()

    def pair(self) -> tuple[grpc.Channel, grpc.Channel]:
        """The channels to S1 and S2 (closed ones after `close`, until `open`: a call on one
        raises ValueError "Cannot invoke RPC on closed channel!")."""
        with self._lock:
            return self._pair

    def subscribe(
        self,
        which: int,
        callback: Callable[[grpc.ChannelConnectivity], None],
        try_to_connect: bool = True,
    ) -> tuple[grpc.Channel, threading.Event] | None:
        """`callback` subscribed to the state of the channel to S1 (`which` 0) or S2 (1),
        asking it to connect unless `try_to_connect` is False; with the event `close` sets as
        it begins: the subscriber then unsubscribes, and the close waits for that. None:
        closed (nothing subscribed)."""
        with self._lock:  # (no subscription begins on a pair being closed)
            if self._closing.is_set():
                return None
            c = self._pair[which]
            c.subscribe(callback, try_to_connect=try_to_connect)
            return c, self._closing

    def closed(self, c: grpc.Channel) -> bool:
        """Whether `c`, one of the pairs this opened, is closed or being closed (the
        matcher stopped since it was taken: rpc/twoserver_client.py `RemoteServers.stopped`)."""
        with self._lock:
            return self._closing.is_set() or all(c is not p for p in self._pair)

    def close(self) -> None:
        """Close both channels, once gRPC polls neither's state (`close_unwatched`)."""
        with self._lock:
            if self._closing.is_set():
                return
            self._closing.set()
            closing = self._pair
        for c in closing:
            close_unwatched(c)


__all__ = [
    "CLOSED_CHANNEL",
    "MAX_MESSAGE_BYTES",
    "KeptChannels",
    "Stopping",
    "channel",
    "channel_options",
    "close_unwatched",
    "closed_channel",
]
