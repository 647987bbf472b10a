"""Hardening Bloom-filter encodings against a curious linkage service.

The matcher is trusted to compare encodings, not to read them, yet plain
Bloom filters leak: identical values give identical bits, and frequent q-grams
give frequent bit patterns (see docs/privacy.md and `client.tools.privacy`). The
transforms here make those attacks fail while keeping similar records similar.
They are agreed in the shared schema, so every member encodes alike, under a
top-level `blindmatch.hardening` section that clkhash ignores and the upload
fingerprint covers (a member with other settings is refused, like one with
another secret):

    "blindmatch": {"hardening": {
        "salt": {"field": "dob", "part": "year"},   # per-record salt for the other fields
        "blip": {"epsilon": 5.0},                   # randomised response, flip 1/(1+e^eps)
        "balance": false,                           # append the complement, then permute
        "xorFolds": 0                               # fold the filter onto itself
    }}

`"hardening": "none"` turns it off; a schema without the section gets
`RECOMMENDED`. Every transform is keyed by the shared secret and seeded by the
record itself, so the same record encodes the same way at every member, and
the same record under another secret does not.

- **salting**: every field except the salt field is hashed under keys derived
  from the secret *and* the record's salt value (the year of birth, say). The
  same surname in two birth years gives unrelated bits, so value frequencies no
  longer line up with public lists. A record whose salt value is missing or
  invalid is salted with the empty value: its other fields then only agree
  with records that also lack it, and a wrong year makes the names disagree.
  The salt field itself is hashed as usual, so it still compares.
- **BLIP** (randomised response): each bit is flipped with probability
  f = 1 / (1 + e^epsilon), which is epsilon-differentially private per bit.
  The flips are drawn from a generator seeded with a keyed hash of the whole
  normalised record, so identical records stay identical (and match exactly).
- **balancing**: the filter and its complement, concatenated and permuted
  with a secret permutation: every encoding has exactly half its bits set.
- **XOR folding**: hash into 2^folds times the length, then fold the halves
  onto each other (clkhash's `fold_xor`).
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from bitarray import bitarray
from clkhash import clk as clk_encoder
from clkhash.bloomfilter import fold_xor, hashing_function_from_properties
from clkhash.comparators import NonComparison
from clkhash.key_derivation import generate_key_lists
from clkhash.schema import Schema
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from blindmatch.client.errors import InputError
from blindmatch.client.words import word

SaltPart = Literal["year", "value"]

_SECTION = "blindmatch"
_KEY = "hardening"


@dataclass(frozen=True)
class Hardening:
    """The hardening every member applies; see the module docstring."""

    salt_field: str | None = None
    salt_part: SaltPart = "year"
    blip_epsilon: float | None = None
    balance: bool = False
    xor_folds: int = 0

    @property
    def flip_probability(self) -> float:
        """BLIP's per-bit flip probability, 1 / (1 + e^epsilon); 0 without BLIP."""
        if self.blip_epsilon is None:
            return 0.0
        return 1.0 / (1.0 + math.exp(self.blip_epsilon))

    @property
    def is_none(self) -> bool:
        return self == Hardening()

    def describe(self) -> str:
        parts = []
        if self.salt_field:
            parts.append(f"salt={self.salt_field}:{self.salt_part}")
        if self.blip_epsilon is not None:
            parts.append(f"BLIP eps={self.blip_epsilon:g} (flip {self.flip_probability:.2%})")
        if self.balance:
            parts.append("balanced")
        if self.xor_folds:
            parts.append(f"xor-folds={self.xor_folds}")
        return ", ".join(parts) or "none"

    def to_json(self) -> dict[str, Any] | str:
        if self.is_none:
            return "none"
        out: dict[str, Any] = {}
        if self.salt_field:
            out["salt"] = {"field": self.salt_field, "part": self.salt_part}
        if self.blip_epsilon is not None:
            out["blip"] = {"epsilon": self.blip_epsilon}
        if self.balance:
            out["balance"] = True
        if self.xor_folds:
            out["xorFolds"] = self.xor_folds
        return out

    def weaknesses(self, than: Hardening | None = None) -> list[str]:
        """Plain statements of how these settings fall short of `than` (RECOMMENDED)."""
        than = RECOMMENDED if than is None else than
        if self == than:
            return []
        out = []
        if than.salt_field and self.salt_field is None:
            out.append(
                "no per-record salt: identical values give identical bits across records, "
                "so field-level frequency attacks work"
            )
        rec_eps = than.blip_epsilon
        if rec_eps is not None and (self.blip_epsilon is None or self.blip_epsilon > rec_eps):
            out.append(
                f"BLIP epsilon is {self.blip_epsilon or 'off'} (recommended {rec_eps:g} or "
                "less): bit patterns are less noisy and pattern mining gets easier"
            )
        return out


# The default for a schema without a `blindmatch.hardening` section, chosen by
# measurement (docs/privacy.md, benchmarks/privacy.py): on the record-level CLKs
# blindmatch uploads, every shipped attack stays below 1% of records without any
# transform, and every transform measured costs more than 0.5 F1 points. A
# field-level design needs salting (field-level frequency alignment reaches ~10%).
RECOMMENDED = Hardening()
NONE = Hardening()


def hardening_from_raw(raw: dict[str, Any], where: str = "schema") -> Hardening:
    """Read `blindmatch.hardening` from a schema's JSON; absent means RECOMMENDED."""
    section = raw.get(_SECTION, {})
    if not isinstance(section, dict):
        raise InputError(f"{where}: 'blindmatch' must be an object")
    if _KEY not in section:
        return RECOMMENDED
    spec = section[_KEY]
    if spec == "none":
        return NONE
    if spec == "recommended":
        return RECOMMENDED
    if not isinstance(spec, dict):
        raise InputError(
            f'{where}: blindmatch.hardening must be "none", "recommended" or an object'
        )
    problems = []
    unknown = sorted(set(spec) - {"salt", "blip", "balance", "xorFolds"})
    if unknown:
        problems.append(f"unknown {word(len(unknown), 'key')} {', '.join(unknown)}")
    salt_field, salt_part = None, "year"
    if "salt" in spec:
        salt = spec["salt"]
        if not isinstance(salt, dict) or not isinstance(salt.get("field"), str):
            problems.append('salt must be {"field": NAME, "part": "year" | "value"}')
        else:
            salt_field = salt["field"]
            salt_part = salt.get("part", "year")
            if salt_part not in ("year", "value"):
                problems.append(f"salt.part is {salt_part!r}; use 'year' or 'value'")
    epsilon = None
    if "blip" in spec:
        blip = spec["blip"]
        eps = blip.get("epsilon") if isinstance(blip, dict) else None
        if not isinstance(eps, int | float) or isinstance(eps, bool) or eps <= 0:
            problems.append('blip must be {"epsilon": a number > 0}')
        else:
            epsilon = float(eps)
    balance = spec.get("balance", False)
    if not isinstance(balance, bool):
        problems.append("balance must be true or false")
    folds = spec.get("xorFolds", 0)
    if not isinstance(folds, int) or isinstance(folds, bool) or not 0 <= folds <= 3:
        problems.append("xorFolds must be 0, 1, 2 or 3")
    if problems:
        raise InputError(f"{where}: blindmatch.hardening: {'; '.join(problems)}")
    return Hardening(salt_field, salt_part, epsilon, bool(balance), int(folds))  # type: ignore[arg-type]


def with_hardening(raw: dict[str, Any], hardening: Hardening) -> dict[str, Any]:
    """A copy of a schema's JSON with `hardening` written into its blindmatch section."""
    out = copy.deepcopy(raw)
    out.setdefault(_SECTION, {})[_KEY] = hardening.to_json()
    return out


# -- keys --------------------------------------------------------------------------


def _derive(secret: bytes, info: bytes, length: int = 32) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=length, salt=b"blindmatch hardening v1", info=info
    ).derive(secret)


@dataclass
class _Keys:
    """Per-field hashing keys, salted on demand, and the keys of the bit transforms."""

    schema: Schema
    secret: bytes
    salt_index: int | None
    _salted: dict[str, tuple[tuple[bytes, ...], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.plain = self._key_lists(None)
        self.blip = _derive(self.secret, b"blip record seed")
        self.balance = _derive(self.secret, b"balance permutation")

    def _key_lists(self, salt: str | None) -> tuple[tuple[bytes, ...], ...]:
        s = self.schema
        info = s.kdf_info
        if salt is not None:
            info = (info or b"") + b"\x1fblindmatch salt\x1f" + salt.encode("utf-8")
        return generate_key_lists(
            self.secret,
            len(s.fields),
            key_size=s.kdf_key_size,
            salt=s.kdf_salt,
            info=info,
            kdf=s.kdf_type,
            hash_algo=s.kdf_hash,
        )

    def for_salt(self, salt: str) -> tuple[tuple[bytes, ...], ...]:
        if salt not in self._salted:
            salted = list(self._key_lists(salt))
            if self.salt_index is not None:
                salted[self.salt_index] = self.plain[self.salt_index]
            self._salted[salt] = tuple(salted)
        return self._salted[salt]


def salt_value(value: str, part: SaltPart) -> str:
    """The part of a normalised value that salts a record: its year, or all of it."""
    if part == "year":
        return value[:4] if len(value) >= 4 and value[:4].isdigit() else ""
    return value


# -- encoding ----------------------------------------------------------------------


def _field_filters(
    record: Sequence[str], schema: Schema, keys: Sequence[Sequence[bytes]], hash_l: int
) -> list[bitarray | None]:
    """Each field's own Bloom filter (hash_l bits), None for ignored fields.

    The same computation as clkhash's `crypto_bloom_filter`, kept per field.
    """
    out: list[bitarray | None] = []
    for entry, spec, key in zip(record, schema.fields, keys, strict=True):
        fhp = spec.hashing_properties
        if fhp is None:
            out.append(None)
            continue
        comparator = fhp.comparator if fhp.comparator is not None else NonComparison()
        tokens = list(comparator.tokenize(spec.format_value(entry)))
        if tokens:
            fn = hashing_function_from_properties(fhp)
            out.append(
                fn(tokens, key, fhp.strategy.bits_per_token(len(tokens)), hash_l, fhp.encoding)
            )
        else:
            empty = bitarray(hash_l)
            empty.setall(False)
            out.append(empty)
    return out


def _record_seed(key: bytes, record: Sequence[str], extra: str = "") -> int:
    digest = hashlib.blake2b(key=key, digest_size=16)
    for value in record:
        digest.update(value.encode("utf-8") + b"\x1f")
    digest.update(extra.encode("utf-8"))
    return int.from_bytes(digest.digest(), "big")


@lru_cache(maxsize=8)
def _permutation(key: bytes, length: int) -> npt.NDArray[np.intp]:
    return np.random.default_rng(int.from_bytes(key, "big")).permutation(length)


def _transform(
    bits: npt.NDArray[np.bool_],
    records: Sequence[Sequence[str]],
    hardening: Hardening,
    keys: _Keys,
    tag: str = "",
) -> npt.NDArray[np.uint8]:
    """BLIP then balancing on an (n, L) bit matrix; packed (n, L'/8) bytes out."""
    f = hardening.flip_probability
    if f > 0:
        bits = bits.copy()
        for i, record in enumerate(records):
            rng = np.random.default_rng(_record_seed(keys.blip, record, tag))
            bits[i] ^= rng.random(bits.shape[1]) < f
    if hardening.balance:
        both = np.concatenate([bits, ~bits], axis=1)
        bits = both[:, _permutation(keys.balance + tag.encode(), both.shape[1])]
    return np.packbits(bits, axis=1)


def _unpack(filters: Sequence[bitarray], length: int) -> npt.NDArray[np.bool_]:
    if not filters:
        return np.zeros((0, length), dtype=bool)
    raw = np.frombuffer(b"".join(f.tobytes() for f in filters), dtype=np.uint8)
    return np.unpackbits(raw.reshape(len(filters), -1), axis=1)[:, :length].astype(bool)


def _packed(filters: Sequence[bitarray], length: int) -> npt.NDArray[np.uint8]:
    """The filters as (n, length/8) bytes, what `np.packbits(_unpack(...))` gives, without
    the round trip through one byte a bit: at 1,000,000 records of 1,024 bits that held
    two 1 GB arrays (the unpacked bits and their bool copy) for each CLK an export makes.
    Big-endian filters of `length` bits, a whole number of bytes, are packed already."""
    whole = length % 8 == 0 and all(f.endian == "big" and len(f) == length for f in filters)
    if not filters or not whole:
        return np.packbits(_unpack(filters, length), axis=1)
    raw = np.frombuffer(b"".join(f.tobytes() for f in filters), dtype=np.uint8)
    return raw.reshape(len(filters), length // 8).copy()  # writable, as packbits' output


def encoded_bits(schema: Schema, hardening: Hardening) -> int:
    """The length of one encoding: the schema's l, doubled by balancing."""
    return int(schema.l) * (2 if hardening.balance else 1)


def encode_records(
    rows: Sequence[Sequence[str]],
    schema: Schema,
    secret: bytes,
    hardening: Hardening,
    *,
    field_names: Sequence[str] = (),
    callback: Callable[[int], None] | None = None,
    max_workers: int | None = None,
) -> npt.NDArray[np.uint8]:
    """Record-level encodings (one CLK per row), hardened: (n, bits/8) bytes.

    `rows` are normalised values in schema order with missing values as their
    sentinels (`client.encoding.readcsv.read_rows`); `schema` is the encoding schema
    (`LinkageSchema.for_encoding()`); `field_names` name its fields, for the salt.
    """
    folded = copy.deepcopy(schema)
    folded.xor_folds = hardening.xor_folds
    if hardening.salt_field is None:
        filters = clk_encoder.generate_clks(
            rows,
            folded,
            secret,
            validate=False,
            callback=(lambda tics, _stats: callback(tics)) if callback else None,
            max_workers=max_workers,
        )
    else:
        per_field = encode_fields(
            rows, schema, secret, hardening, field_names=field_names, callback=callback, raw=True
        )
        filters = []
        for i in range(len(rows)):
            combined = bitarray(int(schema.l) * 2**hardening.xor_folds)
            combined.setall(False)
            for bfs in per_field:
                if bfs is not None:
                    combined |= bfs[i]
            filters.append(fold_xor(combined, hardening.xor_folds))
    if hardening.flip_probability == 0 and not hardening.balance:
        return _packed(filters, int(schema.l))
    bits = _unpack(filters, int(schema.l))
    keys = _Keys(schema, secret, None)
    return _transform(bits, rows, hardening, keys)


def encode_fields(
    rows: Sequence[Sequence[str]],
    schema: Schema,
    secret: bytes,
    hardening: Hardening,
    *,
    field_names: Sequence[str] = (),
    callback: Callable[[int], None] | None = None,
    raw: bool = False,
) -> list[Any]:
    """Field-level encodings: for each schema field, an (n, bits/8) array (None if ignored).

    One Bloom filter per field, of the schema's length, hashed as the field is
    in the record-level CLK, then salted, folded, BLIP-ed and balanced as
    `hardening` says (the BLIP seed also covers the field, so two fields of one
    record get independent noise). With `raw`, the unfolded, untransformed
    bitarrays instead (for `encode_records`).
    """
    names = list(field_names) or [spec.identifier for spec in schema.fields]
    salt_index = names.index(hardening.salt_field) if hardening.salt_field else None
    if hardening.salt_field and salt_index is None:
        raise InputError(f"hardening salt field {hardening.salt_field!r} is not in the schema")
    keys = _Keys(schema, secret, salt_index)
    hash_l = int(schema.l) * 2**hardening.xor_folds
    columns: list[list[bitarray] | None] = [
        None if spec.hashing_properties is None else [] for spec in schema.fields
    ]
    for done, record in enumerate(rows, start=1):
        if salt_index is None:
            record_keys = keys.plain
        else:
            record_keys = keys.for_salt(salt_value(record[salt_index], hardening.salt_part))
        for col, bf in zip(
            columns, _field_filters(record, schema, record_keys, hash_l), strict=True
        ):
            if col is not None and bf is not None:
                col.append(bf)
        if callback and done % 1000 == 0:
            callback(1000)
    if callback and len(rows) % 1000:
        callback(len(rows) % 1000)
    if raw:
        return columns
    out: list[Any] = []
    for name, col in zip(names, columns, strict=True):
        if col is None:
            out.append(None)
            continue
        bits = _unpack([fold_xor(bf, hardening.xor_folds) for bf in col], int(schema.l))
        out.append(_transform(bits, rows, hardening, keys, tag=name))
    return out


__all__ = [
    "NONE",
    "RECOMMENDED",
    "Hardening",
    "encode_fields",
    "encode_records",
    "encoded_bits",
    "hardening_from_raw",
    "salt_value",
    "with_hardening",
]
