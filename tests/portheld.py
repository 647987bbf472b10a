"""A test server's port kept to the test while the server is down, for a test that stops a
server and starts one again on the same port (a matcher, S1 or S2, a look-up server): in
between, a parallel test worker's server binding port 0 could be given that port, and the
test's client (or the matcher, calling S1, S2 or a look-up server) then reached that server
("Method not found"), or the restart could not listen there. What is left open: the moment
between the block's end and the restarted server's bind, which a server's start spends
reading its data dir (the project's servers bind after it, without SO_REUSEPORT).

`dead_port`: a port with nothing on it for a whole test ("the server cannot be reached"),
which `free_port` let go and a parallel worker's server binding port 0 could be given."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager


@contextmanager
def port_held(port: int, seconds: float = 10.0) -> Iterator[None]:
    """Port `port` on loopback kept from every other process while the test's server on it
    is down, so that no other server's bind to port 0 (a parallel test worker's) is given it
    meanwhile (one was: the test's client then reached that server, "Method not found"). A
    socket listens there and resets each connection at once, as a port with nothing on it
    refuses it: the client backs off and tries again, as against a stopped server. Bound once
    the stopped server's socket is gone (`seconds` at most); released as the block ends, for
    the server started again there."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # (its connections' TIME_WAIT)
    end = time.monotonic() + seconds
    done = threading.Event()

    def refuse() -> None:
        while not done.is_set():
            try:
                conn, _ = held.accept()
            except OSError:  # (the timeout; or closed)
                continue
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
            conn.close()  # a reset, not an answer

    try:
        while True:
            try:
                held.bind(("127.0.0.1", port))
                break
            except OSError:
                if time.monotonic() >= end:
                    raise
                time.sleep(0.02)
        held.listen(16)
        held.settimeout(0.05)
        refuser = threading.Thread(target=refuse, daemon=True)
        refuser.start()
        try:
            yield
        finally:
            done.set()
            refuser.join(10)
    finally:
        held.close()


@contextmanager
def dead_port() -> Iterator[int]:
    """A loopback port with nothing on it, kept so for the block: a socket bound there and
    never listening. The kernel refuses each connection to it (a reset: "Connection refused",
    gRPC's UNAVAILABLE "failed to connect to all addresses", as at a port nobody bound), and
    gives it to no other bind (port 0, or the port named) while it is held. For a test that
    calls an address where no server is, all the while; `free_port` picked one and let it go,
    and a parallel test worker's server binding port 0 could then be given it, and answer."""
    with socket.socket() as held:  # (no SO_REUSEADDR: no bind of any kind shares it)
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])


@contextmanager
def taken_port() -> Iterator[str]:
    """`127.0.0.1:PORT` where another socket listens for the block: a server started there
    finds its port taken (`serve`, `lookup-server`, `two-server role` refuse it at once)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield f"127.0.0.1:{taken.getsockname()[1]}"


def said_taken(listen: str, who: str, data_dir: object = None) -> str:
    """What a server start on `taken_port` prints (blindmatch/cli/options.py
    `refuse_taken_port`): `who` the server likely there, `data_dir` its --data-dir if given."""
    kept = f" and --data-dir {data_dir} was left as it was" if data_dir is not None else ""
    return (
        f"Error: --listen {listen}: port {listen.split(':')[1]} is taken (another process "
        f"listens on {listen}: {who} already running?). Nothing was started{kept}; stop that "
        "process or choose another port\n"
    )


@contextmanager
def stopped_held(port: int, stop: Callable[[], object], seconds: float = 10.0) -> Iterator[None]:
    """The test's server on `port` stopped by `stop()` and its port held (`port_held`) from
    the moment its socket is gone until the block ends. `stop` runs on a thread of its own
    while the port is taken, so what a stop does after its socket closes (a matcher's: the
    grace for calls in flight, its stores, threads and channels closed) is held over too;
    the block starts once `stop` has returned (what it raised, raised here)."""
    failed: list[BaseException] = []

    def stopping() -> None:
        try:
            stop()
        except BaseException as exc:  # (raised on the test's thread below)
            failed.append(exc)

    stopper = threading.Thread(target=stopping, daemon=True)
    stopper.start()
    try:
        with port_held(port, seconds):
            stopper.join()
            if failed:
                raise failed[0]
            yield
    finally:
        stopper.join()


class HeldPorts:
    """Ports held while their servers are down, where the stop and the start again are in
    different places (a world's `stop` and `restart`, a fixture's teardown): each from
    `stop` (or `hold`) until `release`, the rest at `close`."""

    def __init__(self) -> None:
        self._held: dict[int, ExitStack] = {}
        self._lock = threading.Lock()

    def stop(self, port: int, stop: Callable[[], object]) -> None:
        """Stop the server on `port` (`stop()`), its port held from then (`stopped_held`)."""
        self._enter(port, stopped_held(port, stop))

    def hold(self, port: int) -> None:
        """Hold `port`, its server already stopping (`port_held`: once its socket is gone)."""
        self._enter(port, port_held(port))

    def release(self, port: int) -> None:
        """Let `port` go, for the server started again there (nothing, if it is not held)."""
        with self._lock:
            held = self._held.pop(port, None)
        if held is not None:
            held.close()

    def close(self) -> None:
        with self._lock:
            ports = list(self._held)
        for port in ports:
            self.release(port)

    def _enter(self, port: int, context: AbstractContextManager[None]) -> None:
        self.release(port)  # (held already: a second stop)
        stack = ExitStack()
        stack.enter_context(context)
        with self._lock:
            self._held[port] = stack
