"""The member's ref key for `index add`, `sync` and `remove` (cli/realtime.py): where it is
(--ref-key or $BLINDMATCH_REF_KEY), and, for a change, made on first use and kept only where
the matcher did not refuse the change before storing anything under it."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from blindmatch.cli.errors import sigterm_as_ctrl_c
from blindmatch.cli.options import env
from blindmatch.client.errors import AuthError, InputError, NotFoundError, RejectedError

if TYPE_CHECKING:
    from blindmatch.client.encoding.encoded import Encoded


def ref_key_path(args: argparse.Namespace) -> str:
    """--ref-key or $BLINDMATCH_REF_KEY, refused when neither is given (before any call)."""
    path: str | None = args.ref_key or env("BLINDMATCH_REF_KEY")
    if not path:
        raise InputError(
            "no ref key: pass --ref-key FILE or set BLINDMATCH_REF_KEY (a local file, made "
            "on first use, that turns local ids into opaque row references)"
        )
    return path


def existing_ref_key(path: str) -> bytes:
    """The ref key at `path` (`index remove`: never made)."""
    from blindmatch.client.encoding.refs import load_ref_key

    return load_ref_key(path, create=False)[0]


@contextmanager
def ref_key_for_change(
    path: str, encoded: Encoded, stored: Callable[[], int] = lambda: 0
) -> Iterator[bytes]:
    """The ref key at `path`, made if missing, for the index change(s) of `encoded` the block
    sends; one that was there refused where it is the linkage secret `encoded` was encoded
    with (`refs.check_not_linkage_secret`: its scrypt once a key and folder's secret, noted
    in `NAME.checked` beside the key; a key made here is noted without it). A key
    made here is removed again if the matcher refuses the change (another schema's
    fingerprint or rule, a token not allowed, no such project) before `stored()` changes
    are stored under it: before 2026-12-06 it was kept, said as "Made a new ref key", and a
    later sync from another folder used it. Kept where the change may have been stored (a
    connection lost), as an older key always is."""
    from blindmatch.client.encoding.refs import (
        check_not_linkage_secret,
        checked_file,
        load_ref_key,
    )

    with sigterm_as_ctrl_c():  # a SIGTERM: the key whole or absent, no temporary file
        key, made = load_ref_key(path, create=True)
        check_not_linkage_secret(path, key, encoded, made=made)  # (noted beside it, likewise)
    try:
        yield key
    except (RejectedError, AuthError, NotFoundError):
        if made and not stored():
            Path(path).unlink(missing_ok=True)
            checked_file(path).unlink(missing_ok=True)
            made = False
        raise
    finally:
        if made:
            print(f"Made a new ref key in {path}; keep it with the encoded data.", file=sys.stderr)
