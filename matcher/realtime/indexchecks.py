"""The checks of a standing-index change that need no index: its references and CLKs, a
retry's digest, and an empty change whose header says otherwise of the index's scoring."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from blindmatch.matcher import errors
from blindmatch.matcher.core.encodings import same_scoring, scoring
from blindmatch.matcher.domain import REF_RE, Encoding


def check_restated(held: Encoding | None, encoding: Encoding) -> None:
    """An empty change (`index sync` with nothing to send) whose header is the index's
    fingerprint but says otherwise of how its pairs are scored: the index lost its schema's
    rule (or this folder did), and no CLK differs for a sync to put. Refused, saying how
    to put the records again, rather than acknowledged as in sync."""
    if (
        held is not None
        and (held.clk_bits, held.fingerprint) == (encoding.clk_bits, encoding.fingerprint)
        and not same_scoring(held, encoding)
    ):
        raise errors.FailedPrecondition(
            f"your index is scored with {scoring(held)}, but this change says "
            f"{scoring(encoding)}, under the same schema and secret, and its CLKs are the "
            "same, so there is nothing to sync: put its records again with `blindmatch "
            "index add ENCODED` (from a folder encoded with the agreed schema)"
        )


def digest_of(encoding: Encoding, puts: Sequence[tuple[str, bytes]], removes: Sequence[str]) -> str:
    """A change's content, hashed: the same retry id with the same digest is a retry."""
    digest = hashlib.sha256(f"{encoding.clk_bits}\n".encode() + encoding.fingerprint)
    digest.update("\n".join(r for r, _ in puts).encode() + b"\0")
    digest.update(b"".join(c for _, c in puts))
    digest.update(b"\0" + "\n".join(removes).encode())
    return digest.hexdigest()


def check_refs(puts: Sequence[tuple[str, bytes]], removes: Sequence[str], clk_bits: int) -> None:
    """Every reference valid and named once; every CLK put of the header's length."""
    clk_bytes = clk_bits // 8
    seen: set[str] = set()
    for what, refs in (("put", [r for r, _ in puts]), ("remove", removes)):
        for ref in refs:
            if not REF_RE.fullmatch(ref):
                raise errors.InvalidArgument(
                    f"{what}.refs: {ref[:40]!r} is not a valid reference (1-128 of "
                    "A-Z a-z 0-9 . _ : ~ -)"
                )
            if ref in seen:
                raise errors.InvalidArgument(
                    f"{what}.refs: {ref!r} appears more than once in this change"
                )
            seen.add(ref)
    bad = next((i for i, (_, clk) in enumerate(puts) if len(clk) != clk_bytes), None)
    if bad is not None:
        raise errors.InvalidArgument(
            f"put.clks: record {bad} ({puts[bad][0]!r}) has {len(puts[bad][1])} bytes, "
            f"not {clk_bytes} ({clk_bits}-bit CLKs as the header says)"
        )


__all__ = ["check_refs", "check_restated", "digest_of"]
