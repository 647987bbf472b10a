"""C converting standing partners ahead of their queries (standahead, issue 18 (b)): `Ahead`,
a queue of partners (`Partner`) worked on a daemon thread of its own, one conversion at a
time, each started by rpc/twoserver_standdeal.py `start` with a piece 0 naming the partner
alone and its later pieces put in the background (realtime/twoahead.py queues them; `on`
False, from `combiner_setup`'s `convert_ahead`, `serve --no-two-server-convert-ahead`: none
is); `wanted`, whether a query's part against a partner would go standing; `when_made`,
a caller told once a queued partner's conversion ended (watchstand: realtime/twowatch.py's
comparison of the upload with the watches waits for it), where it is fit (watchcap:
`_unfit`, what C can tell before any deal, so that no watch waits for a conversion that
would be turned down), and since watchunfit as soon as C knows it will not hold it (S1 or
S2 refusing it, no room, a piece failing, the stop), with why. The rules:
rpc/twoserver_standing.py; the wire: docs/protocol.md "A conversion started ahead of its
queries".
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from blindmatch.matcher import errors
from blindmatch.matcher.core import linkbit, margincircuit, partpath
from blindmatch.matcher.core.twoserver import Combiner
from blindmatch.matcher.domain import Rule
from blindmatch.matcher.rpc import twoserver_standdeal as standdeal
from blindmatch.matcher.rpc.twoserver_conversions import (
    BUSY,
    HELD,
    STOPPING,
    Conversions,
    partner_of,
)
from blindmatch.matcher.rpc.twoserver_peers import wire_rule
from blindmatch.protos import blindmatch_pb2 as pb

if TYPE_CHECKING:
    from blindmatch.matcher.rpc.twoserver_client import RemoteServers

log = logging.getLogger("blindmatch.matcher.twoserver")

WAIT_SECONDS = 5.0  # how often the worker looks again while another conversion is being made
STOPPED = "the matcher stopped"  # `_start`: its channels to S1 and S2 closed
REPLACED = "the member's newer upload took its place in the queue"  # `convert`
NOT_KEPT = "its conversion ended without C holding it"  # `_work`: no other reason known


@dataclass(frozen=True)
class Partner:
    """A partner to convert: its upload's name at S1 and S2, records and CLK widths, the
    project's threshold and the upload's rule (a query's terms against it)."""

    name: str
    records: int
    bits: tuple[int, ...]
    threshold: float
    rule: Rule


def wanted(records: int, bits: Sequence[int], rule: Rule) -> bool:
    """Whether a query's whole part against such a partner would go standing (as
    core/partpath.py `by_standing` takes it; S1 alone knows whether it is compared whole)."""
    if len(bits) != 2 or not rule.active or partpath.PATH in ("pairs", "blocks"):
        return False
    return partpath.PATH == "standing" or records >= partpath.STANDING_RECORDS


class Ahead:
    """C's conversions ahead of the queries: a queue, worked on a daemon thread of its own.
    `servers`: S1 and S2 as C reaches them (`TwoServerSetup.servers`); `conversions`: C's
    (`combiner_setup`'s, read at each start: a matcher started again on the set-up holds new
    ones). `started`, `refused`, `failed`, `declined`, `skipped`: partners whose conversion went
    into the background, S1 or S2 refused, failed otherwise, found no room beside others, or
    that C dealt nothing for by S1's and S2's bounds (`Conversions.unfit`; tests, the logs).
    `on` False (`serve --no-two-server-convert-ahead`): nothing is queued, each partner is
    left to its first query."""

    def __init__(self, servers: Callable[[list[str], list[int], list[int]], RemoteServers],
                 conversions: Callable[[], Conversions], on: bool = True) -> None:  # fmt: skip
        self._servers, self._conversions, self.on = servers, conversions, on
        self._queue: deque[Partner] = deque()
        self._cond = threading.Condition()
        self._working = False
        self._epoch = 0  # `close`: what was queued before it is not started
        self._current: Partner | None = None  # the partner being worked on
        # `when_made`'s callers, by the partner's name at S1 and S2 (one upload's)
        self._waiting: dict[str, list[Callable[[bool, str], None]]] = {}
        self.started = self.refused = self.failed = self.declined = self.skipped = 0

    def convert(self, partner: Partner) -> None:
        """Queue `partner` (where `wanted` and the switch is `on`), in place of the same
        member's queued upload; not where it is unfit by what C knows already (`_unfit`:
        skipped, logged, as the worker would)."""
        if not self.on or not wanted(partner.records, partner.bits, partner.rule):
            return
        unfit = self._unfit(partner)
        with self._cond:
            member = partner_of(partner.name)  # (its newer upload in place of a queued one)
            replaced = [p.name for p in self._queue if partner_of(p.name) == member]
            self._queue = deque(p for p in self._queue if partner_of(p.name) != member)
            self.skipped += bool(unfit)
            if not unfit:
                self._queue.append(partner)
            if not unfit and not self._working:
                self._working = True
                threading.Thread(target=self._work, name="standing-ahead", daemon=True).start()
        if unfit:
            log.info("%s's upload not converted ahead of its queries: %s", partner.name, unfit)
        for name in replaced:
            self._made_or_not(name, False, REPLACED)

    def when_made(self, name: str, then: Callable[[bool, str], None]) -> bool:
        """Whether the partner `name` (its upload's name at S1 and S2) is queued or being
        converted and fit (`_unfit`, S1's and S2's bounds asked first where C knows none
        yet: one `Holds` each, HOLDS_SECONDS at most; an unfit one is taken off the queue):
        if so, `then(held, why)` is called once its conversion ended (`held`: C holds it, so
        a query against it goes standing); or, with False and why, as soon as C knows it will
        not hold it: S1 or S2 refused or failed it at piece 0, no room (`Conversions.admit`),
        unfit by the bounds S1 and S2 said as it was dealt, a later piece failed or was
        refused (S1 or S2 dropped it half-made) or the matcher stops, its upload was
        replaced in the queue, before any give-up's calls or wait for another conversion;
        on the worker's thread, the background conversion's (or `convert`'s, `close`'s: it
        must not wait on a conversion)."""
        with self._cond:
            partner = self._queued(name)
        if partner is None:
            return False
        unfit = self._unfit(partner, ask=True)
        with self._cond:
            if unfit and partner in self._queue:  # (not the one being made: it ends itself)
                self._queue.remove(partner)
                self.skipped += 1
                log.info("%s's upload not converted ahead of its queries: %s", name, unfit)
            if unfit or self._queued(name) is None:
                return False
            self._waiting.setdefault(name, []).append(then)
            return True

    def _queued(self, name: str) -> Partner | None:
        """The partner `name`, queued or being converted (under `_cond`)."""
        if self._current is not None and self._current.name == name:
            return self._current
        return next((p for p in self._queue if p.name == name), None)

    def _unfit(self, partner: Partner, ask: bool = False) -> str:
        """Why `partner`'s conversion would be turned down before anything is dealt, by what
        C can tell: a rule the margin does not fit, S1's and S2's bounds (`Conversions.unfit`:
        over S1's `query_whole_records`, `--query-whole-pairs`; over their least
        `--standing-bytes`), asked first where `ask` and C knows none yet; "" where it may
        be converted (S1 may still refuse it, or find no room beside others)."""
        name, records, bits, rule = partner.name, partner.records, partner.bits, partner.rule
        try:
            margincircuit.plan(bits[0], bits[1], _cutoffs(partner), rule)
        except ValueError as exc:
            return f"the rule's margin does not fit ({exc}): its parts go by pairs"
        conversions = self._conversions()
        if ask and not conversions.learned():
            remote = self._servers([name], [records], list(bits))
            try:
                if not remote.stopped():
                    conversions.learn(remote)
            except ValueError:  # a call on the matcher's channels closed under it (stopping)
                pass
            except Exception:  # (a bug: logged; the upload's reply must not fail for it)
                log.exception("asking S1's and S2's bounds for %s's upload", name)
            finally:
                remote.close()
        return conversions.unfit(records, bits)

    def _made_or_not(self, name: str, held: bool, why: str = "") -> None:
        """`when_made`'s callers of partner `name` told whether C holds its conversion, and
        if not `why` (each once: told early, the worker's own telling finds none)."""
        with self._cond:
            waiting = self._waiting.pop(name, [])
        for then in waiting:
            try:
                then(held, "" if held else why or NOT_KEPT)
            except Exception:  # (a bug of the caller's: logged, the queue goes on)
                log.exception("telling that %s's conversion ended", name)

    def _work(self) -> None:
        while True:
            with self._cond:
                if not self._queue:
                    self._working = False
                    self._cond.notify_all()
                    return
                partner, epoch = self._queue.popleft(), self._epoch
                self._current = partner
            held = False
            try:
                held = self._start(partner, epoch)
            except Exception as exc:  # (a bug: logged, the queue goes on)
                log.exception("converting %s's upload ahead of its queries: %s", partner.name, exc)
            finally:
                with self._cond:
                    self._current = None
                self._made_or_not(partner.name, held)

    def _start(self, partner: Partner, epoch: int) -> bool:
        """`partner`'s conversion started (piece 0 dealt, the rest in the background), or
        why not logged: where the matcher's stop closed its channels to S1 and S2 before or
        while this asked them (no admitted conversion's: the stop waits for that one), one
        line saying so (STOPPED), no traceback, nothing learned or kept; then its end waited
        for (one conversion at a time: the next waits for it anyway), so that `when_made`'s
        callers are told whether C holds it."""
        name, records, bits, rule = partner.name, partner.records, partner.bits, partner.rule
        cutoffs = _cutoffs(partner)
        try:
            plan = margincircuit.plan(bits[0], bits[1], cutoffs, rule)
        except ValueError as exc:  # (a rule the margin does not fit: its parts go by pairs)
            self._made_or_not(name, False, f"the rule's margin does not fit ({exc})")
            return False
        key = standdeal.key_of(name, records, bits, cutoffs, rule)
        self._convert(partner, epoch, key, plan)
        conversions = _settled(self._conversions())  # (its later pieces: made or failed)
        return conversions.holds(key)

    def _convert(self, partner: Partner, epoch: int, key: standdeal.Key,
                 plan: margincircuit.Plan) -> None:  # fmt: skip
        name, records, bits = partner.name, partner.records, partner.bits
        base = pb.BlockDeal(member_b=name, records_b=records, cutoffs=key[3],
                            rule=wire_rule(partner.rule), margin=True)  # fmt: skip
        while True:
            conversions = _settled(self._conversions())  # (another's: one at a time)
            with self._cond:
                stopped = epoch != self._epoch or conversions.stopping()
            if conversions.holds(key):
                return  # (a query converted it meanwhile)
            if stopped:  # (queued as the stop began, or after: C's conversions stopped)
                log.info("%s's upload not converted ahead of its queries: %s", name, STOPPED)
                self._made_or_not(name, False, STOPPED)
                return
            remote = self._servers([name], [records], list(bits))
            try:
                made = STOPPED if remote.stopped() else self._made(remote, conversions, key,
                                                                   base, plan)  # fmt: skip
            except ValueError:  # a call on the matcher's channels closed under it
                if not remote.stopped():
                    raise
                made = STOPPED
            finally:
                remote.close()
            if made == STOPPED:  # (its stop began as this started: nothing was kept)
                log.info("%s's upload not converted ahead of its queries: %s", name, STOPPED)
                self._made_or_not(name, False, STOPPED)
            if made != BUSY:
                return

    def _made(self, remote: RemoteServers, conversions: Conversions, key: standdeal.Key,
              base: pb.BlockDeal, plan: margincircuit.Plan) -> str:  # fmt: skip
        """Piece 0 dealt and the rest put in the background; or why not ("" once started,
        or where it is not to be; STOPPED where the matcher's stop ended it: no failure)."""
        conversions.learn(remote)
        unfit = conversions.unfit(key[1], key[2])
        if unfit:
            with self._cond:
                self.skipped += 1
            log.info("%s's upload not converted ahead of its queries: %s", key[0], unfit)
            self._made_or_not(key[0], False, unfit)
            return ""
        try:
            made = standdeal.start(remote, conversions, key, base, plan, linkbit.Transcript(), {})
        except errors.ServiceError as exc:
            refused = isinstance(exc, errors.PermissionDenied | errors.FailedPrecondition)
            with self._cond:
                self.refused, self.failed = self.refused + refused, self.failed + (not refused)
            log.log(logging.INFO if refused else logging.WARNING,
                    "%s's upload not converted ahead of its queries (its first query converts "
                    "it): %s", key[0], exc)  # fmt: skip
            self._made_or_not(key[0], False, f"S1 or S2 {'refused' if refused else 'failed'} "
                                             f"it at piece 0: {exc}")  # fmt: skip
            return ""
        if made == HELD:  # (a query's conversion of it ended whole since `_convert` looked)
            return ""
        if isinstance(made, str):
            if made == STOPPING:  # (the stop began since: before or during its piece 0)
                return STOPPED
            if made != BUSY:
                with self._cond:
                    self.declined += 1
                log.info("%s's upload not converted ahead of its queries: %s", key[0], made)
                self._made_or_not(key[0], False, made)
            return made
        started, size = made
        with self._cond:
            self.started += 1
        log.info("converting %s's upload (%d records) ahead of its queries (conversion %s)",
                 key[0], key[1], started.first.standing)  # fmt: skip
        standdeal.background(remote, conversions, key, size, started,
                             lambda why: self._made_or_not(key[0], False, why))  # fmt: skip
        return ""

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is queued and no conversion is being made (tests, the
        benchmark): True, or False where `timeout` seconds passed first."""
        with self._cond:
            if not self._cond.wait_for(lambda: not self._working, timeout):
                return False
        return self._conversions().idle(timeout)

    def close(self) -> None:
        """The matcher stops: nothing queued is started (the conversion being made stops
        with C's conversions, `Conversions.close`); the callers of `when_made` told at once,
        the conversion being made's too (C keeps none across its stop)."""
        with self._cond:
            dropped = [p.name for p in self._queue]
            if self._current is not None:
                dropped.append(self._current.name)
            self._queue.clear()
            self._epoch += 1
        for name in dropped:
            self._made_or_not(name, False, STOPPED)


def _cutoffs(partner: Partner) -> tuple[float, ...]:
    return Combiner(None, partner.threshold, clks=2, rule=partner.rule).cutoffs


def _settled(conversions: Conversions) -> Conversions:
    """`conversions` once no conversion is being made (or the matcher stops)."""
    while not conversions.idle(WAIT_SECONDS) and not conversions.stopping():
        pass
    return conversions


__all__ = ["NOT_KEPT", "REPLACED", "STOPPED", "WAIT_SECONDS", "Ahead", "Partner", "wanted"]
