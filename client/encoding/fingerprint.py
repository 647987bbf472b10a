"""The keyed fingerprint of (schema, secret) that travels with every upload.

The matcher compares fingerprints to refuse encodings made with a different
schema or secret. It is an HMAC of the schema's canonical JSON under a key
derived from the secret (HKDF-SHA256), so it reveals neither: without the
secret it cannot be recomputed, and the secret cannot be recovered from it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_SALT = b"blindmatch fingerprint v1"
_INFO = b"schema+secret fingerprint key"


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def fingerprint(schema_json: dict[str, Any], secret: bytes) -> bytes:
    """32 bytes that are equal iff both the schema and the secret are equal."""
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=_SALT, info=_INFO).derive(secret)
    return hmac.new(key, canonical_json(schema_json), hashlib.sha256).digest()
