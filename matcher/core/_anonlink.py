"""anonlink, imported once and quietly.

anonlink 0.15.3 reads its own version through `pkg_resources`, which warns on
import (and is gone from setuptools 81 on, hence the setuptools cap in
pyproject.toml). Importing it here keeps that warning out of everyone's way.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import anonlink  # noqa: F401
    from anonlink.concurrency import split_to_chunks
    from anonlink.similarities import dice_coefficient_accelerated
    from anonlink.solving import greedy_solve

__all__ = ["dice_coefficient_accelerated", "greedy_solve", "split_to_chunks"]
