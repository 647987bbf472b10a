"""A truth file (`member,record_id,entity_id`) read into arrays: who holds which person.

Each member's record ids are kept sorted as one NumPy array of UTF-8 bytes, with the code
of each record's entity beside it (an index into the entity ids, sorted), so a truth file of
a million rows is some tens of MB rather than the best part of a GB of Python tuples and
strings (docs/performance.md, "The documented CLI walked at scale"). The file is read row by
row; nothing holds its rows as Python objects. `Truth.entity` gives the old mapping
(member, record_id) -> entity id for code that wants one (benchmarks), made when first asked.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt

from blindmatch.client.errors import InputError
from blindmatch.client.files import iter_csv_lines

Hit = tuple[str, str, str]  # (member, record_id, partner)
Ids = npt.NDArray[np.bytes_]
Codes = npt.NDArray[np.int64]

# Rows gathered as Python strings before they are packed into arrays.
_CHUNK = 1 << 14


@dataclass(frozen=True)
class Records:
    """One member's records: ids sorted (UTF-8), and each one's entity code."""

    ids: Ids
    entities: Codes

    def codes(self, record_ids: Sequence[str]) -> Codes:
        """The entity code of each of `record_ids` (-1: not a record of this member)."""
        wanted = _encode(record_ids)
        if not len(self.ids) or not len(wanted):
            return np.full(len(wanted), -1, np.int64)
        at = np.minimum(np.searchsorted(self.ids, wanted), len(self.ids) - 1)
        return np.where(self.ids[at] == wanted, self.entities[at], -1).astype(np.int64)


@dataclass(frozen=True)
class Truth:
    """record -> entity for every member, and who holds each entity."""

    records: dict[str, Records]
    entity_ids: Ids  # entity code -> entity id (UTF-8), sorted
    _held: dict[str, Codes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def members(self) -> frozenset[str]:
        return frozenset(self.records)

    def only(self, members: Iterable[str]) -> Truth:
        """The truth of `members` alone: another's rows (a member not in the project) left
        out, so that its records count as no one's true hits."""
        keep = set(members)
        return Truth({m: r for m, r in self.records.items() if m in keep}, self.entity_ids)

    def held(self, member: str) -> Codes:
        """The entity codes `member` holds a record of, sorted, each once."""
        if member not in self._held:
            self._held[member] = np.unique(self.records[member].entities)
        return self._held[member]

    def holds(self, partner: str, codes: Codes) -> npt.NDArray[np.bool_]:
        """For each entity code, whether `partner` holds a record of it (-1: never)."""
        if partner not in self.records:
            return np.zeros(len(codes), bool)
        return np.isin(codes, self.held(partner)) & (codes >= 0)

    def known(self, member: str, record_ids: Sequence[str]) -> npt.NDArray[np.bool_]:
        """Whether each of `record_ids` is a record of `member` in the file."""
        if member not in self.records:
            return np.zeros(len(record_ids), bool)
        return self.records[member].codes(record_ids) >= 0

    def true_hits(self, member: str | None = None, partner: str | None = None) -> set[Hit]:
        """Every (member, record, partner) a perfect matcher would report (of `member`,
        with `partner`, when given)."""
        out: set[Hit] = set()
        for m, rec in self.records.items():
            if member is not None and m != member:
                continue
            for p in self.records:
                if p == m or (partner is not None and p != partner):
                    continue
                ids = rec.ids[self.holds(p, rec.entities)]
                out.update((m, rid.decode(), p) for rid in ids.tolist())
        return out

    def are_true(self, hits: Sequence[Hit]) -> list[bool]:
        """`is_true` of each hit, looked up together (member by member, partner by partner)."""
        out = [False] * len(hits)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, (m, _, p) in enumerate(hits):
            if m != p and m in self.records:
                groups.setdefault((m, p), []).append(i)
        for (m, p), where in groups.items():
            codes = self.records[m].codes([hits[i][1] for i in where])
            for i, ok in zip(where, self.holds(p, codes).tolist(), strict=True):
                out[i] = ok
        return out

    def is_true(self, hit: Hit) -> bool:
        return self.are_true([hit])[0]

    @functools.cached_property
    def entity(self) -> dict[tuple[str, str], str]:
        """(member, record_id) -> entity id, every record (made when first asked)."""
        names = [e.decode() for e in self.entity_ids.tolist()]
        return {
            (m, rid.decode()): names[code]
            for m, rec in self.records.items()
            for rid, code in zip(rec.ids.tolist(), rec.entities.tolist(), strict=True)
        }


def _encode(values: Iterable[str]) -> Ids:
    return np.array([v.encode() for v in values], dtype=np.bytes_)


def read_truth(path: str | Path) -> Truth:
    """Read `member,record_id,entity_id`; a record listed twice is an error (the first row
    that repeats one is named, as are a row lacking a value: whichever comes first)."""
    path = Path(path)
    names: dict[str, int] = {}
    chunks: list[tuple[Codes, Ids, Ids, Codes]] = []
    rows: tuple[list[int], list[str], list[str], list[int]] = ([], [], [], [])
    missing = 0  # the first row lacking a value (0: none)

    def pack() -> None:
        if rows[3]:
            chunks.append((np.array(rows[0], np.int64), _encode(rows[1]), _encode(rows[2]),
                           np.array(rows[3], np.int64)))  # fmt: skip
        for column in rows:
            column.clear()

    for line, row in iter_csv_lines(path, ("member", "record_id", "entity_id")):
        name, rid = (row["member"] or "").strip(), (row["record_id"] or "").strip()
        ent = (row["entity_id"] or "").strip()
        if not name or not rid or not ent:
            missing = line
            break
        rows[0].append(names.setdefault(name, len(names)))
        rows[1].append(rid)
        rows[2].append(ent)
        rows[3].append(line)
        if len(rows[3]) >= _CHUNK:
            pack()
    pack()
    member: Codes = np.concatenate([c[0] for c in chunks]) if chunks else np.zeros(0, np.int64)
    ids: Ids = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, np.bytes_)
    ents: Ids = np.concatenate([c[2] for c in chunks]) if chunks else np.zeros(0, np.bytes_)
    lines: Codes = np.concatenate([c[3] for c in chunks]) if chunks else np.zeros(0, np.int64)
    chunks.clear()
    entity_ids, codes = np.unique(ents, return_inverse=True)
    del ents
    records: dict[str, Records] = {}
    repeat: tuple[int, str, str, int] | None = None  # (line, id, member, its first line)
    for name, k in names.items():
        mine = np.flatnonzero(member == k)
        mine = mine[np.argsort(ids[mine], kind="stable")]  # equal ids stay in file order
        sorted_ids = ids[mine]
        again = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1]) + 1
        if len(again):
            first = again[np.argmin(lines[mine[again]])]
            if repeat is None or lines[mine[first]] < repeat[0]:
                repeat = (int(lines[mine[first]]), sorted_ids[first].decode(), name,
                          int(lines[mine[first - 1]]))  # fmt: skip
        records[name] = Records(sorted_ids, codes[mine].astype(np.int64))
    if repeat is not None:
        raise InputError(
            f"{path}: row {repeat[0]}: record {repeat[1]!r} of {repeat[2]} listed twice (first "
            f"on row {repeat[3]}); the truth file lists each record once"
        )
    if missing:
        raise InputError(f"{path}: row {missing}: member, record_id and entity_id are required")
    if not names:  # nothing to judge against: every hit would read false, every member absent
        raise InputError(
            f"{path}: a header and no rows; the truth file lists every record of every member "
            "(member,record_id,entity_id), the partners' too"
        )
    return Truth(records, entity_ids)


__all__ = ["Hit", "Records", "Truth", "read_truth"]
