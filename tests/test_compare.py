"""bench.analysis.compare, its renderers and the ``compare`` / ``speedup`` CLI, on
synthetic reports with known distributions (tests/synth.py)."""

from __future__ import annotations

import io
import json
import os
import pty
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.analysis import units as _units
from bench.analysis.compare import Settings, compare_reports, machine_differences, speedup
from bench.analysis.report import CaseKey, Report
from bench.analysis.stats import Correction, Verdict
from bench.cli.common import FORMATS
from bench.present import formats as _compare_format
from tests import synth

ROOT = Path(__file__).resolve().parent.parent
KEYS = synth.default_keys()
SCALED = KEYS[::3]  # a third of the cases, across scenarios, transports, impls
SLOWER_10 = dict.fromkeys(SCALED, 1.1)
FLAGS = (Verdict.SLOWER, Verdict.FASTER)


def _verdicts(cmp: Any) -> dict[CaseKey, Verdict]:
    return {c.key: c.time.verdict for c in cmp.cases}


# -- the comparison, in process --


def test_a_a_is_not_flagged() -> None:
    cmp = compare_reports(synth.make_report(seed=1), synth.make_report(seed=2))
    assert not [k for k, v in _verdicts(cmp).items() if v in FLAGS]
    assert cmp.exit_code == 0 and cmp.regressions() == []
    assert len(cmp.cases) == len(KEYS) and not cmp.only_base and not cmp.only_new


def test_a_report_against_itself_is_all_same() -> None:
    report = synth.make_report(seed=4)
    cmp = compare_reports(report, report)
    assert set(_verdicts(cmp).values()) == {Verdict.SAME}
    assert all(c.time.est.ratio == pytest.approx(1.0) for c in cmp.cases)


def test_ten_percent_slowdown_on_a_third_is_caught() -> None:
    cmp = compare_reports(synth.make_report(seed=1),
                          synth.make_report(seed=3, scale=SLOWER_10))
    verdicts = _verdicts(cmp)
    assert {k for k, v in verdicts.items() if v is Verdict.SLOWER} == set(SCALED)
    assert not [k for k, v in verdicts.items() if v is Verdict.FASTER]
    assert cmp.exit_code == 1
    for c in cmp.cases:
        if c.key in SLOWER_10:
            assert c.time.est.low < 1.10 < c.time.est.high
    assert set(cmp.geomeans) == {"stream", "pingpong"}
    assert cmp.geomeans["stream"][1] == 24 and cmp.geomeans["stream"][0] > 1.01


def test_speedup_in_the_new_report_is_faster() -> None:
    cmp = compare_reports(synth.make_report(seed=3, scale=SLOWER_10),
                          synth.make_report(seed=1))
    assert {k for k, v in _verdicts(cmp).items() if v is Verdict.FASTER} == set(SCALED)
    assert cmp.exit_code == 0


def test_many_seeds_end_to_end() -> None:
    seeds, aa_flagged, caught, others = 10, 0, 0, 0
    for seed in range(seeds):
        base = synth.make_report(seed=100 + seed)
        aa = compare_reports(base, synth.make_report(seed=200 + seed))
        aa_flagged += any(v in FLAGS for v in _verdicts(aa).values())
        ab = _verdicts(compare_reports(base, synth.make_report(seed=300 + seed, scale=SLOWER_10)))
        caught += sum(ab[k] is Verdict.SLOWER for k in SCALED)
        others += sum(v in FLAGS for k, v in ab.items() if k not in SLOWER_10)
    print(f"synth reports, {seeds} seeds: A/A with a flag {aa_flagged}, "
          f"caught {caught}/{seeds * len(SCALED)}, others flagged {others}")
    assert aa_flagged <= 1 and others <= 1
    assert caught == seeds * len(SCALED)


def test_unequal_process_and_value_counts() -> None:
    fewer = dict.fromkeys(KEYS[:6], 5)
    base = synth.make_report(seed=1, values=3)
    new = synth.make_report(seed=5, values=5, processes=11, processes_by_key=fewer,
                            scale={KEYS[0]: 1.25, KEYS[10]: 1.25})
    cmp = compare_reports(base, new)
    by_key = {c.key: c for c in cmp.cases}
    assert (by_key[KEYS[0]].time.est.n_base, by_key[KEYS[0]].time.est.n_new) == (8, 5)
    assert (by_key[KEYS[10]].time.est.n_base, by_key[KEYS[10]].time.est.n_new) == (8, 11)
    assert by_key[KEYS[0]].time.verdict is Verdict.SLOWER
    assert by_key[KEYS[10]].time.verdict is Verdict.SLOWER
    assert "8/5" in _compare_format.comparison_table(cmp)


def test_too_few_processes_are_inconclusive_and_said() -> None:
    cmp = compare_reports(synth.make_report(seed=1, processes=3),
                          synth.make_report(seed=2, processes=3, scale=SLOWER_10))
    assert set(_verdicts(cmp).values()) == {Verdict.INCONCLUSIVE}
    assert any("cannot be called" in n for n in cmp.notes)
    doc = json.loads(_compare_format.comparison_json(cmp))
    assert doc["cases"][0]["time"]["ci"] == [None, None]
    assert "too few processes" in _compare_format.comparison_table(cmp)


def test_noisy_reports_say_the_intervals_are_wide() -> None:
    cmp = compare_reports(synth.make_report(seed=1, process_sd=0.08),
                          synth.make_report(seed=2, process_sd=0.08))
    assert any("wider than" in n for n in cmp.notes)


def test_cases_in_one_report_only_are_listed_apart() -> None:
    extra = CaseKey("stream", "tcp6", "blocking", 64, "cython")
    base = synth.make_report(KEYS[:-2], seed=1)
    new = synth.make_report(KEYS[2:] + [extra], seed=2)
    cmp = compare_reports(base, new)
    assert cmp.only_base == KEYS[:2] and cmp.only_new == KEYS[-2:] + [extra]
    assert len(cmp.cases) == len(KEYS) - 4
    text = _compare_format.comparison_table(cmp)
    assert f"only in {new.path} (3, not compared)" in text and extra.name in text


def test_nothing_in_common_is_an_error() -> None:
    with pytest.raises(ValueError, match="no case in common"):
        compare_reports(synth.make_report(KEYS[:4], seed=1), synth.make_report(KEYS[4:8], seed=2))


def test_machine_and_other_differences() -> None:
    base = synth.make_report(seed=1)
    other = synth.make_report(seed=2, extra_meta={"cpu_count": 4, "load_avg_1min": 3.0})
    assert [(d.key, d.base, d.new) for d in machine_differences(base, other)] == [
        ("cpu_count", 2, 4)]
    moved = synth.make_report(seed=2, extra_meta={
        "fastsock_commit": "1111111", "python_version": "3.12.1 (64-bit)",
        "peer_impl": "python"})
    cmp = compare_reports(base, moved)
    assert not machine_differences(base, moved)
    assert [d.key for d in cmp.differs] == ["python_version", "fastsock_commit"]
    assert cmp.case_differs == {"peer_impl": len(KEYS)}
    line = next(x for x in _compare_format.comparison_table(cmp).splitlines()
                if x.startswith("differs: "))
    assert "fastsock_commit 0000000 -> 1111111" in line
    assert f"peer_impl in {len(KEYS)} cases" in line
    assert "load_avg" not in line


def _scale_p99(report: Report, factor: float) -> Report:
    for case in report.cases:
        for meta in case.run_metadata:
            if "rtt_p99" in meta:
                meta["rtt_p99"] *= factor
    return report


def test_p99_rtt_is_compared_and_gates_only_when_asked() -> None:
    base = synth.make_report(seed=1)
    new = _scale_p99(synth.make_report(seed=2), 1.3)
    cmp = compare_reports(base, new)
    pingpong = [c for c in cmp.cases if c.key.scenario == "pingpong"]
    assert all(c.rtt_p99 is not None and c.rtt_p99.verdict is Verdict.SLOWER for c in pingpong)
    assert all(c.rtt_p99 is None for c in cmp.cases if c.key.scenario == "stream")
    assert cmp.exit_code == 0
    gated = compare_reports(base, new, Settings(gate_p99=True))
    assert gated.exit_code == 1 and len(gated.regressions()) == len(pingpong)


def test_settings_change_the_calls() -> None:
    base, new = synth.make_report(seed=1), synth.make_report(seed=3, scale=SLOWER_10)
    assert compare_reports(base, new, Settings(threshold=0.15)).exit_code == 0
    holm = compare_reports(base, new, Settings(correction=Correction.HOLM))
    assert holm.settings.correction is Correction.HOLM
    assert "(Holm)" in _compare_format.comparison_table(holm)


# -- speedup --


def test_speedup_view() -> None:
    report = synth.make_report(KEYS + [CaseKey("stream", "tcp6", "spin", 64, "python")], seed=1)
    sp = speedup(report)
    assert len(sp.results) == len(KEYS) // 2
    for r in sp.results:
        assert r.key.impl == "cython"
        assert r.est.low < 1.3 < r.est.high  # synth: Python takes 1.3x as long
    assert sp.unpaired == [CaseKey("stream", "tcp6", "spin", 64, "python")]
    assert sp.geomeans["stream"][0] == pytest.approx(1.3, rel=0.03)


def test_speedup_needs_both_twins() -> None:
    only_cython = [k for k in KEYS if k.impl == "cython"]
    with pytest.raises(ValueError, match="no case has both"):
        speedup(synth.make_report(only_cython, seed=1))


# -- rendering --


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


def test_colour_only_on_a_terminal_without_no_color() -> None:
    assert _compare_format.use_colour(_Stream(True), {})
    assert not _compare_format.use_colour(_Stream(False), {})
    assert not _compare_format.use_colour(_Stream(True), {"NO_COLOR": "1"})
    assert _compare_format.use_colour(_Stream(True), {"NO_COLOR": ""})  # no-color.org
    assert not _compare_format.use_colour(_Stream(True), {"TERM": "dumb"})


def test_table_colours_verdicts_when_asked() -> None:
    cmp = compare_reports(synth.make_report(seed=1), synth.make_report(seed=3, scale=SLOWER_10))
    assert "\033[" not in _compare_format.comparison_table(cmp, colour=False)
    coloured = _compare_format.comparison_table(cmp, colour=True)
    assert "\033[31mslower" in coloured


def test_formats_agree() -> None:
    cmp = compare_reports(synth.make_report(seed=1), synth.make_report(seed=3, scale=SLOWER_10))
    assert set(FORMATS) == set(_compare_format.FORMATS)
    md = _compare_format.render_comparison(cmp, "markdown")
    assert md.startswith("### fastsock-bench compare: regression: 12 of 36 cases slower")
    assert md.count("**slower**") == 2 * len(SCALED) + 4  # flagged table, full table, p99
    doc = json.loads(_compare_format.render_comparison(cmp, "json"))
    assert doc["fastsock_compare"] == 1 and doc["exit_code"] == 1
    assert sorted(doc["regressions"]) == sorted(k.name for k in SCALED)
    case = doc["cases"][0]
    assert case["name"] == KEYS[0].name and case["time"]["verdict"] == "slower"
    assert case["change"].endswith("MB/s") and case["time"]["processes"] == [8, 8]
    assert doc["summary"] == {"slower": 12, "faster": 0, "same": cmp.counts()["same"],
                              "inconclusive": cmp.counts()["inconclusive"]}


def test_units_of_the_change() -> None:
    assert _units.fmt_change("stream", 1.10) == "-9.1% MB/s"
    assert _units.fmt_change("pingpong", 1.10) == "+10.0% RTT"
    assert _units.fmt_change("connect", 0.5) == "+100.0% conn/s"
    assert _units.fmt_figure("stream", 1000, 1e-6) == "1,000.0 MB/s"
    assert _units.fmt_figure("pingpong", 64, 12e-6) == "12.00 µs"


# -- the CLI, in subprocesses --


def _command() -> list[str]:
    """``python -m bench``: the real command line."""
    return [sys.executable, "-m", "bench"]


BAD_FILES = ("missing", "empty", "truncated", "not_json", "not_pyperf", "not_utf8", "foreign",
             "directory")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("reports")
    f = {
        "base": synth.write_report(d / "base.json", seed=1),
        "aa": synth.write_report(d / "aa.json", seed=2),
        "ab": synth.write_report(d / "ab.json", seed=3, scale=SLOWER_10),
        "machine": synth.write_report(d / "machine.json", seed=2,
                                      extra_meta={"cpu_model_name": "Other CPU"}),
        "cython_only": synth.write_report(d / "cy.json", [k for k in KEYS if k.impl == "cython"]),
        "foreign": synth.write_foreign_report(d / "foreign.json"),
        "missing": str(d / "missing.json"),
        "directory": str(d),
        "out": str(d / "out.json"),
    }
    raw = Path(f["base"]).read_bytes()
    for name, data in (("empty", b""), ("truncated", raw[: len(raw) // 2]),
                       ("not_json", b"hello, world\n"), ("not_pyperf", b'{"a": [1, 2]}\n'),
                       ("not_utf8", b"\xff\xfe{\n")):
        (d / f"{name}.json").write_bytes(data)
        f[name] = str(d / f"{name}.json")
    return f


@pytest.fixture(scope="module")
def cli(files: dict[str, str]) -> dict[str, subprocess.CompletedProcess[str]]:
    """Every CLI run of this module, started at once: each pays the
    interpreter's and scipy's start-up (~1.5 s), two cores share them."""
    f = files
    runs: dict[str, list[str]] = {
        "aa_table": ["compare", f["base"], f["aa"]],
        "ab_markdown": ["compare", f["base"], f["ab"], "--format", "markdown"],
        "ab_json_out": ["compare", f["base"], f["ab"], "--format", "json", "-o", f["out"]],
        "machine": ["compare", f["base"], f["machine"]],
        "machine_force": ["compare", f["base"], f["machine"], "--force", "--format", "json",
                          "--threshold", "15"],
        "no_common": ["compare", f["cython_only"], f["foreign"]],
        "bad_threshold": ["compare", f["base"], f["aa"], "--threshold", "-3"],
        "bad_format": ["compare", f["base"], f["aa"], "--format", "html"],
        "one_file": ["compare", f["base"]],
        "unwritable": ["speedup", f["base"], "-o", f["missing"] + "/x/out"],
        "speedup_table": ["speedup", f["base"]],
        "speedup_markdown": ["speedup", f["base"], "--format", "markdown"],
        "speedup_json": ["speedup", f["base"], "--format", "json"],
        "speedup_no_twins": ["speedup", f["cython_only"]],
    }
    for bad in BAD_FILES:
        runs[f"bad_new_{bad}"] = ["compare", f["base"], f[bad]]
    for bad in BAD_FILES[::3]:  # the same loader: a sample is enough
        runs[f"bad_speedup_{bad}"] = ["speedup", f[bad]]
    runs["bad_base"] = ["compare", f["empty"], f["base"]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = {name: subprocess.Popen(_command() + args, cwd=ROOT, env=env, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, args in runs.items()}
    # The table on a pseudo-terminal (NO_COLOR: test_colour_only_on_a_terminal...).
    on_tty = {"tty": _start_on_terminal(["compare", f["base"], f["ab"]],
                                        {**env, "NO_COLOR": "", "TERM": "xterm"})}
    out: dict[str, subprocess.CompletedProcess[str]] = {}
    for name, (tty_proc, leader) in on_tty.items():
        text = _drain(leader)
        out[name] = subprocess.CompletedProcess(tty_proc.args, tty_proc.wait(timeout=120), text, "")
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=120)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out


def _start_on_terminal(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    leader, follower = pty.openpty()
    proc = subprocess.Popen(_command() + args, cwd=ROOT, env=env, stdout=follower,
                            stderr=subprocess.DEVNULL)
    os.close(follower)
    return proc, leader


def _drain(leader: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(leader)
    return b"".join(chunks).decode()


def _one_error_line(res: subprocess.CompletedProcess[str], cmd: str) -> str:
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith(f"fastsock-bench {cmd}: error: ")
    return lines[0]


def test_cli_exit_0_table(cli: dict[str, Any]) -> None:
    res = cli["aa_table"]
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and "\033[" not in res.stdout  # not a terminal: no colour
    assert res.stdout.startswith("fastsock-bench compare: ")
    assert res.stdout.rstrip().endswith("no regression (exit 0)")


def test_cli_exit_1_markdown(cli: dict[str, Any]) -> None:
    res = cli["ab_markdown"]
    assert res.returncode == 1, res.stderr
    assert res.stdout.startswith("### fastsock-bench compare: regression: 12 of 36")
    assert "| case | procs |" in res.stdout


def test_cli_exit_1_json_to_a_file(cli: dict[str, Any], files: dict[str, str]) -> None:
    res = cli["ab_json_out"]
    assert res.returncode == 1 and res.stdout == "", res.stderr
    doc = json.loads(Path(files["out"]).read_text())
    assert doc["exit_code"] == 1 and len(doc["regressions"]) == 12


def test_cli_exit_3_different_machines(cli: dict[str, Any]) -> None:
    res = cli["machine"]
    assert res.returncode == 3 and res.stdout == ""
    line = _one_error_line(res, "compare")
    assert "different machines" in line and "Other CPU" in line and "--force" in line


def test_cli_force_compares_and_shows_the_machines(cli: dict[str, Any]) -> None:
    res = cli["machine_force"]
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["machine_differs"] == {"cpu_model_name": ["Synthetic CPU @ 3.0GHz", "Other CPU"]}
    assert doc["settings"]["threshold"] == pytest.approx(0.15)


@pytest.mark.parametrize("bad", BAD_FILES)
def test_cli_exit_2_bad_files(cli: dict[str, Any], bad: str) -> None:
    for name, cmd in ((f"bad_new_{bad}", "compare"), (f"bad_speedup_{bad}", "speedup")):
        if name in cli:
            res = cli[name]
            assert res.returncode == 2 and res.stdout == ""
            _one_error_line(res, cmd)


def test_cli_exit_2_names_the_bad_file(cli: dict[str, Any], files: dict[str, str]) -> None:
    assert files["empty"] in _one_error_line(cli["bad_base"], "compare")
    assert "without fastsock metadata" in _one_error_line(cli["bad_new_foreign"], "compare")
    assert "directory" in _one_error_line(cli["bad_new_directory"], "compare")


@pytest.mark.parametrize("name, cmd", [("no_common", "compare"), ("unwritable", "speedup"),
                                       ("speedup_no_twins", "speedup")])
def test_cli_exit_2_other_input_errors(cli: dict[str, Any], name: str, cmd: str) -> None:
    res = cli[name]
    assert res.returncode == 2 and res.stdout == ""
    _one_error_line(res, cmd)


@pytest.mark.parametrize("name", ["bad_threshold", "bad_format", "one_file"])
def test_cli_exit_2_usage(cli: dict[str, Any], name: str) -> None:
    res = cli[name]
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1].startswith("fastsock-bench compare: error: ")


@pytest.mark.parametrize("fmt", FORMATS)
def test_cli_speedup_formats(cli: dict[str, Any], fmt: str) -> None:
    res = cli[f"speedup_{fmt}"]
    assert res.returncode == 0, res.stderr
    if fmt == "json":
        doc = json.loads(res.stdout)
        assert len(doc["cases"]) == len(KEYS) // 2
        assert all(1.2 < c["speedup"] < 1.4 for c in doc["cases"])
    elif fmt == "markdown":
        assert res.stdout.startswith("### fastsock-bench speedup")
    else:
        assert "speedup [95% CI]" in res.stdout and "stream/tcp4/blocking/64 " in res.stdout


def test_cli_colour_on_a_terminal(cli: dict[str, Any]) -> None:
    res = cli["tty"]
    assert res.returncode == 1
    assert "\033[31mslower" in res.stdout
