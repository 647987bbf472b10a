"""C giving up a standing partner's conversion at S1 and S2 (docs/protocol.md "A conversion
given up"; rpc/twoserver_standdeal.py's conversions, rpc/twoserver_standing.py `_given_up`
the servers'): `give_up`, their `BlockDeal.standing_drop` (standfix2), and `GivingUp`, the
give-ups made off a query's thread (standq: a query whose conversion's piece 0 failed
returns its error at once, not after the drops' calls), which the matcher's stop waits for.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from blindmatch.matcher.rpc.twoserver_peers import call_party
from blindmatch.protos import blindmatch_pb2 as pb

if TYPE_CHECKING:
    from blindmatch.matcher.rpc.twoserver_client import RemoteServers

log = logging.getLogger("blindmatch.matcher.twoserver")

DROP_SECONDS = 10.0  # the most each server's `standing_drop` call takes


def give_up(remote: RemoteServers, m: pb.BlockDeal) -> None:
    """S2 and S1 told to drop conversion `m.standing` (`standing_drop`: a piece failed, or the
    matcher stops), DROP_SECONDS each at most; one that does not answer is logged (it drops
    the half-made conversion itself STALE_SECONDS after its last piece). Where the matcher's
    stop closed `remote`'s channels (`RemoteServers.stopped`: its wait for the conversion,
    CLOSE_SECONDS, ran out), nothing can be sent: one line at info says the servers' stale
    sweep drops it (not a warning for each server)."""
    drop = pb.BlockDeal(blocks=secrets.token_hex(12), member_b=m.member_b, standing=m.standing,
                        standing_drop=True)  # fmt: skip
    left = [remote.names[1], remote.names[0]]  # (S2 first, as dealt)
    for who, fn, sent in ((remote.names[1], remote._s2.PrepareBlocks, lambda: iter([drop])),
                          (remote.names[0], remote._s1.PrepareBlocks, lambda: drop)):  # fmt: skip
        try:
            if not remote.stopped():
                call_party(who, fn, sent(), metadata=remote._metadata, timeout=DROP_SECONDS)
                left.remove(who)
                continue
        except Exception as exc:
            if not remote.stopped():
                log.warning("%s was not told to drop the conversion %s of %s's upload (it "
                            "drops it itself once stale): %s", who, m.standing, m.member_b,
                            exc)  # fmt: skip
                left.remove(who)
                continue
        log.info("%s not told to drop the conversion %s of %s's upload: the matcher's stop "
                 "closed its channels (a server drops it itself once stale)", " and ".join(left),
                 m.standing, m.member_b)  # fmt: skip
        return


class GivingUp:
    """Give-ups each on a daemon thread of its own, `remote`'s channels held open until it
    ends (`RemoteServers.keep`); `join` waits for those going on."""

    def __init__(self) -> None:
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def start(self, remote: RemoteServers, ident: str, give: Callable[[], None]) -> None:
        remote.keep()

        def work() -> None:
            try:
                give()
            finally:
                remote.let_go()
                with self._lock:
                    self._threads.discard(threading.current_thread())

        thread = threading.Thread(target=work, name=f"give-up-{ident}", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def join(self, end: float) -> bool:
        """Wait for the give-ups going on until `end` (`time.monotonic`) at most: whether
        all ended."""
        with self._lock:
            going = list(self._threads)
        for thread in going:
            thread.join(max(end - time.monotonic(), 0.0))
        return not any(t.is_alive() for t in going)


__all__ = ["DROP_SECONDS", "GivingUp", "give_up"]
