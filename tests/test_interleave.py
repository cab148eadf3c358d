"""``run --base-python``: base and candidate measured in one run.

A real A/A run (the same interpreter on both sides) through the CLI, then
its two reports: same cases, lockstep slots paired on both sides, the same
loops per value, the shared run id, and ``compare`` treating them as one
run and testing them slot by slot.  The same with a base that predates
lockstep (worker by worker, in the promised order).  Then every way the
base can be unfit, each a one-line error with exit 2 before anything is
measured.  The turn-taking itself: tests/test_lockstep.py.
"""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pyperf
import pytest
from test_run_cli import ONE_IMPL, Where, one_error_line, run, where

from bench.analysis.report import load_report
from bench.run import lockstep as _interleave

SELECTION = ["--scenario", "pingpong", "--transport", "unix-stream", "--mode", "blocking",
             "--size", "64", "--impl", ONE_IMPL]
PROCESSES = 3
SMALL = ["-p", str(PROCESSES), "-n", "1", "-w", "0", "--min-time", "0.005", "--no-html"]


def test_order_alternates_which_side_goes_first() -> None:
    assert _interleave.order(1) == ["base", "new"]
    assert _interleave.order(4) == ["base", "new", "new", "base", "base", "new", "new", "base"]
    for p in range(1, 9):
        sides = _interleave.order(p)
        assert sides.count("base") == sides.count("new") == p


def test_base_output_default() -> None:
    assert _interleave.base_output("results/x.json") == "results/x.base.json"
    assert _interleave.base_output("x") == "x.base.json"


@pytest.fixture(scope="module")
def aa_run(tmp_path_factory: pytest.TempPathFactory
           ) -> tuple[Where, subprocess.CompletedProcess[str]]:
    w = where(tmp_path_factory.mktemp("aa"))
    proc = run(w, [*SELECTION, *SMALL, "--base-python", sys.executable, "-o", "new.json"])
    return w, proc


def test_aa_run_writes_both_reports(aa_run: tuple[Where, subprocess.CompletedProcess[str]]) -> None:
    w, proc = aa_run
    assert proc.returncode == 0, proc.stderr
    base, new = load_report(w.cwd / "new.base.json"), load_report(w.cwd / "new.json")
    assert [c.key for c in base.cases] == [c.key for c in new.cases]
    assert len(new.cases) == 1
    for report, side in ((base, "base"), (new, "new")):
        fp = report.fingerprint
        assert fp["interleaved_side"] == side
        case = report.cases[0]
        assert len(case.process_values) == PROCESSES, side
    assert base.fingerprint["interleaved"] == new.fingerprint["interleaved"]
    assert "base vs new, interleaved" in proc.stdout
    assert "reports: new.json and new.base.json" in proc.stdout


def _runs(path: Path, values: bool = True) -> list[pyperf.Run]:
    (bench,) = pyperf.BenchmarkSuite.load(str(path)).get_benchmarks()
    return [r for r in bench.get_runs() if bool(r.values) == values]


def test_aa_run_is_in_lockstep_slot_by_slot(
        aa_run: tuple[Where, subprocess.CompletedProcess[str]]) -> None:
    w, proc = aa_run
    assert proc.returncode == 0, proc.stderr
    assert "interleaved in lockstep" in proc.stdout
    loops = set()
    for name in ("new.base.json", "new.json"):
        runs = _runs(w.cwd / name)
        assert sorted(r.get_metadata()["lockstep_slot"] for r in runs) == list(range(PROCESSES))
        loops |= {r.get_loops() for r in runs}
    assert len(loops) == 1, f"both sides must run the same loops per value: {loops}"
    # one calibration worker, the candidate's; the base has none
    (cal,) = _runs(w.cwd / "new.json", values=False)
    assert cal.get_loops() in loops
    assert not _runs(w.cwd / "new.base.json", values=False)


@pytest.fixture(scope="module")
def old_base_run(tmp_path_factory: pytest.TempPathFactory
                 ) -> tuple[Where, subprocess.CompletedProcess[str]]:
    """A base whose fastsock predates lockstep: the real interpreter, with
    its probe saying it has no baton."""
    tmp = tmp_path_factory.mktemp("old")
    w = where(tmp)
    old = _script(tmp / "py", f"""case "$*" in
  *collect*) {sys.executable} "$@" | sed 's/"_lockstep": 1/"_lockstep": 0/' ;;
  *) exec {sys.executable} "$@" ;;
esac
""")
    proc = run(w, [*SELECTION, *SMALL, "--base-python", old, "-o", "new.json"])
    return w, proc


def test_old_base_workers_alternate_and_share_loops(
        old_base_run: tuple[Where, subprocess.CompletedProcess[str]]) -> None:
    w, proc = old_base_run
    assert proc.returncode == 0, proc.stderr
    assert "interleaved worker by worker" in proc.stdout
    stamped = []
    loops = set()
    for side in ("base", "new"):
        path = w.cwd / ("new.base.json" if side == "base" else "new.json")
        for r in _runs(path):
            stamped.append((datetime.fromisoformat(r.get_metadata()["date"]), side))
            loops.add(r.get_loops())
    # pyperf stamps each worker's start: sorted by it, the sides follow order()
    assert [side for _, side in sorted(stamped)] == _interleave.order(PROCESSES)
    assert len(loops) == 1, f"both sides must run the same loops per value: {loops}"
    for name in ("new.base.json", "new.json"):
        assert not any("lockstep_slot" in r.get_metadata() for r in _runs(w.cwd / name))


def test_compare_treats_interleaved_reports_as_one_run(
        aa_run: tuple[Where, subprocess.CompletedProcess[str]]) -> None:
    w, proc = aa_run
    assert proc.returncode == 0, proc.stderr
    out = subprocess.run([sys.executable, "-m", "bench", "compare", "new.base.json",
                          "new.json"], cwd=w.cwd, env=w.env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode in (0, 1), out.stderr
    assert "separate runs" not in out.stdout
    assert "1 of 1 cases were measured in lockstep" in out.stdout
    differs = [ln for ln in out.stdout.splitlines() if ln.startswith("differs")]
    assert not any("interleaved" in ln for ln in differs), differs
    # the same reports taken as if from separate runs get the warning
    alone = w.cwd / "alone.json"
    pair = load_report(w.cwd / "new.json").fingerprint["interleaved"]
    text = (w.cwd / "new.json").read_text()
    assert json.dumps(pair) in text
    alone.write_text(text.replace(json.dumps(pair), json.dumps("another-run")))
    out = subprocess.run([sys.executable, "-m", "bench", "compare", "new.base.json",
                          "alone.json"], cwd=w.cwd, env=w.env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode in (0, 1), out.stderr
    assert "separate runs" in out.stdout
    assert "lockstep" not in out.stdout  # no pairing across runs


# ---------------------------------------------------------------- bad bases


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def _refused(w: Where, argv: list[str], *expect: str) -> None:
    proc = run(w, [*SELECTION, *SMALL, "-o", "new.json", *argv], timeout=180)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    line = one_error_line(proc.stderr)
    for text in expect:
        assert text in line, line
    assert not list(w.cwd.glob("*.json")), "nothing may be written before the base is checked"


def test_missing_base_python(tmp_path: Path) -> None:
    w = where(tmp_path)
    _refused(w, ["--base-python", str(tmp_path / "nope")], "is not an executable file")


def test_base_python_that_fails(tmp_path: Path) -> None:
    w = where(tmp_path)
    bad = _script(tmp_path / "py", "echo 'ModuleNotFoundError: no fastsock here' >&2\nexit 1\n")
    _refused(w, ["--base-python", bad], "cannot run fastsock-bench", "no fastsock here")


def test_base_with_other_cases(tmp_path: Path) -> None:
    w = where(tmp_path)
    other = _script(tmp_path / "py", "echo stream/tcp4/blocking/64/cython\n")
    _refused(w, ["--base-python", other], "enumerates other cases", "same case matrix")


@pytest.mark.skipif(ONE_IMPL != "cython", reason="needs the compiled loops selected")
def test_base_without_the_compiled_loops(tmp_path: Path) -> None:
    w = where(tmp_path)
    # the real interpreter for the case list, a fingerprint saying "python"
    fake = _script(tmp_path / "py", f"""case "$*" in
  *collect*) echo '{{"fastsock_loaded": "python"}}' ;;
  *) exec {sys.executable} "$@" ;;
esac
""")
    _refused(w, ["--base-python", fake], "not the compiled ones")


def test_base_output_needs_base_python(tmp_path: Path) -> None:
    w = where(tmp_path)
    _refused(w, ["--base-output", "b.json"], "--base-output needs --base-python")


def test_base_output_must_differ(tmp_path: Path) -> None:
    w = where(tmp_path)
    _refused(w, ["--base-python", sys.executable, "--base-output", "new.json"],
             "must differ")


def test_existing_base_output_is_not_overwritten(tmp_path: Path) -> None:
    w = where(tmp_path)
    (w.cwd / "new.base.json").write_text("keep")
    proc = run(w, [*SELECTION, *SMALL, "-o", "new.json", "--base-python", sys.executable])
    assert proc.returncode == 2
    assert "exists" in one_error_line(proc.stderr)
    assert (w.cwd / "new.base.json").read_text() == "keep"
    assert not (w.cwd / "new.json").exists()



def test_ci_example_uses_flags_run_accepts() -> None:
    """examples/ci-regression.yml's `run` line parses with today's flags."""
    from bench.cli import run as R
    text = (Path(__file__).resolve().parent.parent / "examples" / "ci-regression.yml").read_text()
    joined = text.replace("\\\n", " ")
    lines = [ln for ln in joined.splitlines() if "fastsock-bench run " in ln]
    parsed = []
    for line in lines:
        argv = line.split("fastsock-bench run ", 1)[1].split()
        argv = [a.replace('"$PROCESSES"', "16") for a in argv if a != "$SELECTION"]
        parsed.append(R.build_parser().parse_args(argv))
    timed = [a for a in parsed if a.measure == "time"]
    assert len(timed) == 1, lines
    args = timed[0]
    assert args.base_python == "../venv-base/bin/python"
    assert (args.output, args.base_output) == ("candidate.json", "base.json")
    # the count gate: two separate runs, no lockstep
    counted = [a for a in parsed if a.measure == "instructions"]
    assert [a.output for a in counted] == ["base.json", "candidate.json"]
    assert not any(a.base_python for a in counted)
    compares = [ln for ln in joined.splitlines() if "compare base.json candidate.json" in ln]
    assert compares, "the workflow must gate with compare base.json candidate.json"
