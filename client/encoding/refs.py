"""Row references: what the matcher's standing index holds instead of local ids.

A member's standing index at the matcher holds its CLKs under *row references*: opaque
strings the member derives from its local ids with a key only it holds,

    ref = hex(HMAC-SHA256(ref_key, local_id))[:32]

so the same record keeps the same reference across re-encodes (and can be replaced or
removed by it), partners and the matcher cannot recover or test a local id from it (the
linkage secret is shared, so it is not the key), and the member can turn a reference
back into its own id whenever a partner quotes one. The ref key is a local file, made on
first use; losing it only means the next sync replaces the whole index.

`plan_sync` diffs what the matcher lists (refs and CLK digests, `protos.wire.clk_digest`)
against the records of an ENCODED folder; `client.remote.index.sync_index` sends the
differences.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

from blindmatch.client.encoding.encoded import Encoded
from blindmatch.client.errors import InputError
from blindmatch.client.files import write_bytes

REF_HEX = 32


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
        # Whole or none (a signal part-way left an empty key, "too short" ever after), never
        # over one made meanwhile (`FileExistsError`).
        write_bytes(path, (secrets.token_hex(32) + "\n").encode(), replace=False)
        return path.read_bytes().strip(), True
    except IsADirectoryError:
        raise InputError(f"{path}: is a folder, not a ref key file") from None
    if len(key) < 16:
        raise InputError(f"{path}: too short to be a ref key (at least 16 characters)")
    problem = ref_key_problem(key)
    if problem is not None:
        raise InputError(f"{path}: not a ref key: {problem}. {REF_KEY_IS}")
    return key, False


REF_KEY_IS = (
    "A ref key is the member's own one-line key that `index add` or `sync` made on first use "
    "(64 hex digits), never shared: give that file, or a path where none is yet (one is made "
    "there)"
)


def ref_key_problem(key: bytes) -> str | None:
    """Why a file's (stripped) bytes are clearly not a ref key, or None: a sealed secret, a
    member's key, a data file (several lines). A ref key is one line of text; any such line
    of 16 characters or more is taken, as ever (one made by hand, too)."""
    from blindmatch.client.encoding.sharedsecret import PUBLIC_PREFIX, SEALED_FORMAT

    text = key.decode("utf-8", errors="replace")
    if SEALED_FORMAT in text:
        return "it is a sealed linkage secret (`blindmatch secret seal`)"
    if text.startswith(("-----BEGIN", PUBLIC_PREFIX)):
        return "it is a key file (`blindmatch secret keygen`, or a PEM key or certificate)"
    lines = len(text.splitlines())
    if lines > 1:
        return f"it has {lines} lines (a CSV or other data file?)"
    return None


def check_not_linkage_secret(
    path: str | Path, key: bytes, encoded: Encoded, *, made: bool = False
) -> None:
    """Refuse a ref key that is the linkage secret `encoded` was encoded with: partners hold
    that secret, so they could test a guessed local id against its references. Known where
    the folder's schema is one blindmatch ships (its digest names it): that schema's
    fingerprint under `key` is then the folder's. One scrypt (the fingerprint's 128 MiB,
    about 0.45 s of a core): asked once of a key and a folder's (schema, secret), never of a
    key just made (`made`); a key that passed is noted in the file beside it
    (`checked_file`), so a later `index add` or `sync` with that key and a folder of that
    schema and secret does not ask it again. The note is the answer's own, not a weaker
    test: another key (the file changed) or another folder's fingerprint is checked anew."""
    from blindmatch.client.encoding.encoded import shipped_schema
    from blindmatch.client.encoding.fingerprint import fingerprint

    schema = shipped_schema(encoded.schema_digest)
    if schema is None:
        return
    mark = _checked_mark(key, encoded)
    marks = _checked_marks(path)
    if mark in marks:
        return
    if not made and hmac.compare_digest(fingerprint(schema, key), encoded.fingerprint):
        raise InputError(
            f"{path}: not a ref key: it is the linkage secret {encoded.path} was encoded "
            "with, which your partners hold (they could test a guessed id against your "
            f"references). {REF_KEY_IS}"
        )
    kept = [*marks[-(CHECKED_KEPT - 1) :], mark]
    with suppress(OSError, InputError):  # only a saving: unwritten, the next change checks
        write_bytes(checked_file(path), "".join(f"{m}\n" for m in kept).encode())


CHECKED_KEPT = 16  # (schema, secret)s noted beside one ref key, the latest kept


def checked_file(path: str | Path) -> Path:
    """Beside the ref key at `path` (`NAME.checked`): one line for each folder's (schema,
    secret) the key was found not to be the secret of, HMAC-SHA256 under the key of that
    folder's schema digest and fingerprint (never the key, nor anything of it without it)."""
    path = Path(path)
    return path.with_name(path.name + ".checked")


def _checked_mark(key: bytes, encoded: Encoded) -> str:
    what = b"blindmatch ref key is not the secret v1\0" + encoded.schema_digest.encode()
    return hmac.new(key, what + b"\0" + encoded.fingerprint, hashlib.sha256).hexdigest()


def _checked_marks(path: str | Path) -> list[str]:
    try:
        text = checked_file(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):  # none yet, or unreadable: checked anew
        return []
    return text.split()


def row_refs(ids: Iterable[str], key: bytes) -> list[str]:
    """The opaque reference of each local id (see the module docstring)."""
    return [hmac.new(key, i.encode("utf-8"), hashlib.sha256).hexdigest()[:REF_HEX] for i in ids]


def resolve_refs(encoded: Encoded, key: bytes) -> dict[str, str]:
    """ref -> local id for an ENCODED folder's records (to follow up a quoted ref)."""
    ids = encoded.read_ids()
    return dict(zip(row_refs(ids, key), ids, strict=True))


@dataclass(frozen=True)
class SyncPlan:
    puts: list[str]  # refs to add or replace
    removes: list[str]  # refs to remove


def plan_sync(local: Mapping[str, bytes], remote: Mapping[str, bytes]) -> SyncPlan:
    """What to send so that the matcher holds exactly `local` (ref -> CLK digest)."""
    puts = sorted(ref for ref, d in local.items() if remote.get(ref) != d)
    removes = sorted(ref for ref in remote if ref not in local)
    return SyncPlan(puts, removes)
