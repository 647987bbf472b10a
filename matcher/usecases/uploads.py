"""Receiving an upload: a member's CLKs for batch runs, stored whole or not at all.

The header is checked first (CLK length, record count, fingerprint, digest, field and
fallback layout, retry id); a retry of an upload already acknowledged under the same
client id is answered from the store at once. Then the CLKs are streamed to a file in
`tmp/`, never held in memory beyond one message, counted and hashed as they arrive,
fsynced, checked against the header, and committed: renamed into `clks/` with its row
and audit entry in one transaction (storage/upload_store.py). A full disk at any point
is `ResourceExhausted`; whatever fails, the file in `tmp/` is removed.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

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
    MAX_RECORDS,
    Encoding,
    retried_upload,
)
from blindmatch.matcher.errors import InvalidArgument, ResourceExhausted
from blindmatch.matcher.storage.sqlite import DISK_FULL, disk_full
from blindmatch.matcher.storage.store import Store
from blindmatch.protos.wire import fingerprint_id

log = logging.getLogger("blindmatch.matcher")

_HEX = frozenset("0123456789abcdef")


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
    rule: Rule = NO_RULE  # the schema's rule over both CLKs (core.fallback); checked here


@dataclass(frozen=True)
class UploadReceipt:
    upload_id: str
    record_count: int
    sha256: str
    replayed: bool  # an upload acknowledged earlier under the same client id


def check_header(header: UploadHeader) -> str:
    """Refuse a malformed header; the sha256 it promises, in lower case."""
    bits, count = header.clk_bits, header.record_count
    check_clk_bits(bits, "header.clk_bits")
    if count > MAX_RECORDS:
        raise ResourceExhausted(
            f"header.record_count: {count} is over this matcher's limit of {MAX_RECORDS}"
        )
    check_fingerprint(header.fingerprint, "header.fingerprint")
    sha256 = header.sha256.lower()
    if len(sha256) != 64 or set(sha256) - _HEX:
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
    rule = header.rule
    checked_rule(rule.gap, rule.offset, rule.reach, header.fallback_bits, "header.rule")
    schema = header.schema_digest
    if schema and (len(schema) != 64 or set(schema) - _HEX):
        raise InvalidArgument("header.schema_digest: 64 lower-case hex digits, or empty")
    key = header.client_upload_id
    if key and not CLIENT_UPLOAD_ID_RE.fullmatch(key):
        raise InvalidArgument(
            "header.client_upload_id: 1 to 128 of the characters A-Z a-z 0-9 _ . -"
        )
    return sha256


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
        Encoding(header.clk_bits, header.fingerprint, header.fallback_bits, header.rule),
        [
            Held(
                f"{first_member}'s upload (the first in this project{matching})",
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
) -> UploadReceipt:
    """Store `member`'s upload, whose CLKs arrive as `chunks` after `header` (None: a
    message that is not CLKs), as its current data for the project. `check` runs inside
    the committing transaction and may refuse (the uploader's token revoked meanwhile)."""
    store.project(header.project)  # expired: NotFound, like every member call
    sha256 = check_header(header)
    bits, count, key = header.clk_bits, header.record_count, header.client_upload_id
    earlier = store.keyed_upload(header.project, member, key) if key else None
    if earlier is not None:
        mine = Encoding(bits, header.fingerprint, header.fallback_bits, header.rule)
        scored = same_scoring(store.upload_encoding(earlier), mine)
        retried_upload(earlier, key, sha256=sha256, record_count=count, clk_bits=bits,
                       same_scoring=scored)  # fmt: skip
        log.info("%s/%s retried upload %s: acknowledged again", header.project, member, key)
        return UploadReceipt(earlier.id, count, earlier.sha256, replayed=True)
    check_matches_project(store, header, member)
    clk_bytes = bits // 8
    if count * clk_bytes > max_upload_bytes:
        raise ResourceExhausted(
            f"header: {count} CLKs of {bits} bits is {count * clk_bytes} bytes, over this "
            f"matcher's limit of {max_upload_bytes} bytes per upload"
        )
    store.ensure_room(count * clk_bytes)
    part = store.new_upload_path()
    digest = hashlib.sha256()
    received = 0
    try:
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
            fh.flush()
            os.fsync(fh.fileno())
        if received != count:
            raise InvalidArgument(
                f"clks: the upload ended after {received} of {count} CLKs; nothing was stored"
            )
        if digest.hexdigest() != sha256:
            raise InvalidArgument("clks: content does not match header.sha256")
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
    except OSError as exc:
        if disk_full(exc):
            raise ResourceExhausted(DISK_FULL) from exc
        raise
    finally:
        part.unlink(missing_ok=True)
    log.info("%s/%s uploaded %d CLKs", header.project, member, count)
    return UploadReceipt(upload.id, count, upload.sha256, replayed)
