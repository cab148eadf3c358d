"""The import direction of ``bench``'s stages, as its package docstring says.

The table under ``.. stages::`` in ``bench/__init__.py`` is the one place the
direction is written; this test reads it and checks every import statement
of every module (top level, inside functions, under ``TYPE_CHECKING``):
a module imports its own stage or stages below it, never a stage above
nor a sibling on its line.  ``fastsock`` (what is measured) imports nothing
of ``bench`` (what measures).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import bench

BENCH = Path(bench.__file__).resolve().parent
FASTSOCK = BENCH.parent / "fastsock"


def stages(doc: str) -> dict[str, tuple[int, int]]:
    """stage -> (rank from the bottom, line); one line's stages share a rank."""
    lines = doc.split(".. stages::", 1)[1].strip("\n").split("\n\n", 1)[0].splitlines()
    table = [[name.strip() for name in line.strip().split("  ", 1)[0].split("|")]
             for line in lines if line.strip()]
    return {name: (len(table) - i, i) for i, names in enumerate(table) for name in names}


def imported(source: str, module: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every bench module or package ``source`` imports."""
    package = module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            out += [(node.lineno, f"{base}.{a.name}") for a in node.names]
    return [(n, name) for n, name in out if name == "bench" or name.startswith("bench.")]


def stage_of(dotted: str) -> str | None:
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else None


def violations(source: str, module: str, table: dict[str, tuple[int, int]]) -> list[str]:
    """What is wrong with ``module``'s imports, one line each."""
    mine = stage_of(module)
    if module == "bench.__main__":
        mine = "cli"
    out = []
    for line, name in imported(source, module):
        theirs = stage_of(name)
        if mine is None or theirs is None or theirs == mine:
            continue
        if theirs not in table:  # a name of a top-level module, not a stage: not allowed
            out.append(f"{module}:{line} imports {name}, which is in no stage")
            continue
        if table[theirs][0] >= table[mine][0]:
            how = "beside" if table[theirs][0] == table[mine][0] else "above"
            out.append(f"{module}:{line} imports {name}: stage {theirs} is {how} {mine}")
    return out


def modules() -> list[tuple[str, Path]]:
    return sorted(("bench." + ".".join(p.relative_to(BENCH).with_suffix("").parts)
                   .replace(".__init__", ""), p) for p in BENCH.rglob("*.py"))


TABLE = stages(bench.__doc__ or "")


def test_the_docstring_names_every_stage_package() -> None:
    packages = {p.name for p in BENCH.iterdir() if (p / "__init__.py").exists()}
    assert set(TABLE) == packages
    top = {p.name for p in BENCH.glob("*.py")}
    assert top == {"__init__.py", "__main__.py"}, "bench's modules live in its stages"


@pytest.mark.parametrize("module", [m for m, _ in modules()])
def test_imports_point_down(module: str) -> None:
    path = dict(modules())[module]
    assert violations(path.read_text(encoding="utf-8"), module, TABLE) == []


def test_fastsock_imports_nothing_of_bench() -> None:
    paths = list(FASTSOCK.rglob("*.py"))  # its subpackages (the idioms) too
    assert FASTSOCK / "_idioms" / "sendall.py" in paths
    for path in paths:
        module = ".".join(("fastsock", *path.relative_to(FASTSOCK).with_suffix("").parts))
        assert imported(path.read_text(encoding="utf-8"), module) == []


@pytest.mark.parametrize(("module", "planted", "why"), [
    ("bench.run.worker", "from bench.remote.client import open_case", "remote is above run"),
    ("bench.analysis.compare", "import bench.present.figures", "present is above analysis"),
    ("bench.present.html", "    from bench.run import matrix", "run is beside present"),
    ("bench.run.matrix", "from ..cli import run", "cli is above run (relative)"),
])
def test_a_planted_wrong_import_is_caught(module: str, planted: str, why: str) -> None:
    """The check fails on what it exists to catch (at top level or indented
    in a function, absolute or relative)."""
    path = dict(modules())[module]
    source = path.read_text(encoding="utf-8")
    assert violations(source, module, TABLE) == []
    if planted.startswith(" "):
        planted = f"def _planted() -> None:\n{planted}\n"
    found = violations(source + "\n" + planted + "\n", module, TABLE)
    assert len(found) == 1, why
    assert ("above" in found[0]) or ("beside" in found[0])
