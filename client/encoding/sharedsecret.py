"""The shared linkage secret: made strong, checked, and passed between members sealed.

Every member of a project encodes with one secret; the operator must never hold it
(docs/security.md, "The shared secret"). This module is the members' side of that:

- `new_secret`: 32 random bytes, written as 64 hex digits to an owner-only file that
  did not exist before.
- `strength_problem`: the rule `encode` applies before anything is encoded. A secret is
  accepted when it is the hex or base64 text of at least 32 bytes (>= 128 bits is the
  requirement; 32 bytes leaves room for a conservative judgement) that look random: at
  least 20 distinct byte values among its first 32, which any output of a real random
  generator has (fewer is astronomically unlikely) and a typed phrase, a repeated
  pattern or a hex-encoded word does not. Passwords and phrases are refused whatever
  their length: their entropy cannot be judged from the text.
- `keygen`, `seal`, `open_sealed`: an X25519 key pair per member; a secret sealed to a
  member's public key (ephemeral X25519, HKDF-SHA256, ChaCha20-Poly1305, in the manner
  of age and HPKE's base mode), so one member can send it to each other member through
  any channel, the operator's included, without that channel learning it.
- `secret_id`: a short, non-secret check value members compare by phone to make sure
  they hold the same secret and that a sealed secret came from whom they think.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from blindmatch.client.errors import InputError
from blindmatch.client.files import write_bytes

SECRET_BYTES = 32
MIN_BYTES = 32  # decoded bytes a secret must have
MIN_DISTINCT = 20  # distinct byte values among the first 32
SEALED_FORMAT = "blindmatch-sealed-secret-v1"
PUBLIC_PREFIX = "blindmatch-x25519-public-v1"
_SEAL_INFO = b"blindmatch secret seal v1"
_ID_INFO = b"blindmatch secret id v1"


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to a new owner-only (0600) file; refuse to replace an existing one. The
    whole file or none (client/files.py `write_bytes`): a SIGTERM or Ctrl-C part-way (in
    a command that takes SIGTERM so, cli/errors.py `ends_at_sigterm`) leaves no file, not
    an empty or half-written one that a second try would refuse to replace."""
    path = Path(path)
    if not path.absolute().parent.is_dir():
        raise InputError(f"{path}: its folder does not exist")
    try:
        write_bytes(path, data, replace=False)
    except FileExistsError:
        raise InputError(
            f"{path}: already exists; refusing to overwrite it (a secret or key that members "
            "rely on must not be replaced by accident: remove it first if you mean to)"
        ) from None


def new_secret(path: Path) -> str:
    """A fresh 256-bit secret in an owner-only file; returns its id (`secret_id`)."""
    text = secrets.token_hex(SECRET_BYTES)
    write_private(path, (text + "\n").encode())
    return secret_id(text.encode())


def _decoded(secret: bytes) -> bytes | None:
    text = secret.strip()
    try:
        if len(text) % 2 == 0 and all(c in b"0123456789abcdefABCDEF" for c in text):
            return binascii.unhexlify(text)
    except binascii.Error:
        return None
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        padded = text + b"=" * (-len(text) % 4)
        try:
            raw = decode(padded)
        except (binascii.Error, ValueError):
            continue
        if base64.b64encode(raw).rstrip(b"=") == text.rstrip(b"=").replace(b"-", b"+").replace(
            b"_", b"/"
        ):
            return raw
    return None


NOT_A_SECRET = (
    "not a blindmatch secret: expected one line of text, the 64 hex digits written by "
    "`blindmatch secret new` (or other hex or base64 text of at least 32 random bytes, "
    "docs/security.md)"
)


def format_problem(secret: bytes) -> str | None:
    """Why these (stripped, non-empty) bytes cannot be a secret file's content at all, or None.

    A secret file is one line of text: what `secret new` and `secret open` write, and the hex
    or base64 text (or, with --allow-weak-secret, the phrase) the docs allow. A data file, a
    sealed secret, a key or a binary file given as --secret-file would otherwise be taken as
    the secret and every encoding silently differ from the partners'.
    """
    try:
        text = secret.decode("utf-8")
    except UnicodeDecodeError:
        return "it is not text (a binary file)"
    lines = text.splitlines()
    if SEALED_FORMAT in text:
        return "it is a sealed secret: open it first (`blindmatch secret open`)"
    if text.startswith("-----BEGIN"):
        return "it is a key file (PEM), not the linkage secret"
    if text.startswith(PUBLIC_PREFIX):
        return "it is a member's public key, not the linkage secret"
    if len(lines) > 1:
        return f"it has {len(lines)} lines (a data file?)"
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in text):
        return "it holds control characters (a binary file?)"
    return None


def strength_problem(secret: bytes) -> str | None:
    """Why this secret is too weak to encode with, or None when it passes the rule above."""
    raw = _decoded(secret)
    rule = (
        "the rule: the hex or base64 text of at least 32 random bytes, as "
        "`blindmatch secret new` writes"
    )
    if raw is None:
        return f"it is not hex or base64 text ({rule}; passwords and phrases are refused)"
    if len(raw) < MIN_BYTES:
        return f"it decodes to {len(raw)} bytes, fewer than {MIN_BYTES} ({rule})"
    if len(set(raw[:32])) < MIN_DISTINCT:
        return (
            f"its bytes do not look random (only {len(set(raw[:32]))} distinct values among "
            f"the first 32; random bytes have about 30) ({rule})"
        )
    return None


def secret_id(secret: bytes) -> str:
    """A short check value of a (strong) secret: equal ids mean equal secrets; it reveals
    nothing usable about a 256-bit secret. Printed by `secret new` and `secret open`."""
    digest = HKDF(algorithm=hashes.SHA256(), length=5, salt=None, info=_ID_INFO).derive(
        secret.strip()
    )
    text = base64.b32encode(digest).decode().lower()
    return f"{text[:4]}-{text[4:]}"


# -- member key pairs and sealing ------------------------------------------------------


@dataclass(frozen=True)
class KeyFiles:
    private: Path
    public: Path


def keygen(private: Path, public: Path, label: str) -> KeyFiles:
    """A member's X25519 key pair: the private key PEM (owner-only), the public key one line."""
    if " " in label or not label:
        raise InputError(f"label {label!r}: one word naming the member, e.g. north-police")
    key = X25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if Path(public).exists():
        raise InputError(f"{public}: already exists; refusing to overwrite it")
    write_private(private, pem)
    try:  # (the pair, or neither: a private key alone is no use)
        write_bytes(public, f"{PUBLIC_PREFIX} {base64.b64encode(raw).decode()} {label}\n".encode(),
                    replace=False)  # fmt: skip
    except FileExistsError:
        Path(private).unlink()
        raise InputError(f"{public}: already exists; refusing to overwrite it") from None
    except BaseException:
        Path(private).unlink()
        raise
    return KeyFiles(Path(private), Path(public))


def read_public(path: Path) -> tuple[X25519PublicKey, str]:
    """A member's public key file: the key and the member's label."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: public key file not found") from None
    except UnicodeDecodeError:  # a binary file (was: a traceback)
        text = ""
    parts = text.split()
    if "PRIVATE KEY-----" in text:
        raise InputError(
            f"{path}: is a private key (keep it, never send it): give the member's public key, "
            "the one-line .pub file `blindmatch secret keygen --public` wrote"
        )
    if len(parts) != 3 or parts[0] != PUBLIC_PREFIX:
        raise InputError(f"{path}: not a blindmatch public key (`blindmatch secret keygen`)")
    try:
        raw = base64.b64decode(parts[1], validate=True)
        return X25519PublicKey.from_public_bytes(raw), parts[2]
    except (binascii.Error, ValueError):
        raise InputError(f"{path}: the public key is damaged") from None


def read_private(path: Path) -> X25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except FileNotFoundError:
        raise InputError(f"{path}: private key file not found") from None
    except ValueError:
        if Path(path).read_bytes().startswith(PUBLIC_PREFIX.encode()):
            raise InputError(
                f"{path}: is a public key: give your private key, the file `blindmatch secret "
                "keygen --private` wrote beside it"
            ) from None
        raise InputError(f"{path}: not a private key PEM (`blindmatch secret keygen`)") from None
    if not isinstance(key, X25519PrivateKey):
        raise InputError(f"{path}: not an X25519 private key (`blindmatch secret keygen`)")
    return key


def _raw(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _seal_key(shared: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=_SEAL_INFO
    ).derive(shared)


def seal(secret: bytes, recipient: X25519PublicKey, label: str) -> bytes:
    """The secret sealed to one member's public key: only its private key opens it."""
    ephemeral = X25519PrivateKey.generate()
    eph_raw, rec_raw = _raw(ephemeral.public_key()), _raw(recipient)
    key = _seal_key(ephemeral.exchange(recipient), eph_raw, rec_raw)
    header = {"format": SEALED_FORMAT, "recipient": label}
    aad = json.dumps(header, sort_keys=True).encode() + eph_raw + rec_raw
    nonce = secrets.token_bytes(12)
    box = ChaCha20Poly1305(key).encrypt(nonce, secret.strip(), aad)
    sealed = {
        **header,
        "ephemeral": base64.b64encode(eph_raw).decode(),
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(box).decode(),
    }
    return (json.dumps(sealed, indent=2, sort_keys=True) + "\n").encode()


def open_sealed(sealed: bytes, private: X25519PrivateKey, where: str = "sealed file") -> bytes:
    """The secret from a sealed file, with this member's private key."""
    try:
        doc = json.loads(sealed)
        if doc.get("format") != SEALED_FORMAT:
            raise ValueError("format")
        eph_raw = base64.b64decode(doc["ephemeral"], validate=True)
        nonce = base64.b64decode(doc["nonce"], validate=True)
        box = base64.b64decode(doc["ciphertext"], validate=True)
        header = {"format": doc["format"], "recipient": doc["recipient"]}
        ephemeral = X25519PublicKey.from_public_bytes(eph_raw)
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise InputError(f"{where}: not a sealed secret (`blindmatch secret seal`)") from None
    rec_raw = _raw(private.public_key())
    key = _seal_key(private.exchange(ephemeral), eph_raw, rec_raw)
    aad = json.dumps(header, sort_keys=True).encode() + eph_raw + rec_raw
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, box, aad)
    except InvalidTag:
        raise InputError(
            f"{where}: cannot be opened with this private key (sealed to "
            f"{header['recipient']!r}, to another key, or altered on the way)"
        ) from None


__all__ = [
    "NOT_A_SECRET",
    "KeyFiles",
    "format_problem",
    "keygen",
    "new_secret",
    "open_sealed",
    "read_checked",
    "read_private",
    "read_public",
    "seal",
    "secret_id",
    "strength_problem",
    "write_private",
]


def read_checked(path: Path, allow_weak: bool = False) -> tuple[bytes, str | None]:
    """The secret file's secret, refused when `strength_problem` finds it weak.

    With `allow_weak` (tests only) a weak secret is returned with the loud warning the
    encode report must carry.
    """
    from blindmatch.client.encoding.encode import read_secret

    secret = read_secret(path)
    problem = strength_problem(secret)
    if problem is None:
        return secret, None
    if not allow_weak:
        raise InputError(
            f"{path}: this secret is too weak to encode with: {problem}. Whoever holds the "
            "uploads could guess a weak secret offline and then re-identify every record. "
            "Make one with `blindmatch secret new FILE` and send it to the other members "
            "sealed (`blindmatch secret seal`, docs/security.md)"
        )
    return secret, (
        f"WEAK SECRET accepted because of --allow-weak-secret (for tests only): {problem}; "
        "whoever holds these uploads can guess it offline and re-identify every record"
    )
