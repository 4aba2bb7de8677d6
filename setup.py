"""Builds the native kernels (binarize/packed/_kernels.c); everything else is in pyproject.toml.

The C file needs only Python.h and the system compiler: SIMD paths are selected at run time
through function-level target attributes, so no -march flag (one wheel serves every x86 CPU).
"""

import sys

from setuptools import Extension, setup

unix = sys.platform != "win32"
setup(
    ext_modules=[
        Extension(
            "binarize.packed._kernels",
            ["binarize/packed/_kernels.c"],
            extra_compile_args=["-O3", "-std=gnu11", "-Wall", "-Wextra", "-Wno-psabi"] if unix else [],
            libraries=["pthread"] if unix else [],
        )
    ]
)
