"""Loopback ports for the servers the benchmarks and tests start: one copy of `free_port`,
and a retry for a group of servers whose ports must be picked before they start.

Every blindmatch server listens without SO_REUSEPORT (matcher/rpc/listen.py): a port another
process took is refused. A server that can, listens on port 0 and reports the port it got
(`serve --listen 127.0.0.1:0` prints it; `create_server`/`create_lookup_server`/`create_role`
return it): nothing can take it first. `free_port` is only for a port that must be known
before its server starts (a matcher naming look-up servers it makes the data dir for);
between the pick and the bind another process of a parallel suite (or a gRPC client, drawing
its local port from the same range) can take it: `on_free_ports` then picks again."""

from __future__ import annotations

import re
import socket
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import TypeVar

T = TypeVar("T")
PORT_TRIES = 5  # picks tried when the port picked was taken before the bind


class PortTaken(RuntimeError):
    """A server could not listen: another process took the port since it was picked."""


def free_port() -> int:
    """A loopback port free now, let go at once (see the module's docstring)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def taken(exc: BaseException) -> bool:
    """Whether `exc` says a server could not listen on its port (`PortTaken`, or the OSError
    an in-process server start raises: matcher/rpc/listen.py `cannot_listen`)."""
    return isinstance(exc, PortTaken) or (
        isinstance(exc, OSError) and "could not listen on" in str(exc)
    )


def said_taken(line: str) -> bool:
    """Whether a server's stderr line says its port was taken: its early refusal (`serve`,
    `lookup-server`, `two-server role`: blindmatch/cli/options.py `refuse_taken_port`, exit 2
    before anything is made) or the bind's own failure after it (`cannot_listen`)."""
    return "could not listen on" in line or bool(re.search(r": port \d+ is taken", line))


def on_free_ports(count: int, start: Callable[[list[int]], T], tries: int = PORT_TRIES) -> T:
    """`start(ports)` with `count` ports from `free_port`; where a port was taken before its
    server listened (`taken`), again with fresh ones, up to `tries` times. `start` stops what
    it started before it raises (a context manager's ExitStack does)."""
    for _ in range(tries - 1):
        try:
            return start([free_port() for _ in range(count)])
        except (PortTaken, OSError) as exc:
            if not taken(exc):
                raise
    return start([free_port() for _ in range(count)])


@contextmanager
def on_free_addresses(count: int, enter: Callable[[ExitStack, list[str]], T]) -> Iterator[T]:
    """`enter(stack, addresses)`, `count` loopback addresses from `free_port`, its servers
    entered on `stack` (context managers, or callbacks that stop them): where a port was taken,
    all it started is stopped and it is entered again with fresh addresses (`on_free_ports`).
    What it returns is given while they run; they are stopped afterwards."""

    def start(ports: list[int]) -> tuple[T, ExitStack]:
        with ExitStack() as stack:
            got = enter(stack, [f"127.0.0.1:{port}" for port in ports])
            return got, stack.pop_all()

    got, started = on_free_ports(count, start)
    with started:
        yield got
