"""Tokens: made once, shown once, stored only as hashes, compared in constant time.

Tokens are 256 random bits, so a plain SHA-256 is enough to store them: there
is nothing to brute-force. The hash, not the token, is what the store keeps.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token() -> str:
    return "bm_" + secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def same_hash(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
