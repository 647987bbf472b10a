"""Pairs of one set of encodings that reach a Dice similarity, as the matcher decides them.

The attacks group near-identical encodings as the matcher could. They use anonlink's
accelerated Dice (`dice_coefficient_accelerated`), the reference the matcher's own
kernel reproduces bit for bit (tests/test_kernel.py), so the client needs nothing of
the matcher.
"""

from __future__ import annotations

import warnings

import numpy as np
import numpy.typing as npt
from bitarray import bitarray


def similar_pairs(
    encodings: npt.NDArray[np.uint8], similarity: float
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Every (i, j) of rows with Dice(encodings[i], encodings[j]) >= similarity, i != j
    included both ways (and i == j), as two arrays of row positions."""
    with warnings.catch_warnings():  # anonlink 0.15.3 imports pkg_resources, which warns
        warnings.simplefilter("ignore")
        from anonlink.similarities import dice_coefficient_accelerated

    filters = []
    for row in encodings:
        f = bitarray()
        f.frombytes(row.tobytes())
        filters.append(f)
    _sims, (rows_a, rows_b) = dice_coefficient_accelerated((filters, filters), similarity, k=None)
    return np.asarray(rows_a, dtype=np.intp), np.asarray(rows_b, dtype=np.intp)
