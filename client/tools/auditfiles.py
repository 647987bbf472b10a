"""Audit entries (as `MatcherClient.audit` yields them) as files people read: CSV, one
self-contained HTML page, and the member-side report of who in the organisation looked at
what, and why (DPA 2018 s.62: consultations and disclosures, with the person and the
justification).

Times are ISO-8601 UTC (`2026-12-03T13:24:19Z`). The HTML page loads nothing (no scripts,
no styles or fonts from elsewhere) and every value in it is escaped; a CSV cell that a
spreadsheet would run as a formula (starting with `=`, `+`, `-`, `@`, a tab or a carriage
return) is prefixed with `'`.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterable, Sequence
from html import escape
from typing import Any

from blindmatch import __version__

Entry = dict[str, Any]

# The columns of the CSV and the HTML table, in order.
COLUMNS = (
    "seq", "time", "project", "actor", "user", "action", "member", "purpose", "disclosed",
    "detail", "hash",
)  # fmt: skip

# Consultations and disclosures: what the report of who looked at what lists.
CONSULTATIONS = {
    "results.disclose": "fetched results",
    "query": "queried partners' records",  # indexes, or in a two-server project uploads
    "watch": "opened a watch",
    "watch.notify": "was told of a watched match",
    "query.refused": "was refused a query (quota or rate limit)",
    "project.describe": "looked at the project's upload status",
    "request.issue": "was issued request references for a hit",
    "request.resolve": "resolved a partner's request reference",
}
ORGANISATION_TOKEN = "(organisation token)"
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def iso(unix: float) -> str:
    """Seconds since 1970 as ISO-8601 UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def cells(entry: Entry) -> list[str]:
    """One entry's values, as text, in `COLUMNS` order."""
    values = {
        **entry,
        "time": iso(float(entry["time"])),
        "disclosed": _mapping(entry.get("disclosed") or {}),
        "detail": json.dumps(entry.get("detail") or {}, sort_keys=True, ensure_ascii=False),
    }
    return [str(values.get(c, "")) for c in COLUMNS]


def _mapping(value: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in sorted(value.items()))


def _safe_cell(text: str) -> str:
    return "'" + text if text.startswith(_FORMULA) else text


def to_csv(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_safe_cell(c) for c in row] for row in rows)
    return buf.getvalue()


def entries_csv(entries: Iterable[Entry]) -> str:
    return to_csv(COLUMNS, (cells(e) for e in entries))


CSS = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #eee; }
td.wrap { max-width: 28em; overflow-wrap: anywhere; }
.muted { color: #666; font-size: 0.9em; }
"""


def to_html(title: str, intro: str, header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """One self-contained page: a title, a paragraph and a table, every value escaped."""
    body = "".join(
        "<tr>" + "".join(f'<td class="wrap">{escape(c)}</td>' for c in row) + "</tr>\n"
        for row in rows
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
        f"<h1>{escape(title)}</h1>\n<p>{escape(intro)}</p>\n"
        "<table><thead><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in header)
        + f"</tr></thead><tbody>\n{body}</tbody></table>\n"
        f'<p class="muted">Made {escape(iso(time.time()))} by blindmatch '
        f"{escape(__version__)}. Times are UTC.</p>\n</body></html>\n"
    )


def entries_html(entries: Sequence[Entry], scope: str) -> str:
    intro = (
        f"{len(entries)} audit entries ({scope}). A member's export holds its own actions, "
        "what was done to it, project-wide events, and its partners' disclosures about its "
        "records as one partner.disclosures line per partner per closed UTC day."
    )
    return to_html("blindmatch audit log", intro, COLUMNS, (cells(e) for e in entries))


# -- who in my organisation looked at what, and why ------------------------------------------

WHO_COLUMNS = ("time", "member", "user", "what", "purpose", "partners", "records")


def who_looked(entries: Iterable[Entry]) -> list[list[str]]:
    """Every consultation and disclosure made by a member (through its users or its own
    token), oldest first: when, who, what, why, whose information and how many records."""
    rows = []
    for e in entries:
        what = CONSULTATIONS.get(str(e["action"]))
        actor = str(e["actor"])
        if what is None or actor in ("operator", "matcher"):
            continue
        if e.get("member") not in ("", actor):
            continue  # a partner's line about this member, not this member's own look
        detail = e.get("detail") or {}
        if e["action"] == "request.resolve" and "records" not in detail:
            continue  # a partner answering this member's request (its view has no count)
        records = detail.get("records", "")
        if e["action"] == "results.disclose":  # how many of its records each partner holds
            records = _mapping(detail.get("counts") or {})
        rows.append(
            [
                iso(float(e["time"])),
                actor,
                str(e.get("user") or ORGANISATION_TOKEN),
                what,
                str(e.get("purpose") or ""),
                _mapping(e.get("disclosed") or {}),
                str(records),
            ]
        )
    return rows


def who_text(rows: Sequence[Sequence[str]]) -> str:
    """The report as aligned text columns."""
    if not rows:
        return "No consultations or disclosures recorded.\n"
    table = [list(WHO_COLUMNS), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(WHO_COLUMNS))]
    return "".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() + "\n" for r in table
    )


def who_html(rows: Sequence[Sequence[str]], scope: str) -> str:
    intro = (
        f"Who looked at what, and why ({scope}): {len(rows)} consultations and disclosures, "
        f"each with the named user who made it ({ORGANISATION_TOKEN} where the member's own "
        "token was used) and the purpose given."
    )
    return to_html("Who looked at what, and why", intro, WHO_COLUMNS, rows)
