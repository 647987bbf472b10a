"""Field-level encodings: one Bloom filter per field, laid side by side in one CLK.

A schema that declares `"blindmatch": {"encoding": "field-level"}` at its top
level gives every hashed feature its own segment of `blindmatch.bits` bits (a
power of two, at least 64). A record's CLK is the concatenation of its fields'
Bloom filters, in schema order, so:

- the whole CLK still works as a record-level CLK (Dice over all bits), which
  the matcher uses to find candidate pairs quickly;
- the matcher, told only the segment sizes, can compare field by field and see
  which fields are missing (an all-zero segment), so a missing date of birth
  counts as *unknown*, not as a disagreement.

Hashing is clkhash's own, field by field: the same HKDF-derived per-feature
keys, tokenisers and bitsPerToken/bitsPerFeature strategies as
`clkhash.clk.generate_clks`; only the filter length differs (the segment's).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bitarray import bitarray
from clkhash.bloomfilter import hashing_function_from_properties
from clkhash.key_derivation import generate_key_lists
from clkhash.schema import Schema


def encode_field_level(
    rows: Sequence[Sequence[str]],
    schema: Schema,
    field_bits: Sequence[int],
    secret: bytes,
    *,
    callback: Callable[[int], None] | None = None,
) -> bytes:
    """Concatenated per-field Bloom filters for every row, as CLK bytes in row order.

    `rows` hold one normalised value per schema feature ('' for missing: no
    bits); `field_bits` one segment size per *hashed* feature, in order.
    """
    keys = generate_key_lists(
        secret,
        len(schema.fields),
        key_size=schema.kdf_key_size,
        salt=schema.kdf_salt,
        info=schema.kdf_info,
        kdf=schema.kdf_type,
        hash_algo=schema.kdf_hash,
    )
    plan: list[tuple[int, int, Any, Any, Any]] = []
    hashed = [i for i, f in enumerate(schema.fields) if f.hashing_properties is not None]
    if len(hashed) != len(field_bits):
        raise ValueError("one segment size per hashed feature is needed")
    for i, bits in zip(hashed, field_bits, strict=True):
        field = schema.fields[i]
        fhp = field.hashing_properties
        assert fhp is not None
        plan.append((i, bits, field, fhp, hashing_function_from_properties(fhp)))
    out = bytearray()
    for n, row in enumerate(rows, start=1):
        clk = bitarray()
        for i, bits, field, fhp, hash_function in plan:
            value = row[i]
            tokens = list(fhp.comparator.tokenize(field.format_value(value))) if value else []
            if tokens:
                clk += hash_function(
                    tokens, keys[i], fhp.strategy.bits_per_token(len(tokens)), bits, fhp.encoding
                )
            else:
                clk += _zeros(bits)
        out += clk.tobytes()
        if callback is not None and n % 1000 == 0:
            callback(1000)
    if callback is not None and len(rows) % 1000:
        callback(len(rows) % 1000)
    return bytes(out)


def _zeros(bits: int) -> bitarray:
    empty = bitarray(bits)
    empty.setall(False)
    return empty
