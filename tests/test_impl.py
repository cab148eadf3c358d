"""The implementation switch: which twin ``import fastsock`` loads.

A benchmark must never fall back silently: without FASTSOCK_PUREPYTHON=1
the compiled loops must be the ones loaded, and a missing build is a
failure here, not a skip.
"""

from __future__ import annotations

import os

import fastsock

PURE = os.environ.get("FASTSOCK_PUREPYTHON", "") not in ("", "0")


def test_the_switch_loads_the_expected_twin():
    if PURE:
        assert fastsock.IMPLEMENTATION == "python"
    else:
        assert fastsock.IMPLEMENTATION == "cython", (
            f"fastsock at {os.path.dirname(fastsock.__file__)} loaded the Python "
            "twin without FASTSOCK_PUREPYTHON=1: the compiled loops are not built"
        )


def test_top_level_names_are_the_loaded_twins():
    loaded = fastsock.implementations()[fastsock.IMPLEMENTATION]
    assert loaded.IMPLEMENTATION == fastsock.IMPLEMENTATION
    for name in fastsock.LOOP_NAMES:
        assert getattr(fastsock, name) is getattr(loaded, name), name


def test_implementations_name_themselves():
    for name, module in fastsock.implementations().items():
        assert name == module.IMPLEMENTATION
        for fn in fastsock.LOOP_NAMES:
            assert callable(getattr(module, fn)), f"{name} lacks {fn}"
