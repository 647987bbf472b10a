"""What the protocol fixes beyond the shape of its messages, for both of its sides.

`ListIndex` lists each indexed CLK by an 8-byte BLAKE2b digest (`IndexListing.digests`,
concatenated), so that a member can diff its local records against its index without
the matcher sending CLKs back. The client and the matcher compute it with `clk_digest`.
"""

from __future__ import annotations

import hashlib

DIGEST_BYTES = 8


def clk_digest(clk: bytes) -> bytes:
    """The digest ListIndex reports for one CLK."""
    return hashlib.blake2b(clk, digest_size=DIGEST_BYTES).digest()
