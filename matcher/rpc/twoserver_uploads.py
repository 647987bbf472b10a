"""A member's upload to one role of the two-server run, checked whole
(rpc/twoserver_service.py): each role takes only its own fields."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from blindmatch.matcher import errors
from blindmatch.matcher.core.encodings import check_clk_bits
from blindmatch.protos import blindmatch_pb2 as pb

MAX_BANDS = 65_536  # the schema's (client/encoding/schema.py)


@dataclass(frozen=True)
class Held:
    """One member's upload to one role, per CLK: widths, and the role's own arrays."""

    bits: tuple[int, ...]
    bands: tuple[int, ...]
    keys: tuple[npt.NDArray[np.uint64], ...]
    shares: tuple[npt.NDArray[np.uint8], ...]
    popcounts: tuple[npt.NDArray[np.int64], ...]
    popshares: tuple[npt.NDArray[np.uint32], ...] = ()  # S1, S2: shares of the popcounts
    lacking: npt.NDArray[np.bool_] | None = None  # S1, with a fallback CLK
    rows: int = 0  # records

    @property
    def records(self) -> int:
        return self.rows


def read_upload(parts: Iterator[pb.SharedPart], role: str) -> tuple[str, Held]:
    """One member's upload to `role`, checked whole."""
    member = ""
    got: dict[int, dict[str, Any]] = {}
    for n, p in enumerate(parts):
        where = f"part {n}"
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
        if role != "s1" and (p.keys or p.bands):
            raise errors.InvalidArgument(f"keys ({where}): only S1 receives band keys")
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
        if role == "s1":
            if not 1 <= p.bands <= MAX_BANDS:
                raise errors.InvalidArgument(f"bands ({where}): {p.bands}; 1 to {MAX_BANDS}")
            if len(p.keys) != 8 * p.bands * p.rows:
                raise errors.InvalidArgument(
                    f"keys ({where}): {len(p.keys)} bytes for {p.rows} records of {p.bands} "
                    "band keys"
                )
        if role != "combiner" and len(p.shares) != p.rows * p.clk_bits // 8:
            raise errors.InvalidArgument(
                f"shares ({where}): {len(p.shares)} bytes for {p.rows} records of "
                f"{p.clk_bits}-bit CLKs"
            )
        clk = got.setdefault(p.clk, dict(bits=p.clk_bits, bands=p.bands, keys=[], shares=[],
                                         popcounts=[], popshares=[], lacking=[],
                                         rows=0))  # fmt: skip
        if (clk["bits"], clk["bands"]) != (p.clk_bits, p.bands):
            raise errors.InvalidArgument(
                f"clk_bits/bands ({where}): CLK {p.clk} came with another layout in an earlier part"
            )
        clk["rows"] += p.rows
        clk["keys"].append(p.keys)
        clk["shares"].append(p.shares)
        clk["popshares"].append(p.popcount_shares)
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
    keys: tuple[npt.NDArray[np.uint64], ...] = ()
    shares: tuple[npt.NDArray[np.uint8], ...] = ()
    pops: tuple[npt.NDArray[np.int64], ...] = ()
    popshares: tuple[npt.NDArray[np.uint32], ...] = ()
    if role == "s1":
        keys = tuple(np.frombuffer(b"".join(c["keys"]), "<u8").astype(np.uint64)
                     .reshape(c["rows"], c["bands"]) for c in clks)  # fmt: skip
    if role != "combiner":
        shares = tuple(np.frombuffer(b"".join(c["shares"]), np.uint8)
                       .reshape(c["rows"], c["bits"] // 8) for c in clks)  # fmt: skip
        popshares = tuple(np.frombuffer(b"".join(c["popshares"]), "<u4").astype(np.uint32)
                          for c in clks)  # fmt: skip
    lacking = np.concatenate(clks[1]["lacking"]) if role == "s1" and len(clks) == 2 else None
    held = Held(tuple(c["bits"] for c in clks), tuple(c["bands"] for c in clks), keys, shares,
                pops, popshares, lacking, rows[0])  # fmt: skip
    return member, held
