"""The files of one upload in a two-server role's store (storage/role_store.py), read by its
start (`load`), `admin check` (role_check.py) and `admin backup` (role_backup.py) alike.

An upload's arrays are in `F.bin`, one after the other in its metadata's order (`arrays`),
but those named in the metadata's `apart`: each of those is in a file of its own,
`F.NAME.bin` (NAME the array's, e.g. `F.sealed0.keys.bin`). S1's spool writes an upload's
band keys and tokens straight into such files as the parts come (rpc/twoserver_spool.py),
so they reach the disk once; the rest (the shares, the band counts, a few MB) goes to
`F.bin` when the upload is whole. An upload's SHA-256 (its `twoserver.upload` audit
entry's) is then that of `F.bin`'s and each apart file's SHA-256, in order (`digest_of`),
each file's own kept beside it in `apart`, so a damaged file is named. An upload with no
`apart` (every upload stored before 2026-12-06, and one whose fields stayed under the
spool's threshold) is the one file, its SHA-256 that of its bytes: both are read alike.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

HASH_BYTES = 1 << 20  # a read of a file to hash it


def apart_of(meta: dict[str, Any]) -> dict[str, str]:
    """The arrays of an upload in files of their own: name -> the file's SHA-256 (hex)."""
    apart = meta.get("apart", [])
    if not isinstance(apart, list) or not all(
        isinstance(a, list) and len(a) == 2 and all(isinstance(x, str) for x in a) for a in apart
    ):
        raise ValueError(f"apart: {apart!r}, not [name, SHA-256] pairs")
    return {name: hexdigest for name, hexdigest in apart}


def apart_file(file: str, name: str) -> str:
    """The name of the file an upload's array `name` is apart in (`F.NAME.bin`)."""
    return f"{file}.{name}.bin"


def digest_of(main: str, apart: Iterable[tuple[str, str]]) -> str:
    """An upload's SHA-256 where some of its arrays are apart: of `F.bin`'s SHA-256 (`main`)
    and each apart file's, by name, in order."""
    text = "\n".join([f"main {main}", *(f"{name} {hexdigest}" for name, hexdigest in apart)])
    return hashlib.sha256(text.encode()).hexdigest()


def files_of(file: str, meta: dict[str, Any]) -> list[tuple[str, int, str | None]]:
    """The files of the upload stored as `file`: each's name, the size its arrays make, and
    the SHA-256 it must have (None for `F.bin` where arrays are apart: checked through the
    upload's). ValueError, TypeError or KeyError on metadata that is not an upload's."""
    apart = apart_of(meta)
    sizes: dict[str, int] = {}
    main = 0
    for name, dtype, shape in meta["arrays"]:
        size = np.dtype(dtype).itemsize * math.prod(int(s) for s in shape)
        if name in apart:
            sizes[name] = size
        else:
            main += size
    if set(apart) - set(sizes):
        raise ValueError(f"apart: {sorted(set(apart) - set(sizes))} not among its arrays")
    whole = str(meta.get("sha256")) if not apart else None
    return [(f"{file}.bin", main, whole)] + [
        (apart_file(file, name), sizes[name], apart[name]) for name in apart
    ]


def damage(folder: Path, file: str, name: str, meta: dict[str, Any], *, hashed: bool) -> str | None:
    """Why the files of upload `name` (stored as `file` in `folder`) would refuse the role's
    start, naming the file at fault (None: they would not)."""
    try:
        files = files_of(file, meta)
    except (ValueError, TypeError, KeyError):
        return f"upload {name!r}: its metadata in the held store is not an arrays' layout"
    digests = []
    for fname, size, want in files:
        path = folder / fname
        try:
            found = path.stat().st_size
            if found != size:
                return f"upload {name!r}: {found} bytes, its arrays are {size} ({path})"
            if not hashed:
                continue
            got = hash_file(path)
        except FileNotFoundError:
            return f"upload {name!r}: its file {path} is missing"
        except OSError as exc:
            return f"upload {name!r}: its file {path} cannot be read ({exc})"
        if want is not None and got != want:
            return (
                f"upload {name!r}: {path} does not hash to the SHA-256 stored with it "
                "(changed or damaged)"
            )
        digests.append(got)
    if hashed and len(files) > 1:
        apart = list(apart_of(meta).items())
        if digest_of(digests[0], apart) != meta.get("sha256"):
            return (
                f"upload {name!r}: {folder / files[0][0]} does not hash to the SHA-256 stored "
                "with it (changed or damaged)"
            )
    return None


def hash_file(path: Path) -> str:
    """A file's SHA-256 (hex), read HASH_BYTES at a time."""
    digest = hashlib.sha256()
    buf = bytearray(HASH_BYTES)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            digest.update(memoryview(buf)[:n])
    return digest.hexdigest()


__all__ = ["apart_file", "apart_of", "damage", "digest_of", "files_of", "hash_file"]
