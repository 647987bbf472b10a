"""What the protocol fixes beyond the shape of its messages, for both of its sides.

`ListIndex` lists each indexed CLK by an 8-byte BLAKE2b digest (`IndexListing.digests`,
concatenated), so that a member can diff its local records against its index without
the matcher sending CLKs back. The client and the matcher compute it with `clk_digest`.

A project's encodings all carry one keyed (schema, secret) fingerprint. `project show`
names it by `fingerprint_id`, a short check value a member compares with its own ENCODED
folder's before uploading, and the matcher's refusal of a mismatching upload names both
ids. 40 bits of a hash of the fingerprint: they tell a member nothing it cannot compute
itself, and the operator nothing beyond the fingerprint it already holds.
"""

from __future__ import annotations

import base64
import functools
import hashlib

DIGEST_BYTES = 8
# A two-server query's records sent without their band keys (SharedPart.band_keys_withheld)
# where S1 blocks the query against a partner: S1's refusal (FAILED_PRECONDITION) starts with
# it, and so does the matcher's, on which the client sends the records again with their keys
# (docs/protocol.md "A query without band keys").
BAND_KEYS_NEEDED = "band_keys_needed"
# Where S1 runs `--query-band-keys refuse` (its default since 2026-12-07) it refuses such a query
# with this instead, asking for no keys; the matcher tells the member why, in words
# (docs/protocol.md "A query S1 will not compare by band keys").
BAND_KEYS_REFUSED = "band_keys_refused"
# A two-server watch the matcher ends `band_keys_needed` (S1 blocks it against a partner's new
# upload) names that partner in this trailing metadata, as well as in its message (for people):
# the client reads the name here, never from the text (docs/realtime.md "Watching in a
# two-server project"); a query's `band_keys_needed` refusal names it here too (memberkeys).
BLOCKED_PARTNER_METADATA = "blindmatch-blocked-partner"
# A query stream (QueryStream) the matcher ends with a question of its client's not read (the
# matcher is stopping, `QueryStreams.end_all`) says so in this trailing metadata, `1`: that
# question, if the client sent one, was neither asked nor counted, so the client sends it again
# on a new stream (docs/realtime.md "Many questions: query sessions").
UNASKED_METADATA = "blindmatch-unasked"
# An upload of no records refused because it would replace the member's current upload of
# some (UploadHeader.allow_empty unset) says how many in this trailing metadata: the command
# line names them, and the file, from here, never from the message.
REPLACES_RECORDS_METADATA = "blindmatch-replaces-records"
# A two-server catch-up query (QueryRequest.catch_up_ticket) does not search a partner's current
# upload that its watch compares: its `not_searched` entry for that partner starts with this,
# and the client counts it as no gap (the watch tells that upload's matches).
WATCH_COMPARES = "compared by the watch this query catches up for"


def clk_digest(clk: bytes) -> bytes:
    """The digest ListIndex reports for one CLK."""
    return hashlib.blake2b(clk, digest_size=DIGEST_BYTES).digest()


@functools.lru_cache(maxsize=256)  # asked for every query, of the same few fingerprints
def fingerprint_id(fingerprint: bytes) -> str:
    """The short id of a (schema, secret) fingerprint, e.g. `fp-k3vq-7m2a`."""
    digest = hashlib.sha256(b"blindmatch fingerprint id v1\0" + fingerprint).digest()[:5]
    text = base64.b32encode(digest).decode().lower()
    return f"fp-{text[:4]}-{text[4:]}"


def limits_conflict(per_minute: int, per_day: int, member: str = "", watch: bool = False) -> str:
    """Why a `SetQueryLimits` call giving these cannot be meant (0: a value not given), in
    the words both the matcher's refusal (INVALID_ARGUMENT) and `admin query-limits` (exit 2,
    before it calls) say; "" when it can. Both a minute's rate and a day's quota given, the
    day's below the minute's: the minute's could never be used (the two swapped, say). A
    value given alone may be below one it keeps (a day's quota lowered under the minute's
    rate kept: the day's is what is meant). `watch` (allow_watch set) for one `member`:
    watching is project-wide, and the call ignored it."""
    if watch and member:
        return (
            f"allow_watch: project-wide, so it cannot be set for member {member!r} alone; "
            "set it without a member"
        )
    if not per_minute or not per_day or per_day >= per_minute:
        return ""
    return (
        f"records_per_day {per_day:,} is below records_per_minute {per_minute:,}: a day's "
        "quota under a minute's rate cannot be meant (the minute's could never be used); "
        "give records_per_day at least records_per_minute"
    )
