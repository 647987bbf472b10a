"""A member's upload as `project show` says it (text and `--json`): only a whole upload is
counted as held. For a two-server upload started and not taken (its ticket issued, its header
not at the matcher), where its shares are, as S1 and S2 answered the matcher's `Holds`
(rpc/twoserver_holds.py; the operator's view and the member's own line): at S1 or S2 only, or
at neither, so the member's earlier upload is still whole. Unasked (a partner's, or a role
that did not answer), both remain possible and the line says so."""

from __future__ import annotations

from typing import TYPE_CHECKING

from blindmatch.cli.options import when

if TYPE_CHECKING:
    from blindmatch.client.remote.model import MemberState, ProjectInfo


def sent_nothing(m: MemberState) -> bool:
    """S1 and S2 both answered that they hold no share of the started upload."""
    return m.started_at_s1 == m.started_at_s2 == "not held"


def upload_state(m: MemberState) -> str:
    """The member's line after its name."""
    if not m.started_unix:
        return f"{m.record_count} records uploaded" if m.uploaded else "not uploaded"
    issued = f"ticket issued {when(m.started_unix)}"
    if sent_nothing(m):
        earlier = f"{m.record_count} records uploaded" if m.uploaded else "not uploaded"
        return f"{earlier} (an upload started, {issued}, sent nothing: S1 and S2 hold none of it)"
    where = _where(m) or (
        "nothing may have been sent, or its shares may be at S1 or S2 only"
    )  # not asked: a partner's upload, or neither role answered
    earlier = (
        f"; its earlier upload of {m.record_count} records is not counted as held (S1 or S2 "
        "may hold the new one in its place)"
        if m.uploaded
        else ""
    )
    return f"upload started, not finished ({issued}; {where}; it uploads again){earlier}"


def _where(m: MemberState) -> str:
    """Where the started upload's shares are, from what S1 and S2 answered ("" neither)."""
    said = {"S1": m.started_at_s1, "S2": m.started_at_s2}
    held = [who for who, s in said.items() if s == "held"]
    unasked = [who for who, s in said.items() if not s]
    if len(unasked) == 2:
        return ""
    if held:
        where = f"its shares are at {' and '.join(held)}"
        where += " only" if len(held) == 1 and not unasked else ""
        where += ", its header not at the matcher" if len(held) == 2 else ""
    else:
        where = f"{' and '.join(w for w in said if w not in unasked)} holds none of it"
    return where + "".join(f"; {w} could not be asked" for w in unasked)


def unasked_line(info: ProjectInfo) -> str:
    """Why S1 or S2 could not be asked where a started upload is ("" when both answered)."""
    if not info.two_server_unasked:
        return ""
    return f"  (asked where the started uploads' shares are: {info.two_server_unasked})"


def as_json(m: MemberState) -> dict[str, object]:
    """The member's upload keys of `show --json`."""
    whole = m.whole  # (a started upload that reached neither S1 nor S2: the earlier)
    return {
        "record_count": m.record_count if whole else None,
        "upload": "whole" if whole else "started" if m.started_unix else "none",
        **({"upload_started": when(m.started_unix)} if m.started_unix else {}),
        **({"started_at": {"s1": m.started_at_s1, "s2": m.started_at_s2}}
           if m.started_at_s1 or m.started_at_s2 else {}),
    }  # fmt: skip
