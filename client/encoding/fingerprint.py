"""The keyed fingerprint of (schema, secret) that travels with every upload.

The matcher compares fingerprints to refuse encodings made with a different
schema or secret. It is an HMAC-SHA256 of the schema's canonical JSON under a
key stretched from the secret with scrypt (N = 2**17, r = 8, p = 1: 128 MiB of
memory and about a second of one core per derivation), so it reveals neither,
and a stored fingerprint is a costly oracle for guessing the secret: each guess
costs a scrypt derivation, not the microseconds of a plain HMAC. The derivation
runs once per encode (the fingerprint is kept in the ENCODED folder's
manifest) and once per secret in a process. A weak secret is refused before
encoding (`client.encoding.sharedsecret`); stretching makes guessing expensive, it does
not make a guessable secret safe (docs/privacy.md, "The secret and the
fingerprint").
"""

from __future__ import annotations

import hashlib
import hmac
import json
from functools import lru_cache
from typing import Any

_SALT = b"blindmatch fingerprint v2"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**17, 8, 1


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@lru_cache(maxsize=8)
def _stretched(secret: bytes) -> bytes:
    return hashlib.scrypt(
        secret,
        salt=_SALT,
        n=SCRYPT_N,
        r=SCRYPT_R,
        p=SCRYPT_P,
        maxmem=2 * 128 * SCRYPT_N * SCRYPT_R,
        dklen=32,
    )


def schema_digest(schema_json: dict[str, Any]) -> str:
    """SHA-256 (hex) of the schema's canonical JSON, sent beside the fingerprint so that a
    refused upload can be told whether the schema or the secret differs. The schema is not
    secret (the encodings' safety rests on the secret alone); the digest says nothing of it."""
    return hashlib.sha256(b"blindmatch schema v1\0" + canonical_json(schema_json)).hexdigest()


def fingerprint(schema_json: dict[str, Any], secret: bytes) -> bytes:
    """32 bytes that are equal iff both the schema and the secret are equal."""
    return hmac.new(_stretched(secret), canonical_json(schema_json), hashlib.sha256).digest()
