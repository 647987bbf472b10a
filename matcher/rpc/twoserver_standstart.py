"""S1's and S2's check of a conversion's piece 0 that comes without a query (standahead:
rpc/twoserver_standahead.py): `ahead`, from rpc/twoserver_standing.py `_checked`, S2's check
of its shape and S1's also against what S1 itself knows in place of a query's proposal
(`ONE_RECORD`: a query against the partner under S1's caps; rpc/twoserver_standcache.py
`Standings.ahead`), refusing it PERMISSION_DENIED, audited `twoserver.refused`; and
`partner_alone`, the partner's upload of a piece that names it alone (this one, or a later
piece), else INVALID_ARGUMENT. The rules (what such a piece names, what S1 checks):
rpc/twoserver_standing.py; the wire: docs/protocol.md "A conversion started ahead of its
queries".
"""

from __future__ import annotations

from blindmatch.matcher import errors
from blindmatch.matcher.core import exhaustive, standing, tickets
from blindmatch.matcher.core.margincircuit import Plan
from blindmatch.matcher.core.proposal import Refused, run_cutoffs
from blindmatch.matcher.rpc.twoserver_margin import margin_plan
from blindmatch.matcher.rpc.twoserver_role import NAMES, _Role
from blindmatch.matcher.rpc.twoserver_standcache import AHEAD_SECONDS
from blindmatch.matcher.rpc.twoserver_uploads import Held as Upload
from blindmatch.matcher.rpc.twoserver_uploads import part_rule
from blindmatch.protos import blindmatch_pb2 as pb

# The one-record query S1 weighs a partner against (`run_cap` reads only that it is a query's).
ONE_RECORD = f"asker{tickets.QUERY_MARK}00000000/00000000"


def partner_alone(role: _Role, m: pb.BlockDeal, what: str) -> Upload:
    """The partner's upload of a deal that names it alone (`what`: a conversion's later
    piece, rpc/twoserver_standing.py `_continued`, or a piece 0 ahead of any query), at the
    records held of it and their pieces, else INVALID_ARGUMENT."""
    if m.member_a or m.records_a or m.part or m.rows_a or m.rows_b or m.clk:
        raise errors.InvalidArgument(
            f"member_a/records_a/part/rows_a/rows_b/clk: {what} names its partner (member_b) alone"
        )
    b = role.member(m.member_b, "member_b")
    pieces = len(standing.chunks(b.records))
    if m.records_b != b.records or m.standing_pieces != pieces or m.standing_piece >= pieces:
        piece = f" (piece {m.standing_piece})" if m.standing_piece else ""
        raise errors.InvalidArgument(
            f"records_b/standing_pieces: {m.records_b} records in {m.standing_pieces} pieces"
            f"{piece}, but {NAMES[role.role]} holds {b.records} of {m.member_b!r}, {pieces} "
            "pieces"
        )
    return b


def ahead(role: _Role, m: pb.BlockDeal) -> tuple[list[Upload], Plan]:
    """Piece 0 `m` without a query, checked (S1: against its own rules, `_allowed`): the
    partner's upload (twice: a piece reads member_b's alone) and the conversion's margin plan."""
    b = partner_alone(role, m, "a conversion's piece 0 without a query")
    rule = part_rule(m, "standing")
    p = margin_plan(b.bits, 0, m.cutoffs, rule, "standing")
    role.standing.keeps(m, b.records, tuple(b.bits))  # or refused: no room for [M_B]
    if role.role == "s1":
        _allowed(role, m, b)
    return [b, b], p


def _allowed(role: _Role, m: pb.BlockDeal, b: Upload) -> None:
    """S1: a conversion C could start under the project's rules, else PERMISSION_DENIED
    (audited); noted (`Standings.ahead`) last, once everything else passed."""
    try:
        if tickets.is_query(m.member_b):
            raise Refused(f"member_b: {m.member_b!r} is a query's or watch's records, no partner")
        cutoffs = run_cutoffs(m.cutoffs[0] if m.cutoffs else 0.0, m.cutoffs[1:])
        threshold = getattr(role, "threshold", None)
        if threshold is not None and cutoffs[0] != threshold:
            raise Refused(f"cutoffs: threshold {cutoffs[0]}, but S1 runs at {threshold}")
        rule = part_rule(m, "standing")
        if not rule.active or rule != b.rule:
            raise Refused(
                f"rule: {rule.text() or 'none'}, but {m.member_b!r}'s upload says "
                f"{b.rule.text() or 'none'} (a standing part is under the upload's rule)"
            )
        project = m.member_b.split("/", 1)[0] + "/" if "/" in m.member_b else ""
        if not exhaustive.run_cap([project + ONE_RECORD, m.member_b], role.exhaustive,  # type: ignore[attr-defined]
                                  [1, b.records], role.small_member,  # type: ignore[attr-defined]
                                  role.query_whole):  # type: ignore[attr-defined]  # fmt: skip
            raise Refused(
                f"member_b: a one-record query against {m.member_b}'s {b.records:,} records "
                "is blocked under S1's caps (--query-whole-pairs): never compared whole, so "
                "never converted"
            )
        since = role.standing.ahead(m.member_b, b)
        if since is not None:
            raise Refused(
                f"standing: {m.member_b!r}'s upload was converted without a query "
                f"{since:.0f} s ago (once in {AHEAD_SECONDS:.0f} s): a query starts it"
            )
    except Refused as exc:
        role.log("combiner", "twoserver.refused", members=["", m.member_b], standing=m.standing,
                 reason=str(exc))  # fmt: skip
        raise errors.PermissionDenied(str(exc)) from None


__all__ = ["ONE_RECORD", "ahead", "partner_alone"]
