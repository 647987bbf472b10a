"""A member's upload to one role of the two-server run, checked whole
(rpc/twoserver_service.py): each role takes only its own fields. S1's band keys come sealed,
each band's distinct keys once (core/twoblocking.py `Sealed`); an upload of the older format, a
band key a record, is refused naming the field. A query's records may come to S1 without
band keys (`band_keys_withheld`; `Held.sealed` then empty), which S1 compares only where the
query is not blocked (rpc/twoserver_service.py `Propose`)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from blindmatch.matcher import errors
from blindmatch.matcher.core import tickets
from blindmatch.matcher.core.encodings import check_clk_bits
from blindmatch.matcher.core.fallback import checked_rule
from blindmatch.matcher.core.twoblocking import MAX_CLASS, SEAL_KEY_BYTES, Sealed, sealed_size
from blindmatch.matcher.domain import MAX_QUERY_RECORDS, MAX_RECORDS, NO_RULE, Rule
from blindmatch.matcher.rpc.twoserver_spool import SPILL_BYTES, Kept, Spool
from blindmatch.protos import blindmatch_pb2 as pb

if TYPE_CHECKING:
    from blindmatch.matcher.storage.role_store import RoleStore

MAX_BANDS = 65_536  # the schema's (client/encoding/schema.py)


@dataclass(frozen=True)
class Held:
    """One member's upload to one role, per CLK: widths, and the role's own arrays."""

    bits: tuple[int, ...]
    bands: tuple[int, ...]
    sealed: tuple[Sealed, ...]  # S1's
    shares: tuple[npt.NDArray[np.uint8], ...]
    popcounts: tuple[npt.NDArray[np.int64], ...]
    popshares: tuple[npt.NDArray[np.uint32], ...] = ()  # S1, S2: shares of the popcounts
    lacking: npt.NDArray[np.bool_] | None = None  # S1, with a fallback CLK
    rows: int = 0  # records
    seal_key: bytes = b""  # S2's
    rule: Rule = NO_RULE  # the schema's blindmatch.rule, as every part says

    @property
    def records(self) -> int:
        return self.rows

    def named(self) -> list[tuple[str, npt.NDArray[np.generic]]]:
        """Everything held, by name, in the audit digest's order (and the stored file's:
        storage/role_store.py)."""
        out: list[tuple[str, npt.NDArray[np.generic]]] = []
        for k, b in enumerate(self.sealed):
            out += [(f"sealed{k}.{f}", getattr(b, f)) for f in ("counts", "keys", "classes",
                                                                 "sealed")]  # fmt: skip
        for what in ("shares", "popcounts", "popshares"):
            out += [(f"{what}{k}", a) for k, a in enumerate(getattr(self, what))]
        if self.lacking is not None:
            out.append(("lacking", self.lacking))
        out.append(("seal_key", np.frombuffer(self.seal_key, np.uint8)))
        return out

    def layout(self) -> list[list[Any]]:
        """Each array's name, dtype and shape, in `named`'s order (a stored upload's meta)."""
        return [[n, a.dtype.str, list(a.shape)] for n, a in self.named()]

    def arrays(self) -> list[npt.NDArray[np.generic]]:
        """Everything held, for the audit's digest."""
        return [a for _, a in self.named()]

    def meta(self) -> dict[str, object]:
        """What a stored upload keeps beside its arrays (`held_from` reads it back)."""
        r = self.rule
        return {"bits": list(self.bits), "bands": list(self.bands), "rows": self.rows,
                "rule": [r.gap, r.offset, r.reach]}  # fmt: skip


def held_from(meta: dict[str, Any], arrays: dict[str, npt.NDArray[np.generic]]) -> Held:
    """An upload read back from a role's store (storage/role_store.py), its arrays checked
    to fit its widths and records (ValueError naming what does not)."""
    bits, bands = [int(b) for b in meta["bits"]], [int(b) for b in meta["bands"]]
    rows = meta["rows"]
    if not 1 <= len(bits) <= 2 or len(bands) != len(bits) or not isinstance(rows, int):
        raise ValueError(f"bits/bands/rows: {bits}, {bands}, {rows!r}")
    clks = range(len(bits))
    sealed = tuple(Sealed(*(arrays[f"sealed{k}.{f}"] for f in SEALED_NAMES))  # type: ignore[arg-type]
                   for k in clks if f"sealed{k}.counts" in arrays)  # fmt: skip
    got: dict[str, tuple[Any, ...]] = {
        w: tuple(arrays[f"{w}{k}"] for k in clks if f"{w}{k}" in arrays)
        for w in ("shares", "popcounts", "popshares")
    }
    for k, a in enumerate(got["shares"]):
        if a.shape != (rows, bits[k] // 8):
            raise ValueError(f"shares{k}: {a.shape} for {rows} records of {bits[k]} bits")
    for w in ("popcounts", "popshares"):
        if any(a.shape != (rows,) for a in got[w]):
            raise ValueError(f"{w}: not one a record")
    lacking: Any = arrays.get("lacking")
    if lacking is not None and lacking.shape != (rows,):
        raise ValueError(f"lacking: {lacking.shape} for {rows} records")
    return Held(tuple(bits), tuple(bands), sealed, got["shares"], got["popcounts"],
                got["popshares"], lacking, rows, arrays["seal_key"].tobytes(),
                Rule(*(float(x) for x in meta["rule"])))  # fmt: skip


OLDER = (
    "a band key a record is the older upload format, which S1 no longer takes (it showed S1 "
    "which of a member's records collide): encode again with this version, which sends each "
    "band's distinct keys once with their rows as tokens for S2 (band_counts, band_keys, "
    "classes, sealed; seal_key to S2)"
)
SEALED_NAMES = ("counts", "keys", "classes", "sealed")  # Sealed's


def _sealed_part(p: pb.SharedPart, clk: dict[str, Any], where: str) -> None:
    """S1: a part's sealed band keys, checked and added to `clk` (bands in order; a
    `band_continued` part's first band the previous part's last, cut between them)."""
    if not any((p.band_counts, p.band_keys, p.classes, p.sealed)):
        if p.band_continued:
            raise errors.InvalidArgument(
                f"band_continued ({where}): set, but the part carries no band keys"
            )
        return
    if p.band_continued and not clk["next_band"]:
        raise errors.InvalidArgument(
            f"band_continued ({where}): no band before it to continue (the CLK's first part "
            "of band keys)"
        )
    if p.band_continued and p.band_lo != clk["next_band"] - 1:
        raise errors.InvalidArgument(
            f"band_lo ({where}): {p.band_lo}, but a part continuing a band (band_continued) "
            f"starts at the CLK's last band so far, {clk['next_band'] - 1}"
        )
    if not p.band_continued and p.band_lo != clk["next_band"]:
        raise errors.InvalidArgument(
            f"band_lo ({where}): {p.band_lo}, but the CLK's bands so far end at "
            f"{clk['next_band']} (parts in band order)"
        )
    if p.band_lo + len(p.band_counts) > p.bands:
        raise errors.InvalidArgument(
            f"band_counts ({where}): bands {p.band_lo} to {p.band_lo + len(p.band_counts)} of "
            f"{p.bands}"
        )
    counts = np.asarray(p.band_counts, dtype=np.int64)
    n = int(counts.sum())
    if len(p.band_keys) != 8 * n:
        raise errors.InvalidArgument(
            f"band_keys ({where}): {len(p.band_keys)} bytes for {n} keys (band_counts)"
        )
    if len(p.classes) != n:
        raise errors.InvalidArgument(f"classes ({where}): {len(p.classes)} for {n} keys")
    classes = np.frombuffer(p.classes, np.uint8)
    if n and int(classes.max()) > MAX_CLASS:
        raise errors.InvalidArgument(f"classes ({where}): {int(classes.max())}; 0 to {MAX_CLASS}")
    if len(p.sealed) != int(sealed_size(classes).sum()):
        raise errors.InvalidArgument(
            f"sealed ({where}): {len(p.sealed)} bytes for {n} keys of their classes"
        )
    keys = np.frombuffer(p.band_keys, "<u8")
    rising = np.ones(n, dtype=bool)
    rising[1:] = keys[1:] > keys[:-1]
    starts = np.cumsum(counts) - counts
    rising[starts[starts < n]] = True
    if p.band_continued:  # the cut band's keys rise across the cut too
        if not counts[0]:
            raise errors.InvalidArgument(f"band_counts ({where}): 0 keys first in a part "
                                         "continuing a band (band_continued)")  # fmt: skip
        rising[0] = clk["last_key"] is None or bool(keys[0] > clk["last_key"])
    if not rising.all():
        raise errors.InvalidArgument(
            f"band_keys ({where}): a band's keys repeat or are out of order (each band's "
            "distinct keys, ascending, across the parts it is cut over)"
        )
    if p.band_continued:
        clk["band_counts"][-1][-1] += counts[0]
        counts = counts[1:]
    clk["next_band"] += len(counts)
    if len(counts):  # (the last array holds the last band: a continued part adds to it)
        clk["band_counts"].append(counts)
    if n:
        clk["last_key"] = keys[-1]
    for name, value in (("band_keys", keys.data), ("classes", classes.data), ("sealed", p.sealed)):
        clk[name] += value  # joined as they come (`_joined`)


JOINED = ("shares", "popshares", "band_keys", "classes", "sealed")  # a buffer each, a CLK's
SPOOLED = {"band_keys": "keys", "sealed": "sealed"}  # S1's big fields (`Spool`): Sealed's names


def _joined(clk: dict[str, Any], field: str, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """A CLK's `field` as one array, over the bytes its parts added to it as they came (a
    buffer grown in place, or S1's big fields mapped from a file: `Spool`; keeping every
    part and joining them at the end took twice the upload, 3.1 GB for 10,000 records,
    docs/performance.md)."""
    return clk[field].array(dtype).astype(np.dtype(dtype).newbyteorder("="), copy=False)


def run_lacking(request: pb.ProposeRequest, held: list[Held]) -> list[npt.NDArray[np.bool_]] | None:
    """Which records lack the fallback's fields: what each member told S1 with its upload
    (None: the run has no fallback CLK)."""
    if request.fallback:
        if any(len(h.bits) != 2 or h.lacking is None for h in held):
            raise errors.InvalidArgument("fallback: an upload without a fallback CLK")
        return [h.lacking for h in held if h.lacking is not None]
    if any(len(h.bits) == 2 for h in held):
        raise errors.InvalidArgument("fallback: the uploads have a fallback CLK")
    return None


def only_pairs(request: pb.ProposeRequest) -> set[tuple[int, int]] | None:
    """The pairs of members S1 proposes parts for (`only_pairs`), checked; None: every pair."""
    if not request.only_pairs:
        if request.pairs:
            raise errors.InvalidArgument("pairs: given, but only_pairs is unset")
        return None
    only = set()
    for n, p in enumerate(request.pairs):
        if not p.member_a < p.member_b < len(request.members) or (p.member_a, p.member_b) in only:
            raise errors.InvalidArgument(
                f"pairs[{n}]: {p.member_a} and {p.member_b}; two of the run's "
                f"{len(request.members)} members, the first lower, each pair once"
            )
        only.add((p.member_a, p.member_b))
    return only


def part_rule(p: pb.SharedPart | pb.ProposeRequest | pb.CircuitBatch, where: str) -> Rule:
    """The `rule` a message carries (NO_RULE unset), checked as a schema's."""
    if not p.HasField("rule"):
        return NO_RULE
    r = p.rule
    return checked_rule(r.gap, r.offset, r.reach, 1, f"rule ({where})")


def _withheld(p: pb.SharedPart, role: str, where: str, withheld: set[bool]) -> None:
    """`band_keys_withheld` checked: S1's, the same in every part, and then no band keys."""
    if p.band_keys_withheld and role != "s1":
        raise errors.InvalidArgument(f"band_keys_withheld ({where}): S1's only")
    withheld.add(p.band_keys_withheld)
    if len(withheld) > 1:
        raise errors.InvalidArgument(
            f"band_keys_withheld ({where}): not the upload's other parts' (one an upload)"
        )
    if p.band_keys_withheld and any((p.band_counts, p.band_keys, p.classes, p.sealed)):
        raise errors.InvalidArgument(
            f"band_keys_withheld ({where}): set, but the part carries band keys"
        )


def _clk(p: pb.SharedPart, spool: Path | None, keep: Kept | None) -> dict[str, Any]:
    """A CLK's fields as its first part `p` starts them: a `Spool` each (S1's big fields in
    `spool` past SPILL_BYTES, with `keep` in the store's files)."""
    spools = {
        f: keep.spool(f"sealed{p.clk}.{SPOOLED[f]}", SPILL_BYTES)
        if keep is not None and f in SPOOLED
        else Spool(spool if f in SPOOLED else None, SPILL_BYTES)
        for f in JOINED
    }
    return dict(bits=p.clk_bits, bands=p.bands, lacking=[], rows=0, next_band=0,
                band_counts=[], last_key=None, **spools)  # fmt: skip


def read_upload(
    parts: Iterator[pb.SharedPart], role: str, spool: Path | None = None,
    keep: Kept | None = None,
) -> tuple[str, Held]:  # fmt: skip
    """One member's upload to `role`, checked whole; S1's tokens and band keys past
    SPILL_BYTES in files in `spool` (`Spool`; None: in memory), or with `keep` in the
    store's own files (`Kept`: the caller's to discard if the upload is not kept)."""
    member = ""
    seal_key = b""
    rules: set[Rule] = set()
    withheld: set[bool] = set()  # band_keys_withheld, the same in every part
    got: dict[int, dict[str, Any]] = {}
    for n, p in enumerate(parts):
        where = f"part {n}"
        _withheld(p, role, where, withheld)
        rules.add(part_rule(p, where))
        if len(rules) > 1:
            raise errors.InvalidArgument(f"rule ({where}): not the upload's other parts' rule")
        if not p.member:
            raise errors.InvalidArgument(f"member ({where}): required")
        if member and p.member != member:
            raise errors.InvalidArgument(
                f"member ({where}): {p.member!r}, but this upload is {member!r}'s (one member "
                "an upload)"
            )
        member = p.member
        if p.clk not in (0, 1):
            raise errors.InvalidArgument(f"clk ({where}): {p.clk}; 0 (record-level) or 1")
        check_clk_bits(p.clk_bits, f"clk_bits ({where})")
        if p.keys:
            raise errors.InvalidArgument(f"keys ({where}): {OLDER}")
        if role != "s1" and (p.bands or p.band_counts or p.band_keys or p.classes or p.sealed):
            raise errors.InvalidArgument(f"band_keys ({where}): only S1 receives band keys")
        if role != "s1" and p.band_continued:
            raise errors.InvalidArgument(f"band_continued ({where}): S1's only (its band keys)")
        if role != "s2" and p.seal_key:
            raise errors.InvalidArgument(f"seal_key ({where}): only S2 receives it")
        if role == "s2" and len(p.seal_key) != SEAL_KEY_BYTES:
            raise errors.InvalidArgument(
                f"seal_key ({where}): {len(p.seal_key)} bytes; {SEAL_KEY_BYTES} in every part "
                "(an upload without one is of the older format: encode again)"
            )
        if role == "combiner" and p.shares:
            raise errors.InvalidArgument(f"shares ({where}): the combiner never receives a share")
        if p.popcounts:
            raise errors.InvalidArgument(
                f"popcounts ({where}): no role receives them (S1 and S2 take XOR shares, "
                "popcount_shares; the combiner only how many records)"
            )
        if p.lacking and (role != "s1" or p.clk != 1):
            raise errors.InvalidArgument(
                f"lacking ({where}): only S1 receives it, with the fallback CLK's parts"
            )
        if role == "s1" and p.clk == 1 and len(p.lacking) != (p.rows + 7) // 8:
            raise errors.InvalidArgument(
                f"lacking ({where}): {len(p.lacking)} bytes for {p.rows} records (a bit each)"
            )
        if role == "combiner" and p.popcount_shares:
            raise errors.InvalidArgument(
                f"popcount_shares ({where}): the combiner never receives a share"
            )
        if role != "combiner":
            if len(p.popcount_shares) != 4 * p.rows:
                raise errors.InvalidArgument(
                    f"popcount_shares ({where}): {len(p.popcount_shares)} bytes for {p.rows} "
                    "records (a uint32 share each; `blindmatch encode --two-server` writes them)"
                )
            top = int(np.frombuffer(p.popcount_shares, "<u4").max()) if p.rows else 0
            if top >> p.clk_bits.bit_length():
                raise errors.InvalidArgument(
                    f"popcount_shares ({where}): a share of {top}, beyond the "
                    f"{p.clk_bits.bit_length()} bits of a {p.clk_bits}-bit CLK's popcount"
                )
        if role == "s1" and not 1 <= p.bands <= MAX_BANDS:
            raise errors.InvalidArgument(f"bands ({where}): {p.bands}; 1 to {MAX_BANDS}")
        if role != "combiner" and len(p.shares) != p.rows * p.clk_bits // 8:
            raise errors.InvalidArgument(
                f"shares ({where}): {len(p.shares)} bytes for {p.rows} records of "
                f"{p.clk_bits}-bit CLKs"
            )
        if seal_key and p.seal_key != seal_key:
            raise errors.InvalidArgument(f"seal_key ({where}): not the earlier parts' (one an "
                                         "upload)")  # fmt: skip
        seal_key = p.seal_key
        if p.clk not in got:
            got[p.clk] = _clk(p, spool, keep)
        clk = got[p.clk]
        if (clk["bits"], clk["bands"]) != (p.clk_bits, p.bands):
            raise errors.InvalidArgument(
                f"clk_bits/bands ({where}): CLK {p.clk} came with another layout in an earlier part"
            )
        if role == "s1":
            _sealed_part(p, clk, where)
        clk["rows"] += p.rows
        most = MAX_QUERY_RECORDS if tickets.is_query(member) else MAX_RECORDS
        if clk["rows"] > most:  # (twoattack: an endless stream held every part it sent)
            raise errors.InvalidArgument(
                f"rows ({where}): CLK {p.clk} past {most:,} records, the most "
                f"{'a query' if most == MAX_QUERY_RECORDS else 'an upload'} holds"
            )
        clk["shares"] += p.shares
        clk["popshares"] += p.popcount_shares
        if role == "s1" and p.clk == 1:
            bits = np.unpackbits(np.frombuffer(p.lacking, np.uint8), bitorder="little")
            clk["lacking"].append(bits[: p.rows].astype(bool))
    if not member:
        raise errors.InvalidArgument("an upload of no parts")
    if sorted(got) not in ([0], [0, 1]):
        raise errors.InvalidArgument(f"clk: CLK 0 (and 1, the fallback), not {sorted(got)}")
    rows = [got[c]["rows"] for c in sorted(got)]
    if len(set(rows)) > 1 or not rows[0]:
        raise errors.InvalidArgument(f"rows: {rows} records by CLK (equal, and not 0)")
    clks = [got[c] for c in sorted(got)]
    sealed: tuple[Sealed, ...] = ()
    shares: tuple[npt.NDArray[np.uint8], ...] = ()
    pops: tuple[npt.NDArray[np.int64], ...] = ()
    popshares: tuple[npt.NDArray[np.uint32], ...] = ()
    if role == "s1" and withheld == {True} and not tickets.is_query(member):
        raise errors.InvalidArgument(
            f"band_keys_withheld: {member!r} is not a query's (a query ticket's name): only a "
            "query's records may come without band keys"
        )
    if role == "s1" and withheld != {True}:
        for k, c in enumerate(clks):
            if c["next_band"] != c["bands"]:
                raise errors.InvalidArgument(
                    f"band_counts: CLK {k}'s parts hold {c['next_band']} of its {c['bands']} bands"
                )
            counts = np.concatenate(c["band_counts"])
            if (counts < 1).any() or (counts > c["rows"]).any():
                raise errors.InvalidArgument(
                    f"band_counts: CLK {k} has a band of {int(counts.min())} or "
                    f"{int(counts.max())} distinct keys for {c['rows']} records (1 to the records)"
                )
        sealed = tuple(Sealed(np.concatenate(c["band_counts"]), _joined(c, "band_keys", "<u8"),
                              _joined(c, "classes", np.uint8), _joined(c, "sealed", np.uint8))
                       for c in clks)  # fmt: skip
    if role != "combiner":
        shares = tuple(_joined(c, "shares", np.uint8).reshape(c["rows"], c["bits"] // 8)
                       for c in clks)  # fmt: skip
        popshares = tuple(_joined(c, "popshares", "<u4") for c in clks)
    lacking = np.concatenate(clks[1]["lacking"]) if role == "s1" and len(clks) == 2 else None
    rule = rules.pop() if rules else NO_RULE
    if rule.active and len(clks) != 2:
        raise errors.InvalidArgument("rule: a rule over both CLKs needs a fallback CLK (clk 1)")
    held = Held(tuple(c["bits"] for c in clks), tuple(c["bands"] for c in clks), sealed, shares,
                pops, popshares, lacking, rows[0], seal_key,
                rule)  # fmt: skip
    return member, held


def read_kept(
    parts: Iterator[pb.SharedPart], role: str, store: RoleStore | None, admit: Callable[[str], None]
) -> tuple[str, Held, str, str, dict[str, str]]:
    """`read_upload`, `admit(member)` (it raises to refuse), and with a data dir (`store`)
    the upload written to the store's files, durable: S1's tokens and band keys spooled
    straight into them as the parts came (rpc/twoserver_spool.py `Kept`: written once),
    the rest written now. The member, the upload (mapped from the files with a store), the
    store's file ("" if not kept: no store, or a query's records, core/tickets.py
    QUERY_MARK, held for the query alone), its digest (the audit entry's) and the arrays
    apart (`RoleStore.write`). Nothing is left in the store's folder if it raises."""
    spool, kept, file = Path(tempfile.gettempdir()), None, ""
    if store is not None and role == "s1":
        spool, kept = store.folder, Kept(store.folder, store.new_file())
    apart: dict[str, str] = {}
    try:
        member, held = read_upload(parts, role, spool if role == "s1" else None, kept)
        admit(member)
        if store is None or tickets.QUERY_MARK in member:
            if kept is not None:  # (its files go; the arrays stay mapped)
                kept.discard()
            return member, held, "", "", {}
        apart = kept.written() if kept is not None else {}
        file, digest = store.write(held.named(), kept.file if kept else None, apart)
        # held mapped from the files just written (one copy on disk)
        held = held_from(held.meta(), store.mapped(file, held.layout(), apart))
    except BaseException:
        if kept is not None:
            kept.discard()
        if store is not None and file:
            store.discard(file, apart)
        raise
    return member, held, file, digest, apart
