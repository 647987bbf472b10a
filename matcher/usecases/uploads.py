"""Receiving an upload: a member's CLKs for batch runs, stored whole or not at all.

The header is checked first (CLK length, record count, fingerprint, digest, field and
fallback layout, retry id); a retry of an upload already acknowledged under the same
client id is answered from the store at once. Then the CLKs are streamed to a file in
`tmp/`, never held in memory beyond one message, counted and hashed as they arrive,
fsynced, checked against the header, and committed: renamed into `clks/` with its row
and audit entry in one transaction (storage/upload_store.py). A full disk at any point
is `ResourceExhausted`; whatever fails, the file in `tmp/` is removed.

A two-server project's members never send CLKs here, nor anything derived from them: their
upload is a header alone (`two_server_upload`), under the upload ticket the matcher signed for
their shares at S1 and S2 (`two_server_ticket`, core/tickets.py): how many records, the CLKs'
widths, the fingerprint and rule, and as sha256 the digest of the member's second shares
(uniformly random bytes: the name results and request references give the upload). It is
committed the same way, with an empty file, and the member's name at S1 and S2 beside it. A
CLK upload to such a project, and a two-server upload to a CLK project, are refused before
a byte is read.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from blindmatch.matcher.core import tickets
from blindmatch.matcher.core.encodings import (
    Held,
    check_clk_bits,
    check_compatible,
    check_fingerprint,
    same_scoring,
)
from blindmatch.matcher.core.fallback import NO_RULE, Rule, checked_rule
from blindmatch.matcher.domain import (
    CLIENT_UPLOAD_ID_RE,
    HEX_DIGITS,
    MAX_RECORDS,
    TWO_SERVER,
    Encoding,
    counted,
    retried_upload,
)
from blindmatch.matcher.errors import (
    FailedPrecondition,
    InvalidArgument,
    PermissionDenied,
    ResourceExhausted,
)
from blindmatch.matcher.storage.sqlite import disk_full, full_disk
from blindmatch.matcher.storage.store import Store
from blindmatch.protos.wire import REPLACES_RECORDS_METADATA, fingerprint_id

log = logging.getLogger("blindmatch.matcher")


@dataclass(frozen=True)
class UploadHeader:
    project: str
    clk_bits: int
    record_count: int
    fingerprint: bytes
    sha256: str
    client_upload_id: str = ""
    field_bits: tuple[int, ...] = ()
    fallback_bits: int = 0
    schema_digest: str = ""  # SHA-256 of the schema's canonical JSON; "" when not sent
    two_server_ticket: str = ""  # a two-server project's upload: a header alone
    two_server_bits: tuple[int, ...] = ()  # their CLKs' widths (record-level, fallback)
    rule: Rule = NO_RULE  # the schema's rule over both CLKs (core.fallback); checked here
    allow_empty: bool = False  # no records may replace the member's current upload of some


@dataclass(frozen=True)
class UploadReceipt:
    upload_id: str
    record_count: int
    sha256: str
    replayed: bool  # an upload acknowledged earlier under the same client id


def check_header(header: UploadHeader, two_server: bool = False) -> str:
    """Refuse a malformed header; the sha256 it promises, in lower case. `two_server`: a
    two-server project's upload (no CLKs: clk_bits 0, `two_server_name` checked the rest)."""
    bits, count = header.clk_bits, header.record_count
    if not two_server:
        check_clk_bits(bits, "header.clk_bits")
    if count > MAX_RECORDS:
        raise ResourceExhausted(
            f"header.record_count: {count} is over this matcher's limit of {MAX_RECORDS}"
        )
    check_fingerprint(header.fingerprint, "header.fingerprint")
    sha256 = header.sha256.lower()
    if len(sha256) != 64 or set(sha256) - HEX_DIGITS:
        raise InvalidArgument("header.sha256: must be 64 hex digits")
    fields = header.field_bits
    if fields and (sum(fields) != bits or any(b == 0 or b % 64 for b in fields)):
        raise InvalidArgument(
            "header.field_bits: field sizes must be multiples of 64 adding up to clk_bits"
        )
    fallback = header.fallback_bits
    if fallback and (fallback % 64 or fallback >= bits or fields):
        raise InvalidArgument(
            "header.fallback_bits: a multiple of 64 below clk_bits, and only for "
            "record-level CLKs (no field_bits)"
        )
    rule, fallback = header.rule, header.fallback_bits
    if two_server:  # the rule over the shares' CLKs (which a two-server run applies)
        fallback = header.two_server_bits[1] if len(header.two_server_bits) > 1 else 0
    checked_rule(rule.gap, rule.offset, rule.reach, fallback, "header.rule")
    schema = header.schema_digest
    if schema and (len(schema) != 64 or set(schema) - HEX_DIGITS):
        raise InvalidArgument("header.schema_digest: 64 lower-case hex digits, or empty")
    key = header.client_upload_id
    if key and not CLIENT_UPLOAD_ID_RE.fullmatch(key):
        raise InvalidArgument(
            "header.client_upload_id: 1 to 128 of the characters A-Z a-z 0-9 _ . -"
        )
    return sha256


CLK_REFUSED = (
    "project {project!r} runs in two-server mode: the matcher never takes its members' CLKs. "
    "Encode with `blindmatch encode ... --two-server` and send it with `blindmatch upload` "
    "(it sends the shares to S1 and S2 and only how many records here)"
)


def two_server_name(
    header: UploadHeader, member: str, ticket_key: str, now: float
) -> tuple[str, tuple[int, ...]]:
    """A two-server upload's header checked: the member's name at S1 and S2 (the ticket's,
    which must be this member's in this project) and its CLKs' widths."""
    if not ticket_key:
        raise FailedPrecondition(
            "header.two_server_ticket: this matcher was started without two-server servers "
            "(serve --two-server-s1/--two-server-s2), so it takes no two-server upload"
        )
    try:
        name, _ = tickets.verify(ticket_key, header.two_server_ticket, now)
    except ValueError as exc:
        raise InvalidArgument(f"header.two_server_ticket: {exc}") from None
    if tickets.is_query(name):
        raise InvalidArgument(
            "header.two_server_ticket: a query ticket, for a query's records only (Query), "
            "never an upload"
        )
    project, owner, _ = tickets.owner(name)
    if (project, owner) != (header.project, member):
        raise PermissionDenied(
            f"header.two_server_ticket: issued to {owner!r} of {project!r}, not to {member!r} "
            f"of {header.project!r}"
        )
    return name, two_server_widths(header)


def two_server_widths(header: UploadHeader, field: str = "header") -> tuple[int, ...]:
    """A two-server header's CLK widths (record-level, then fallback), checked: it sends the
    matcher no records, so clk_bits 0 and no field or fallback layout."""
    if header.clk_bits or header.field_bits or header.fallback_bits:
        raise InvalidArgument(
            f"{field}.clk_bits: {header.clk_bits}, but a two-server upload sends the matcher no "
            "records (clk_bits 0, no field_bits, no fallback_bits; the CLKs' widths in "
            "two_server_bits)"
        )
    widths = header.two_server_bits
    if len(widths) not in (1, 2):
        raise InvalidArgument(
            f"{field}.two_server_bits: {len(widths)} widths; the record-level CLK's, and the "
            "fallback CLK's where there is one"
        )
    for k, bits in enumerate(widths):
        check_clk_bits(bits, f"{field}.two_server_bits[{k}]")
    return tuple(widths)


def check_planned_two_server(
    store: Store, header: UploadHeader, member: str, query: bool = False
) -> None:
    """The header a two-server upload will carry, checked before its ticket is issued
    (TwoServerTicket's `upload`): what Upload checks of it without the ticket or the shares
    (widths, fingerprint, schema digest, rule), and that its encoding is the project's
    current uploads', so that a mismatch is refused before a share reaches S1 or S2; and,
    but for a `query`'s records (which replace no upload), that it empties no upload."""
    widths = two_server_widths(header, "upload")
    check_fingerprint(header.fingerprint, "upload.fingerprint")
    schema = header.schema_digest
    if schema and (len(schema) != 64 or set(schema) - HEX_DIGITS):
        raise InvalidArgument("upload.schema_digest: 64 lower-case hex digits, or empty")
    rule = header.rule
    checked_rule(rule.gap, rule.offset, rule.reach, widths[1] if len(widths) > 1 else 0,
                 "upload.rule")  # fmt: skip
    if not query:
        check_not_emptying(store, header, member, "upload")
    check_matches_project(store, header, member)


def check_not_emptying(
    store: Store, header: UploadHeader, member: str, field: str = "header"
) -> None:
    """Refuse an upload of no records that would replace `member`'s current upload of some,
    unless its header says so (`allow_empty`): nothing is lost silently. The records it
    would replace go in the trailing metadata too (the command line names them)."""
    if header.record_count or header.allow_empty:
        return
    current = store.current_uploads(header.project).get(member)
    if current is None or not current.record_count:
        return
    n = current.record_count
    exc = FailedPrecondition(
        f"{field}.record_count: an upload of no records would replace {member}'s current "
        f"upload of {counted(n, 'record')} (upload {current.id}); set "
        f"{field}.allow_empty to replace it with none (`blindmatch upload --allow-empty`)"
    )
    exc.trailing = ((REPLACES_RECORDS_METADATA, str(n)),)
    raise exc


def header_encoding(header: UploadHeader) -> Encoding:
    """The encoding a header promises: a two-server upload's fallback width is in
    `two_server_bits` (its `clk_bits` is 0: the matcher holds no CLK)."""
    fallback = header.fallback_bits
    if len(header.two_server_bits) > 1:
        fallback = header.two_server_bits[1]
    return Encoding(header.clk_bits, header.fingerprint, fallback, header.rule)


def check_matches_project(store: Store, header: UploadHeader, member: str) -> None:
    """Refuse, before a byte of CLKs is read, encodings that differ from the project's:
    named by the member whose upload set them (the earliest current one of another
    member) and both fingerprint ids. (Storage checks again when committing.)"""
    others = [(m, u) for m, u in store.current_uploads(header.project).items() if m != member]
    if not others:
        return
    first_member, first = others[0]
    also = [m for m, _ in others[1:]]
    matching = f"; {', '.join(also)} {'match' if len(also) > 1 else 'matches'} it" if also else ""
    check_compatible(
        header_encoding(header),
        [
            Held(
                f"{first_member}'s upload (the earliest held in this project{matching})",
                store.upload_encoding(first),
                ident=fingerprint_id(first.fingerprint),
                schema_digest=store.schema_digest(first.id),
            )
        ],
        ident=fingerprint_id(header.fingerprint),
        schema_digest=header.schema_digest,
    )


def receive_upload(
    store: Store,
    member: str,
    header: UploadHeader,
    chunks: Iterable[bytes | None],
    *,
    max_upload_bytes: int,
    check: Callable[[], None] | None = None,
    ticket_key: str = "",
) -> UploadReceipt:
    """Store `member`'s upload, whose CLKs arrive as `chunks` after `header` (None: a
    message that is not CLKs), as its current data for the project. `check` runs inside
    the committing transaction and may refuse (the uploader's token revoked meanwhile).
    `ticket_key`: the members' key of S1 and S2, which signs two-server upload tickets."""
    project = store.project(header.project)  # expired: NotFound, like every member call
    two_server = None
    if project.mode == TWO_SERVER:
        if not header.two_server_ticket:
            raise FailedPrecondition(CLK_REFUSED.format(project=project.name))
        two_server = two_server_name(header, member, ticket_key, time.time())
    elif header.two_server_ticket or header.two_server_bits:  # the field sent (protowalk)
        field = "two_server_ticket" if header.two_server_ticket else "two_server_bits"
        raise FailedPrecondition(
            f"header.{field}: project {project.name!r} is not a two-server project "
            "(its members upload CLKs: `blindmatch upload` without a two-server ticket)"
        )
    sha256 = check_header(header, two_server is not None)
    bits, count, key = header.clk_bits, header.record_count, header.client_upload_id
    earlier = store.keyed_upload(header.project, member, key) if key else None
    if earlier is not None:
        scored = same_scoring(store.upload_encoding(earlier), header_encoding(header))
        retried_upload(earlier, key, sha256=sha256, record_count=count, clk_bits=bits,
                       same_scoring=scored)  # fmt: skip
        log.info("%s/%s retried upload %s: acknowledged again", header.project, member, key)
        return UploadReceipt(earlier.id, count, earlier.sha256, replayed=True)
    check_not_emptying(store, header, member)
    check_matches_project(store, header, member)
    check = _not_emptying_at_commit(store, header, member, check)
    if two_server is not None:
        return _two_server_upload(store, member, header, chunks, two_server, check)
    clk_bytes = bits // 8
    if count * clk_bytes > max_upload_bytes:
        raise ResourceExhausted(
            f"header: {count} CLKs of {bits} bits is {count * clk_bytes} bytes, over this "
            f"matcher's limit of {max_upload_bytes} bytes per upload"
        )
    digest = hashlib.sha256()
    received = 0
    with store.ensure_room(count * clk_bytes) as room, _upload_file(store) as part:
        with open(part, "wb") as fh:
            for data in chunks:
                if data is None:
                    raise InvalidArgument("clks: only the first message may be a header")
                if len(data) % clk_bytes:
                    raise InvalidArgument(
                        f"clks: {len(data)} bytes is not a whole number of {bits}-bit CLKs "
                        f"(record {received + len(data) // clk_bytes})"
                    )
                received += len(data) // clk_bytes
                if received > count:
                    raise InvalidArgument(f"clks: more CLKs than header.record_count ({count})")
                digest.update(data)
                fh.write(data)
                room.wrote(len(data))
            fh.flush()
            os.fsync(fh.fileno())
        if received != count:
            raise InvalidArgument(
                f"clks: the upload ended after {received} of {count} CLKs; nothing was stored"
            )
        if digest.hexdigest() != sha256:
            raise InvalidArgument(  # was only "content does not match" (protowalk)
                f"clks: their SHA-256 is {digest.hexdigest()[:16]}..., not header.sha256 "
                f"{sha256[:16]}...: header.sha256 must be the SHA-256 of every CLK byte sent, "
                "in order; nothing was stored (send the upload again)"
            )
        upload, replayed = store.commit_upload(
            header.project,
            member,
            part,
            record_count=count,
            clk_bits=bits,
            fingerprint=header.fingerprint,
            sha256=sha256,
            client_upload_id=key,
            field_bits=header.field_bits,
            fallback_bits=header.fallback_bits,
            rule=header.rule,
            check=check,
            schema_digest=header.schema_digest,
        )
    log.info("%s/%s uploaded %d CLKs", header.project, member, count)
    return UploadReceipt(upload.id, count, upload.sha256, replayed)


@contextmanager
def _upload_file(store: Store) -> Iterator[Path]:
    """A new upload's file (`new_upload_path`), gone after (its commit moves it into place),
    the disk running out refused with RESOURCE_EXHAUSTED."""
    part = store.new_upload_path()
    try:
        yield part
    except OSError as exc:
        if disk_full(exc):
            raise full_disk(exc) from exc
        raise
    finally:
        part.unlink(missing_ok=True)


def _not_emptying_at_commit(
    store: Store, header: UploadHeader, member: str, check: Callable[[], None] | None
) -> Callable[[], None]:
    """`check`, then `check_not_emptying` again, inside the transaction that replaces the
    member's current upload: another upload of the member's, of some records, may have been
    committed since this one's header was checked (two at once), and an upload of none would
    replace it silently (opsleft, 2026-12-07)."""

    def committing() -> None:
        if check is not None:
            check()
        check_not_emptying(store, header, member)

    return committing


def _two_server_upload(
    store: Store,
    member: str,
    header: UploadHeader,
    chunks: Iterable[bytes | None],
    two_server: tuple[str, tuple[int, ...]],
    check: Callable[[], None] | None,
) -> UploadReceipt:
    """A two-server project's upload: the header alone (any `clks` message refused),
    committed with an empty file; the fallback CLK's width and the rule recorded as a CLK
    upload's are."""
    for data in chunks:
        raise InvalidArgument(
            "clks: a two-server upload sends the matcher no records (its shares go to S1 and "
            "S2; the matcher holds only how many)"
            if data is not None
            else "clks: only the first message may be a header"
        )
    widths = two_server[1]
    with _upload_file(store) as part:
        upload, replayed = store.commit_upload(
            header.project, member, part, record_count=header.record_count, clk_bits=0,
            fingerprint=header.fingerprint, sha256=header.sha256.lower(),
            client_upload_id=header.client_upload_id,
            fallback_bits=widths[1] if len(widths) > 1 else 0, rule=header.rule, check=check,
            schema_digest=header.schema_digest, two_server=two_server,
        )  # fmt: skip
    log.info("%s/%s uploaded a two-server upload (%d records at S1 and S2)", header.project,
             member, header.record_count)  # fmt: skip
    return UploadReceipt(upload.id, header.record_count, upload.sha256, replayed)
