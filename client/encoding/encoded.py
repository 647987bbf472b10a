"""The ENCODED folder that `blindmatch encode` writes and `upload`/`results` read.

    ENCODED/
      manifest.json     what is uploaded about the encodings: format, clk_bits,
                        record_count, fingerprint, sha256 of clks.bin, and
                        field_bits (segment sizes) for field-level encodings,
                        fallback_bits for record-level CLKs with a fallback CLK,
                        and rule ({gap, offset, reach}) when the schema has
                        blindmatch.rule
      clks.bin          record_count CLKs of clk_bits/8 bytes each, in row order
      local/ids.csv     row position -> local record id; never leaves the machine
      local/report.json the encode report (missing and invalid values by row)

Only `manifest.json` and `clks.bin` are ever read for an upload. The folder is
written to a temporary sibling and renamed into place, so a failed encode
leaves either the old folder or nothing, never half a folder.

The rule travels in the manifest only, and the fingerprint cannot tell the matcher
whether it came along, so it is never left to a default: `write_encoded` must be told
it (None: the schema has none), and for the schemas shipped with blindmatch (known by
`schema_digest`) both sides check it against the schema itself. A folder of a shipped
schema whose manifest lacks the rule (written before this check) is read with it; one
that names another rule is refused.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from blindmatch.client.encoding.fingerprint import schema_digest as digest_of
from blindmatch.client.errors import InputError

FORMAT = "blindmatch-encoded/1"
MANIFEST = "manifest.json"
CLKS = "clks.bin"
IDS = "local/ids.csv"
REPORT = "local/report.json"


@dataclass(frozen=True)
class Encoded:
    """An ENCODED folder, checked for consistency when read."""

    path: Path
    clk_bits: int
    record_count: int
    fingerprint: bytes
    sha256: str
    field_bits: tuple[int, ...] = ()  # field-level encodings: segment sizes in bits
    fallback_bits: int = 0  # the last fallback_bits of each CLK are its fallback CLK
    schema_digest: str = ""  # SHA-256 of the schema's canonical JSON; "" in older folders
    rule: tuple[float, float, float] | None = None  # blindmatch.rule (gap, offset, reach)

    @property
    def clk_bytes(self) -> int:
        return self.clk_bits // 8

    def iter_chunks(self, records_per_chunk: int) -> Iterator[bytes]:
        """CLK bytes in order, `records_per_chunk` whole CLKs at a time. No file is held open
        across a yield: an upload refused part-way leaves this generator unfinished in gRPC's
        hands, and a file it held would be closed only by the garbage collector (a
        ResourceWarning, at whatever moment it runs)."""
        size, offset = records_per_chunk * self.clk_bytes, 0
        while True:
            with open(self.path / CLKS, "rb") as fh:
                fh.seek(offset)
                block = fh.read(size)
            if not block:
                return
            offset += len(block)
            yield block

    def read_ids(self) -> list[str]:
        """The local record ids, by row position."""
        path = self.path / IDS
        mismatch = f"{path}: does not match {MANIFEST}; re-run `blindmatch encode`"
        ids: list[str] = []
        try:
            with open(path, newline="", encoding="utf-8") as fh:
                # A row at a time: the whole file as CSV rows first held ~3 times the ids
                # (~0.24 GiB for a million; refcarry, 2026-12-08).
                rows = csv.reader(fh)
                if next(rows, None) != ["row", "record_id"]:
                    raise InputError(f"{path}: not a blindmatch id list (header row,record_id)")
                for i, r in enumerate(rows):
                    if len(r) < 2 or int(r[0]) != i:
                        raise InputError(mismatch)
                    ids.append(r[1])
        except FileNotFoundError:
            raise InputError(f"{path}: missing; re-run `blindmatch encode`") from None
        if len(ids) != self.record_count:
            raise InputError(mismatch)
        return ids

    def read_report(self) -> dict[str, Any] | None:
        """The encode report (`EncodeReport.to_dict()`), or None when the folder has none."""
        path = self.path / REPORT
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: unreadable ({exc}); re-run `blindmatch encode`") from None
        if not isinstance(report, dict):
            raise InputError(f"{path}: not an encode report; re-run `blindmatch encode`")
        return report


def _fsync_write(path: Path, data: bytes) -> None:
    """A new file, its owner's only whatever the umask (the local ids are personal data)."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def write_encoded(
    path: str | Path,
    *,
    clks: bytes,
    clk_bits: int,
    fingerprint: bytes,
    ids: Sequence[str],
    report: dict[str, Any],
    field_bits: Sequence[int] = (),
    fallback_bits: int = 0,
    schema_digest: str = "",
    rule: tuple[float, float, float] | None,
    also: Callable[[Path], None] | None = None,
) -> Encoded:
    """Write an ENCODED folder atomically, replacing an earlier one at `path`.

    `rule`: the schema's `blindmatch.rule` (`EncodeResult.rule`; None: the schema has
    none). Required, so that no caller drops it by leaving it out; checked against a
    shipped schema's own when `schema_digest` is one's. `also`: writes more into the folder
    (given the temporary one, before it is renamed into place: `encode --two-server`'s
    twoserver/), so that `path` never exists without it."""
    path = Path(path)
    shipped = shipped_rule(schema_digest)
    if shipped is not None and shipped[1] != rule:
        raise ValueError(
            f"rule: {rule!r}, but the schema (schemas/{shipped[0]}, by its digest) has "
            f"blindmatch.rule {shipped[1]!r}; pass the encode result's rule"
        )
    if len(clks) != len(ids) * (clk_bits // 8):
        raise ValueError("clks and ids disagree on the record count")
    if path.exists() and not (path / MANIFEST).is_file():
        raise InputError(
            f"{path}: exists and is not an encoded folder; choose another --out "
            "(blindmatch only replaces its own output)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(clks).hexdigest()
    manifest = {
        "format": FORMAT,
        "clk_bits": clk_bits,
        "record_count": len(ids),
        "fingerprint": fingerprint.hex(),
        "sha256": digest,
    }
    if schema_digest:
        manifest["schema_digest"] = schema_digest
    if field_bits:
        if sum(field_bits) != clk_bits:
            raise ValueError("field_bits must add up to clk_bits")
        manifest["field_bits"] = list(field_bits)
    if fallback_bits:
        if fallback_bits % 64 or fallback_bits >= clk_bits or field_bits:
            raise ValueError("fallback_bits must be a multiple of 64 below clk_bits")
        manifest["fallback_bits"] = fallback_bits
    if rule is not None:
        if not fallback_bits:
            raise ValueError("a rule is over a fallback CLK's score as well")
        manifest["rule"] = dict(zip(RULE_KEYS, rule, strict=True))
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / "local").mkdir(mode=0o700)  # `mkdtemp` made `tmp` itself 0700
        _fsync_write(tmp / CLKS, clks)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["row", "record_id"])
        writer.writerows(enumerate(ids))
        _fsync_write(tmp / IDS, buf.getvalue().encode())
        _fsync_write(tmp / REPORT, json.dumps(report, indent=2).encode())
        _fsync_write(tmp / MANIFEST, json.dumps(manifest, indent=2).encode())
        if also is not None:
            also(tmp)
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Encoded(
        path, clk_bits, len(ids), fingerprint, digest, tuple(field_bits), fallback_bits,
        schema_digest, rule,
    )  # fmt: skip


RULE_KEYS = ("gap", "offset", "reach")
# The linkage schemas shipped with blindmatch (as `client.tools.SCHEMAS`).
SHIPPED_SCHEMAS = Path(__file__).parents[2] / "schemas"
Rule = tuple[float, float, float]


def _read_rule(spec: Any) -> Rule | None:
    if spec is None:
        return None
    gap, offset, reach = (float(spec[k]) for k in RULE_KEYS)
    return gap, offset, reach


@lru_cache(maxsize=1)
def _shipped() -> dict[str, tuple[str, dict[str, Any]]]:
    """schema digest -> (file name, its JSON) of the schemas shipped with blindmatch."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for path in sorted(SHIPPED_SCHEMAS.glob("*.json")):
        raw = json.loads(path.read_text(encoding="utf-8"))
        found[digest_of(raw)] = (path.name, raw)
    return found


def shipped_rule(schema_digest: str) -> tuple[str, Rule | None] | None:
    """(file name, `blindmatch.rule`) of the shipped schema with this digest; None when the
    digest is no shipped schema's (or unknown: "")."""
    found = _shipped().get(schema_digest) if schema_digest else None
    if found is None:
        return None
    name, raw = found
    return name, _read_rule(raw.get("blindmatch", {}).get("rule"))


def shipped_schema(schema_digest: str) -> dict[str, Any] | None:
    """The JSON of the shipped schema with this digest (what its fingerprint is of); None
    when the digest is no shipped schema's (or unknown: "")."""
    found = _shipped().get(schema_digest) if schema_digest else None
    return None if found is None else found[1]


def _checked_rule(manifest: dict[str, Any], manifest_path: Path, digest: str) -> Rule | None:
    """The manifest's rule; for a shipped schema, the schema's (carried where a manifest
    written before the rule was checked left it out), or InputError where they differ."""
    rule = _read_rule(manifest.get("rule"))
    shipped = shipped_rule(digest)
    if shipped is None:
        return rule
    name, want = shipped
    if "rule" not in manifest:
        return want
    if rule != want:
        raise InputError(
            f"{manifest_path}: rule {rule!r}, but its schema (schemas/{name}, by its "
            f"schema_digest) has blindmatch.rule {want!r}; re-run `blindmatch encode` with "
            f"schemas/{name}"
        )
    return rule


def read_encoded(path: str | Path, *, verify: bool = True) -> Encoded:
    """Open an ENCODED folder; with `verify`, check clks.bin against the manifest."""
    path = Path(path)
    manifest_path = path / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{path}: not an encoded folder (no {MANIFEST}); make one with `blindmatch encode`"
        ) from None
    except NotADirectoryError:
        raise InputError(
            f"{path}: is a file, not an encoded folder; give the folder `blindmatch encode "
            "--out` wrote"
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{manifest_path}: unreadable ({exc})") from None
    try:
        if manifest["format"] != FORMAT:
            raise InputError(f"{manifest_path}: format {manifest['format']!r}, expected {FORMAT}")
        encoded = Encoded(
            path=path,
            clk_bits=int(manifest["clk_bits"]),
            record_count=int(manifest["record_count"]),
            fingerprint=bytes.fromhex(manifest["fingerprint"]),
            sha256=str(manifest["sha256"]),
            field_bits=tuple(int(b) for b in manifest.get("field_bits", ())),
            fallback_bits=int(manifest.get("fallback_bits", 0)),
            schema_digest=str(manifest.get("schema_digest", "")),
            rule=_checked_rule(manifest, manifest_path, str(manifest.get("schema_digest", ""))),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{manifest_path}: malformed manifest ({exc})") from None
    if verify:
        clks_path = path / CLKS
        try:
            size = clks_path.stat().st_size
        except FileNotFoundError:
            raise InputError(f"{clks_path}: missing; re-run `blindmatch encode`") from None
        if size != encoded.record_count * encoded.clk_bytes:
            raise InputError(
                f"{clks_path}: {size} bytes, but {MANIFEST} promises "
                f"{encoded.record_count} CLKs of {encoded.clk_bits} bits; "
                "re-run `blindmatch encode`"
            )
        digest = hashlib.sha256()
        with open(clks_path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        if digest.hexdigest() != encoded.sha256:
            raise InputError(f"{clks_path}: content does not match {MANIFEST} (sha256 differs)")
    return encoded
