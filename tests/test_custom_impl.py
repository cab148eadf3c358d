"""examples/custom-impl installed as a user would: found, checked, measured, shown.

The module's fixture copies the example out of the source tree (so the
build's files land elsewhere), ``pip install``s it into this test
environment (``--no-build-isolation --no-deps --no-index``: setuptools and
wheel come with the test extra, nothing is fetched) and uninstalls it at
the end, whatever happened; an example already installed here is a
failure, not something to replace: the environment is left as found.
Then, as the README's "Measure your own socket code" walks through it:
``--list`` shows its cases (its entry point), ``check-impl`` passes, ``run
--quick`` checks it, measures it and shows it in the summary, the report's
metadata, the HTML and the figures; ``speedup`` compares it with the
Python loop; ``compare`` takes two of its runs.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_run_cli import REPO, RUN_TIMEOUT, SMALL, Where, assert_nothing_left, progress, where

from bench.analysis.report import load_report

EXAMPLE = REPO / "examples" / "custom-impl"
DIST = "fastsock-example-impl"
NAME = "example-gather"
RUN = ["--quick", "--scenario", "stream", "--transport", "tcp4,unix-stream",
       "--mode", "blocking", "--impl", f"python,{NAME}", *SMALL]


def pip(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *argv], capture_output=True, text=True,
                          timeout=RUN_TIMEOUT)


def installed() -> bool:
    importlib.invalidate_caches()
    try:
        importlib.metadata.distribution(DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Where]:
    """The example installed; a private place to run from."""
    if installed():
        pytest.fail(f"{DIST} is already installed in this environment: uninstall it "
                    "(this test installs it and removes it again)")
    src = tmp_path_factory.mktemp("example") / "custom-impl"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    try:
        proc = pip("install", "-q", "--no-build-isolation", "--no-deps", "--no-index", str(src))
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert installed()
        yield where(tmp_path_factory.mktemp("custom-run"))
    finally:
        pip("uninstall", "-q", "-y", DIST)
        assert not installed(), f"{DIST} is still installed"


def bench(w: Where, *argv: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run([sys.executable, "-m", "bench", *argv], cwd=w.cwd, env=w.env,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT)
    finally:
        assert_nothing_left(w)


@pytest.fixture(scope="module")
def measured(example: Where) -> tuple[Where, subprocess.CompletedProcess[str]]:
    return example, bench(example, "run", *RUN, "-o", "out.json")


def test_the_entry_point_puts_it_in_the_list(example: Where) -> None:
    p = bench(example, "run", "--quick", "--impl", "all", "--scenario", "stream",
              "--transport", "tcp4", "--mode", "blocking,spin", "--list")
    assert p.returncode == 0, p.stderr
    assert f"stream/tcp4/blocking/64/{NAME}" in p.stdout.split()
    assert f"stream/tcp4/spin/64/{NAME}" not in p.stdout.split()
    assert (f"fastsock-bench run: note: {NAME} runs only stream over tcp4, tcp6, unix-stream "
            "in blocking or timeout mode: left out of 1 of the selection's 2 cases"
            in p.stderr.splitlines())


def test_it_passes_check_impl(example: Where) -> None:
    p = bench(example, "check-impl", NAME)
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == (f"{NAME} = fastsock_example.gather (entry point; {DIST} 0.1.0), "
                        "contract 1")
    assert lines[-1].startswith("11 checks: 11 passed, 0 failed")


def test_run_checks_it_measures_it_and_the_summary_shows_it(measured: tuple) -> None:
    _, p = measured
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    assert f"fastsock-bench: impl {NAME} passed 6 conformance checks" in out
    assert set(progress(out).values()) == {"ok"} and len(progress(out)) == 4
    table = out[out.index("stream throughput"):].split("\n\n")[0]
    mine = [ln.split() for ln in table.splitlines() if NAME in ln]
    assert [row[0] for row in mine] == ["tcp4", "unix-stream"]
    assert all(row[-1].endswith("x") for row in mine)  # its speedup over python


def test_the_report_says_where_it_came_from(measured: tuple) -> None:
    w, _ = measured
    report = load_report(w.cwd / "out.json")
    cases = [c for c in report.cases if c.key.impl == NAME]
    assert {c.key.name for c in cases} == {f"stream/{t}/blocking/64/{NAME}"
                                           for t in ("tcp4", "unix-stream")}
    for c in cases:
        meta = c.metadata
        assert (meta["impl_module"], meta["impl_dist"], meta["impl_dist_version"],
                meta["impl_version"], meta["impl_contract"]) == (
            "fastsock_example.gather", DIST, "0.1.0", "0.1.0", 1)
        assert Path(meta["impl_origin"]).name == "gather.py"
        assert "site-packages" in meta["impl_origin"]  # the installed copy, not the tree's


def test_the_html_and_the_figures_show_it(measured: tuple) -> None:
    from bench.present import figures as F

    w, _ = measured
    page = (w.cwd / "out.html").read_text(encoding="utf-8")
    assert f">{NAME}</th>" in page
    assert f"<th>impls from outside fastsock</th><td>{NAME}: fastsock_example.gather " \
        f"({DIST} 0.1.0, contract 1)" in page
    report = load_report(w.cwd / "out.json")
    fig = F.throughput_figure(report)
    assert fig is not None
    assert NAME in {t.get_text() for lg in fig.legends for t in lg.get_texts()}
    assert F.impl_style(NAME) not in {F.impl_style("python"), F.impl_style("cython")}
    heat = F.speedup_figure(report, "stream", ("python", NAME))
    assert heat is not None and f"Speedup of {NAME} over python" in heat.get_suptitle()


def test_speedup_against_the_python_loop(measured: tuple) -> None:
    w, _ = measured
    p = bench(w, "speedup", "out.json", "--base", "python", "--impl", NAME)
    assert p.returncode == 0, p.stderr
    rows = [ln for ln in p.stdout.splitlines() if ln.startswith("stream/")]
    assert [r.split()[0] for r in rows] == ["stream/tcp4/blocking/64",
                                            "stream/unix-stream/blocking/64"]
    assert f"speedup = python time / {NAME} time" in p.stdout


def test_compare_two_of_its_runs(measured: tuple) -> None:
    w, _ = measured
    p = bench(w, "run", "--quick", "--scenario", "stream", "--transport", "tcp4", "--mode",
              "blocking", "--impl", NAME, *SMALL, "-o", "new.json", "--no-html")
    assert p.returncode == 0, p.stdout + p.stderr
    p = bench(w, "compare", "out.json", "new.json")
    assert p.returncode == 0, p.stdout + p.stderr  # one process a side: nothing can be called
    assert f"stream/tcp4/blocking/64/{NAME}" in p.stdout
    assert "only in" in p.stdout  # the cases of out.json that new.json lacks, listed apart
    assert os.path.exists(w.cwd / "new.json")
