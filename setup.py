"""The native Dice kernel (matcher/core/_kernel.c); everything else is in pyproject.toml.

The extension is optional: if it cannot be compiled, the install still succeeds
and blindmatch falls back to a slower numpy kernel (see matcher/core/kernel.py).
One build runs on every x86-64 CPU: the AVX-512 path is chosen at run time.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "blindmatch.matcher.core._kernel",
            sources=["matcher/core/_kernel.c"],
            # included by _kernel.c
            depends=[
                "matcher/core/_lshbatch.c",
                "matcher/core/_pairperm.c",
                "matcher/core/_standing.c",
                "matcher/core/_greedy.c",
                "matcher/core/_radix.c",
            ],
            extra_compile_args=["-O3", "-std=c11", "-Wall", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
