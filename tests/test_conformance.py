"""The conformance checks (bench.run.conformance, bench.run.checks) and check-impl.

What is checked: an impl that keeps the contract passes (a minimal sample,
the Python twin in its hardest mode); each deliberately broken sample
(tests/sample_impls) fails with its own one-line reason, at the check that
exists to catch it: a lost byte, a miscount, an ignored ``pattern``, an
argument checked after touching the socket, a timeout ignored (killed at
its bound, by run: nothing hangs), a crashed process; nothing is left behind
(processes, file descriptors, socket files).  On the command line:
``check-impl`` exits 0, 1 or 2 with the results as they come, and ``run``
refuses an impl from outside that fails, with one line, before measuring
anything.  The built-in idioms' own checks are tests/test_idioms.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_run_cli import REPO, RUN_TIMEOUT, assert_nothing_left, one_error_line, where

from bench.run import checks as K
from bench.run import conformance as C
from bench.run import impls as I

TESTS = Path(__file__).resolve().parent
# When a check of a wait that never ends is killed (s).
KILLED_AT = f"{K.PER_MODE['stream_send'][1][2] + C.KILL_SLACK:g}"


def check(name: str, **only: object) -> C.Outcome:
    impl = I.resolve(name)
    loops = impl.load()
    return C.run_checks(C.checks_for(impl, loops, **only), loops)  # type: ignore[arg-type]


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def children() -> list[int]:
    me = str(os.getpid())
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    out.append(int(pid))
        except OSError:
            pass
    return out


def test_a_conforming_impl_passes_every_check() -> None:
    before = open_fds()
    outcome = check("sample_impls.plain")
    assert [r.check.what for r in outcome.results] == [
        "counts and integrity", "bounded wait", "closed peer", "signal storm", "Ctrl-C",
        "bad arguments"]
    assert outcome.failed == [], [(r.check.label, r.detail) for r in outcome.failed]
    assert all(r.detail and "\n" not in r.detail for r in outcome.results)
    assert open_fds() == before and children() == []


def test_the_python_twin_passes_in_spin_mode() -> None:
    """The hardest mode (busy waits, Ctrl-C between tries), the measured
    side's functions (tests/test_idioms.py runs every check of four more
    impls)."""
    measured = {"stream_send", "stream_pingpong", "dgram_send", "dgram_pingpong"}
    outcome = check("python", modes={"spin"}, functions=measured)
    assert {r.check.function for r in outcome.results} == measured
    assert outcome.failed == [], [(r.check.label, r.detail) for r in outcome.failed]


@pytest.mark.parametrize("name, failing, says", [
    ("loses_byte", "counts and integrity", "tcp4, 200 x 1 B: the peer received 199 of 200 bytes"),
    ("miscounts", "counts and integrity", "tcp4, 200 x 1 B: returned 201, expected 200"),
    ("corrupts", "counts and integrity",
     "the peer failed: ValueError: integrity check failed at byte 1"),
    ("takes_stale", "round numbers, stale replies", "5 replies left unread, expected 1"),
    ("late_check", "bad arguments",
     "mode 'fast': the socket's mode was changed before the error"),
    ("crashes", "counts and integrity",
     "the check's process died without a result (killed by SIGSEGV)"),
])
def test_a_broken_impl_fails_with_its_own_reason(name: str, failing: str, says: str) -> None:
    before = open_fds()
    t0 = time.monotonic()
    impl = I.resolve(f"sample_impls.{name}")
    loops = impl.load()
    outcome = C.run_checks(C.checks_for(impl, loops), loops, stop_at_failure=True)
    first = outcome.failed[0]
    assert first.check.what == failing, (first.check.label, first.detail)
    assert says in first.detail and "\n" not in first.detail
    # nothing hangs: a check ends within its bound, the killed one at it,
    # and takes its peer process with it
    assert time.monotonic() - t0 < first.check.bound + C.KILL_SLACK + 5
    assert open_fds() == before and children() == []


def test_checks_follow_the_declared_modes() -> None:
    """An impl is checked in the modes it runs, and must refuse the others."""
    impl = I.get("socket-sendall")
    checks = C.checks_for(impl, impl.load())
    assert {c.mode for c in checks} == {"blocking", "timeout"}
    bad = [c for c in checks if c.what == "bad arguments"]
    assert [c.function for c in bad] == ["stream_send", "stream_pingpong"]
    only = C.checks_for(impl, impl.load(), functions={"stream_send"}, modes={"timeout"})
    assert {(c.function, c.mode) for c in only} == {("stream_send", "timeout")}


# ------------------------------------------------------------ the command line


def bench(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    w = where(tmp_path)
    env = dict(w.env, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
    try:
        return subprocess.run([sys.executable, "-m", "bench", *argv], cwd=w.cwd, env=env,
                              capture_output=True, text=True, timeout=RUN_TIMEOUT)
    finally:
        assert_nothing_left(w)


def test_check_impl_passing_exits_0_with_a_line_per_check(tmp_path: Path) -> None:
    p = bench(tmp_path, "check-impl", "mine=sample_impls.plain")
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "mine = sample_impls.plain (--impl), contract 1"
    assert lines[2] == ("  provides stream_send: runs stream over tcp4, tcp6, unix-stream in "
                        "blocking mode")
    results = [ln for ln in lines if ln.startswith(("pass ", "FAIL "))]
    assert len(results) == 6 and all(ln.startswith("pass  stream_send blocking: ")
                                     for ln in results)
    assert lines[-1].startswith("6 checks: 6 passed, 0 failed")
    assert p.stderr == ""


def test_check_impl_failing_exits_1_naming_the_failure(tmp_path: Path) -> None:
    p = bench(tmp_path, "check-impl", "sample_impls.miscounts")
    assert p.returncode == 1
    assert "FAIL  stream_send blocking: counts and integrity: tcp4, 200 x 1 B: returned 201, " \
        "expected 200" in p.stdout
    assert p.stdout.splitlines()[-1].startswith("6 checks: 4 passed, 2 failed")
    assert p.stderr.splitlines() == [
        "fastsock-bench check-impl: sample_impls.miscounts fails: stream_send blocking: counts "
        "and integrity: tcp4, 200 x 1 B: returned 201, expected 200"]


@pytest.mark.parametrize("argv, says", [
    (["nope"], "unknown impl 'nope'"),
    (["sample_impls.fails_import"], "failed to import (RuntimeError: this module cannot be "
     "imported)"),
    (["sample_impls.newer_contract"], "keeps contract 99, newer than this fastsock's (1): "
     "upgrade fastsock"),
    (["asyncio-streams"], "runs on an event loop, not as a loop module"),
    (["python", "--mode", "turbo"], "unknown mode 'turbo'"),
    (["sample_impls.plain", "--mode", "spin"], "has no check for that selection"),
])
def test_check_impl_bad_input_is_one_line_exit_2(tmp_path: Path, argv: list[str],
                                                 says: str) -> None:
    p = bench(tmp_path, "check-impl", *argv)
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("fastsock-bench check-impl: error: "), lines
    assert says in lines[0]
    assert "Traceback" not in p.stdout + p.stderr


@pytest.mark.parametrize("name, says", [
    ("loses_byte", "stream_send blocking: counts and integrity: tcp4, 200 x 1 B: the peer "
     "received 199 of 200 bytes"),
    ("ignores_timeout", f"stream_send blocking: bounded wait: no result within {KILLED_AT} s: "
     "killed"),
])
def test_run_refuses_an_impl_that_fails_and_measures_nothing(tmp_path: Path, name: str,
                                                             says: str) -> None:
    t0 = time.monotonic()
    p = bench(tmp_path, "run", "--quick", "--scenario", "stream", "--transport", "tcp4",
              "--mode", "blocking", "--impl", f"python,sample_impls.{name}", "-p", "1", "-n",
              "1", "-w", "0", "-o", "out.json")
    assert time.monotonic() - t0 < 30  # nothing hangs
    assert p.returncode == 2, (p.stdout, p.stderr)
    line = one_error_line(p.stderr)
    assert line.startswith(f"fastsock-bench run: error: impl sample_impls.{name} fails its "
                           "conformance check, nothing of it is measured: ")
    assert says in line and line.endswith(f"(all checks: fastsock-bench check-impl "
                                          f"sample_impls.{name})")
    assert "[1/" not in p.stdout  # no case ran
    assert not (tmp_path / "cwd" / "out.json").exists()


@pytest.mark.parametrize("argv, ready, says", [
    (["check-impl", "sample_impls.ignores_timeout"], "pass  stream_send blocking: counts", ""),
    (["run", "--quick", "--scenario", "stream", "--transport", "tcp4", "--mode", "blocking",
      "--impl", "sample_impls.ignores_timeout", "-o", "out.json"],
     "fastsock-bench: checking impl",
     "fastsock-bench run: interrupted while checking impls; nothing measured"),
], ids=["check-impl", "run"])
def test_ctrl_c_while_a_hung_impl_is_checked(tmp_path: Path, argv: list[str], ready: str,
                                            says: str) -> None:
    """SIGINT ends the command at once (exit 130), the check's processes with it."""
    import signal

    from test_run_cli import Lines

    w = where(tmp_path)
    env = dict(w.env, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
    errfile = tmp_path / "stderr.txt"
    with open(errfile, "w", encoding="utf-8") as err:
        proc = subprocess.Popen([sys.executable, "-m", "bench", *argv], cwd=w.cwd, env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        Lines(proc).until(lambda line: line.startswith(ready), RUN_TIMEOUT)
        time.sleep(0.6)  # into the check that hangs (it is killed at 3.2 s)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        assert time.monotonic() - t0 < 1.5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = errfile.read_text(encoding="utf-8")
    assert proc.returncode == 130, text
    assert text.strip() == says and "Traceback" not in text
    assert not (w.cwd / "out.json").exists()
    assert_nothing_left(w)
