"""Builds fastsock's one extension; FASTSOCK_PUREPYTHON=1 builds none.

The metadata is in pyproject.toml; only the extension lives here.
"""

import os

from setuptools import Extension, setup

# Directives for every .pyx, in one place.  cdivision: the loops only divide
# non-negative numbers by non-zero constants, where C and Python agree.
DIRECTIVES = {
    "language_level": 3,
    "embedsignature": True,
    "boundscheck": False,
    "wraparound": False,
    "cdivision": True,
}

if os.environ.get("FASTSOCK_PUREPYTHON", "") not in ("", "0"):
    ext_modules = []
else:
    from Cython.Build import cythonize

    ext_modules = cythonize(
        [Extension("fastsock._loops", ["fastsock/_loops.pyx"])],
        compiler_directives=DIRECTIVES,
    )

setup(ext_modules=ext_modules)
