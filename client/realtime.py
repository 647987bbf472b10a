"""The member's side of real-time hit/no-hit: row references, index sync, query encoding.

A member's standing index at the matcher holds its CLKs under *row references*: opaque
strings the member derives from its local ids with a key only it holds,

    ref = hex(HMAC-SHA256(ref_key, local_id))[:32]

so the same record keeps the same reference across re-encodes (and can be replaced or
removed by it), partners and the matcher cannot recover or test a local id from it (the
linkage secret is shared, so it is not the key), and the member can turn a reference
back into its own id whenever a partner quotes one. The ref key is a local file, made on
first use; losing it only means the next sync replaces the whole index.

`sync_index` is the friendly way to maintain an index: it lists what the matcher holds
(refs and CLK digests), diffs that against an ENCODED folder, and sends one atomic change
with only the differences.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import os
import secrets
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from blindmatch.client.api import IndexSummary, MatcherClient
from blindmatch.client.encode import EncodeResult, encode_csv
from blindmatch.client.encoded import CLKS, Encoded
from blindmatch.client.errors import InputError
from blindmatch.client.mapping import ColumnMap
from blindmatch.client.mapping import Mapping as ColumnMapping
from blindmatch.client.normalise import QUERY_DATE_FORMATS
from blindmatch.client.schema import LinkageSchema

REF_HEX = 32


def digest(clk: bytes) -> bytes:
    """The 8-byte digest the matcher lists for each indexed CLK."""
    return hashlib.blake2b(clk, digest_size=8).digest()


def load_ref_key(path: str | Path, *, create: bool = False) -> tuple[bytes, bool]:
    """The member's ref key, made (0600) when missing and `create`; returns (key, created)."""
    path = Path(path)
    try:
        key = path.read_bytes().strip()
    except FileNotFoundError:
        if not create:
            raise InputError(
                f"{path}: ref key not found; it is the file `blindmatch index add` or `sync` "
                "made when this index was first built"
            ) from None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
        return path.read_bytes().strip(), True
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a ref key file") from None
    if len(key) < 16:
        raise InputError(f"{path}: too short to be a ref key (at least 16 characters)")
    return key, False


def row_refs(ids: Iterable[str], key: bytes) -> list[str]:
    """The opaque reference of each local id (see the module docstring)."""
    return [hmac.new(key, i.encode("utf-8"), hashlib.sha256).hexdigest()[:REF_HEX] for i in ids]


def resolve_refs(encoded: Encoded, key: bytes) -> dict[str, str]:
    """ref -> local id for an ENCODED folder's records (to follow up a quoted ref)."""
    ids = encoded.read_ids()
    return dict(zip(row_refs(ids, key), ids, strict=True))


def _unique_ids(encoded: Encoded) -> list[str]:
    """The folder's ids; a standing index keys records by id, so they must not repeat."""
    ids = encoded.read_ids()
    if len(set(ids)) != len(ids):
        repeated = next(i for i in ids if ids.count(i) > 1)
        raise InputError(
            f"{encoded.path}: record id {repeated!r} appears more than once (encoded with "
            "--on-duplicate-id keep-all); an index holds one record per id: encode with "
            "keep-first for it"
        )
    return ids


def _read_clks(encoded: Encoded) -> list[bytes]:
    data = (encoded.path / CLKS).read_bytes()
    size = encoded.clk_bytes
    return [data[i * size : (i + 1) * size] for i in range(encoded.record_count)]


@dataclass(frozen=True)
class SyncPlan:
    puts: list[str]  # refs to add or replace
    removes: list[str]  # refs to remove


def plan_sync(local: Mapping[str, bytes], remote: Mapping[str, bytes]) -> SyncPlan:
    """What to send so that the matcher holds exactly `local` (ref -> CLK digest)."""
    puts = sorted(ref for ref, d in local.items() if remote.get(ref) != d)
    removes = sorted(ref for ref in remote if ref not in local)
    return SyncPlan(puts, removes)


def sync_index(
    client: MatcherClient, project: str, encoded: Encoded, key: bytes
) -> tuple[SyncPlan, IndexSummary]:
    """Make the member's index at the matcher hold exactly this ENCODED folder's records."""
    refs = row_refs(_unique_ids(encoded), key)
    clks = dict(zip(refs, _read_clks(encoded), strict=True))
    plan = plan_sync({r: digest(c) for r, c in clks.items()}, client.list_index(project))
    summary = client.change_index(
        project,
        clk_bits=encoded.clk_bits,
        fingerprint=encoded.fingerprint,
        puts=[(r, clks[r]) for r in plan.puts],
        removes=plan.removes,
    )
    return plan, summary


def add_to_index(
    client: MatcherClient,
    project: str,
    encoded: Encoded,
    key: bytes,
    ids: Sequence[str] | None = None,
) -> IndexSummary:
    """Add or replace an ENCODED folder's records (all, or those with local `ids`)."""
    all_ids = _unique_ids(encoded)
    clks = dict(zip(all_ids, _read_clks(encoded), strict=True))
    wanted = list(ids) if ids is not None else all_ids
    unknown = [i for i in wanted if i not in clks]
    if unknown:
        raise InputError(
            f"{encoded.path}: no record with id(s) {', '.join(map(repr, unknown[:5]))}"
        )
    refs = row_refs(wanted, key)
    return client.change_index(
        project,
        clk_bits=encoded.clk_bits,
        fingerprint=encoded.fingerprint,
        puts=[(r, clks[i]) for r, i in zip(refs, wanted, strict=True)],
    )


def remove_from_index(
    client: MatcherClient, project: str, key: bytes, ids: Sequence[str]
) -> IndexSummary:
    """Remove the records with these local ids; all or nothing."""
    return client.change_index(
        project, clk_bits=64, fingerprint=bytes(32), removes=row_refs(ids, key)
    )


# How a field is named in a query's reply ("compared on: given name, surname; ...").
FIELD_LABELS = {"dob": "date of birth", "given_name": "given name"}


def field_label(field: str) -> str:
    return FIELD_LABELS.get(field, field.replace("_", " "))


def encode_person(
    schema: LinkageSchema,
    secret: bytes,
    values: Mapping[str, str],
    date_formats: Mapping[str, Sequence[str]] | None = None,
) -> EncodeResult:
    """Encode one person given on the command line, exactly as `encode` would.

    `values` maps schema fields to raw values; it goes through a one-row CSV and the
    same mapping, normalisation and encoder as an export, so the CLK is identical to
    the one the same person gets in an ENCODED folder. Dates are read in the field's
    `date_formats` if given, else in `QUERY_DATE_FORMATS` (ISO, or UK day-first). A
    value that cannot be read is an error (`refuse_unreadable`), never a silent blank.
    """
    hashed = schema.hashed_fields()
    unknown = [f for f in values if f not in hashed]
    if unknown:
        raise InputError(
            f"{', '.join(unknown)}: not a field of the schema {schema.path.name} "
            f"(its fields are: {', '.join(hashed)})"
        )
    if not any(v.strip() for v in values.values()):
        raise InputError("give at least one field of the person to query, e.g. --surname")
    fields = list(values)
    date_fields = {rule.name for rule in schema.rules if rule.kind == "date"}
    formats = {f: tuple((date_formats or {}).get(f) or QUERY_DATE_FORMATS) for f in date_fields}
    with tempfile.TemporaryDirectory(prefix="blindmatch-query-") as tmp:
        path = Path(tmp) / "query.csv"
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(["query_id", *fields])
            writer.writerow(["query", *(values[f] for f in fields)])
        mapping = ColumnMapping(
            path=Path("<command line>"),
            id_column="query_id",
            fields={f: ColumnMap((f,), formats.get(f, ())) for f in fields},
        )
        result = encode_csv(path, schema, mapping, secret)
    result.report.source = "the command line"
    refuse_unreadable(result, one_person=True)
    return result


def refuse_unreadable(result: EncodeResult, *, one_person: bool = False) -> None:
    """A query must not answer "not held" for a person it could not read: any invalid or
    ambiguous value is an error naming the field (and, for a CSV, the row)."""
    problems = []
    for fr in result.report.fields:
        for item in (*fr.invalid_rows, *fr.ambiguous_rows):
            where = "" if one_person else f"row {item['row']}, "
            problems.append(f"{where}{fr.field}: {item['reason']}")
    if problems:
        shown = "; ".join(problems[:10])
        more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
        raise InputError(
            f"cannot read the {'person' if one_person else 'records'} to query: {shown}{more}; "
            "nothing was queried (dates: give e.g. 02/11/1975 or 1975-11-02, or say how they "
            "are written with --dob-format)"
        )


@dataclass(frozen=True)
class Usable:
    """What a queried record could be compared on, for the reply."""

    compared_on: tuple[str, ...]
    missing: tuple[str, ...]

    def describe(self) -> str:
        text = f"compared on: {', '.join(map(field_label, self.compared_on)) or 'nothing'}"
        if self.missing:
            text += f"; missing: {', '.join(map(field_label, self.missing))}"
        return text


def usable_fields(result: EncodeResult) -> list[Usable]:
    """Per queried record, the fields that had a usable value and those that did not."""
    fields = [fr.field for fr in result.report.fields]
    derived = {fr.field for fr in result.report.fields if fr.derived_from}
    out = []
    for row in result.present:
        have = tuple(f for f, p in zip(fields, row, strict=True) if p and f not in derived)
        out.append(Usable(have, tuple(f for f in fields if f not in have and f not in derived)))
    return out
