"""A two-server run's batches of S1's proposal in the matcher's journal, and the resume of a
pair of members a failure cut mid-batch (core/batchresume.py, docs/protocol.md "A batch cut
mid-way, resumed").

`BatchJournal` keeps each batch's id before it goes and its links once answered
(storage/outcome_store.py `twoserver_batches`, dropped once the pair of members' outcome is
kept). `resumable` reads, for a pair of members a failed run left pending, whether the
journal holds every batch of it S1 and S2 may have evaluated: every one answered but at most
one, the one that was out. `resume` then asks S1 and S2 for that one's output shares again by
its id alone (both give the same bytes, or refuse naming why), journals its links and
acknowledges it: the pair's links so far, which the run starts from (core/outcomes.py
`Earlier.partial`), S1 proposing the rest of the pair (its parts without the pairs its budget
counted). Batches of extras or reach pairs are not journaled: a run cut during one stays
pending (the members upload again, as before)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from blindmatch.matcher.core import batchresume, linkbit
from blindmatch.matcher.core.compare import Candidates
from blindmatch.matcher.core.outcomes import Outcome
from blindmatch.matcher.errors import FailedPrecondition
from blindmatch.matcher.storage.outcome_store import _NONE, StoredBatch
from blindmatch.matcher.storage.store import Store


def _flip(c: Candidates) -> Candidates:
    return Candidates(c.sims, c.dset1, c.dset0, c.rec1, c.rec0)


class BatchJournal:
    """core/batchresume.py `BatchWatch` in the matcher's SQLite: `names` the run's uploads'
    names at S1 and S2, by dataset index."""

    def __init__(self, store: Store, project: str, names: Sequence[str]) -> None:
        self.store, self.project, self.names = store, project, list(names)
        self._out: dict[str, tuple[int, int]] = {}  # batch -> (clk, pairs)

    def _names(self, a: int, b: int) -> tuple[str, str, bool]:
        """name_a < name_b, and whether they are the other way round from (a, b)."""
        na, nb = self.names[a], self.names[b]
        return (nb, na, True) if na > nb else (na, nb, False)

    def out(self, batch: str, member_a: int, member_b: int, clk: int, pairs: int) -> None:
        na, nb, _ = self._names(member_a, member_b)
        self._out[batch] = (clk, pairs)
        self.store.journal_two_server_batch(self.project, na, nb, batch, clk, pairs)

    def answered(self, batch: str, member_a: int, member_b: int, found: Candidates) -> None:
        na, nb, flip = self._names(member_a, member_b)
        clk, pairs = self._out.pop(batch)
        kept = Outcome.of(_flip(found) if flip else found, _NONE, _NONE)
        self.store.journal_two_server_batch(self.project, na, nb, batch, clk, pairs, kept)

    def refused(self, batch: str, member_a: int, member_b: int) -> None:
        na, nb, _ = self._names(member_a, member_b)
        clk, pairs = self._out.pop(batch, (0, 0))
        self.store.journal_two_server_batch(self.project, na, nb, batch, clk, pairs,
                                            refused=True)  # fmt: skip

    def unsent(self, batch: str, member_a: int, member_b: int) -> None:
        na, nb, _ = self._names(member_a, member_b)
        self._out.pop(batch, None)
        self.store.drop_two_server_batch(self.project, na, nb, batch)


@dataclass(frozen=True)
class Resumable:
    """A pending pair of members (dataset indexes, i < j) the journal can resume."""

    ends: tuple[int, int]
    answered: list[StoredBatch]
    out: StoredBatch | None  # the batch that was out (None: it never reached S1)
    flip: bool  # the stored keys are of j's rows first
    run_id: str = ""  # the run that left it pending


def resumable(
    store: Store, project: str, names: Sequence[str], i: int, j: int, run_id: str = ""
) -> Resumable | None:
    """Whether the pending pair of members (i, j) can be resumed: batches journaled, every
    one answered but at most one."""
    low, high = sorted((names[i], names[j]))
    batches = store.two_server_batches(project, low, high)
    out = [b for b in batches if not b.answered]
    if not batches or len(out) > 1 or any(b.refused for b in batches):
        return None
    return Resumable((i, j), [b for b in batches if b.answered], out[0] if out else None,
                     names[i] != low, run_id)  # fmt: skip


@dataclass
class Resumed:
    """What resuming gave: the pairs of members' links so far, and the batches asked again."""

    partial: dict[tuple[int, int], Outcome]
    asked: int = 0  # batches S1 and S2 gave again
    pairs: int = 0  # their pairs (not evaluated again)
    bytes: dict[str, int] = field(default_factory=dict)  # the `Resume` calls', "C->S1": n


def resume(
    journal: BatchJournal,
    servers: object,
    pending: Sequence[Resumable],
    circuit: Callable[[int], linkbit.Circuit],
    refused: Callable[[Resumable, str], Exception],
) -> Resumed:
    """Each pending pair's links so far: its answered batches' from the journal and the one
    that was out from S1's and S2's kept shares (`servers.resume`, by id; journaled, then
    acknowledged); `circuit(clk)` the run's circuit on that CLK; `refused(pair, reason)` the
    error where S1 or S2 holds no shares of it (the pair cannot be resumed)."""
    out = Resumed({})
    for r in pending:
        found = [b.found.flipped() if r.flip else b.found for b in r.answered]
        if r.out is not None:
            b = r.out
            try:
                o1, o2, sent = servers.resume(b.batch)  # type: ignore[attr-defined]
            except FailedPrecondition as exc:  # S1 or S2 holds no shares of it
                raise refused(r, str(exc)) from None
            got = batchresume.found(circuit(b.clk), o1, o2, b.pairs, *r.ends)
            journal.out(b.batch, *r.ends, b.clk, b.pairs)  # (the row is there: unchanged)
            journal.answered(b.batch, *r.ends, got)
            servers.acknowledge([b.batch])  # type: ignore[attr-defined]
            found.append(Outcome.of(got, _NONE, _NONE))
            out.asked, out.pairs = out.asked + 1, out.pairs + b.pairs
            for way, n in sent.items():
                out.bytes[way] = out.bytes.get(way, 0) + n
        keys = np.concatenate([_NONE[0], *(o.candidates[0] for o in found)])
        scores = np.concatenate([_NONE[1], *(o.candidates[1] for o in found)])
        order = np.argsort(keys, kind="stable")
        out.partial[r.ends] = Outcome((keys[order], scores[order]), _NONE, _NONE)
    return out


__all__ = ["BatchJournal", "Resumable", "Resumed", "resumable", "resume"]
