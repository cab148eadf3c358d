"""``fastsock-bench run`` end to end: the real CLI in a subprocess.

Design note
-----------
Every test runs ``python -m bench run`` as a user would, with pyperf's
smallest settings, in a temporary working directory, with ``TMPDIR`` set
to a private folder and ``PYTHONPATH`` pointing at the tree whose
``bench`` these tests imported.  What is asserted is behaviour and
structure (exit codes, one-line errors, the report's schema, the summary's
units, nothing left behind), never speed: the suite runs on noisy 2-core
machines.

* one real run (18 cases, both scenarios, a stream and a datagram
  transport, two modes, both twins, and the datagram stream at batch 32)
  shared by the report, metadata, summary and pyperf-tool tests;
* ``--list``, the refusal to overwrite, bad input, the pure-Python switch;
* SIGINT and SIGTERM during a run: 130 / 143, the finished cases saved,
  no process left;
* a peer killed (SIGKILL) or stopped (SIGSTOP) mid-case: that case fails
  with one line naming it, within seconds, and the run goes on.  The peer
  is found without any hook: it is the child of the pyperf worker
  (``--worker-task=0``), itself a child of the run.

Every run leaves no process (any process still carrying the run's private
``TMPDIR`` in its environment is a leak), no ``fastsock-*`` directory or
socket file in ``TMPDIR``, and no stray file in the working directory.
"""

from __future__ import annotations

import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

import bench
import fastsock
from bench.analysis.report import PERCENTILES, SCHEMA_VERSION, load_report
from bench.cli import run as R

# The tree whose `bench` (and fastsock) these tests imported: the subprocess
# must run the same code.
REPO = Path(bench.__file__).resolve().parent.parent
PURE = os.environ.get("FASTSOCK_PUREPYTHON", "") not in ("", "0")
# The twins a run may ask for here (FASTSOCK_PUREPYTHON=1: the Python one).
IMPLS = "python" if PURE else "cython,python"
ONE_IMPL = "python" if PURE else "cython"
# pyperf's smallest settings: one process, one value, no warmup (s).
SMALL = ["-p", "1", "-n", "1", "-w", "0", "--min-time", "0.005"]
# Bound on a run expected to finish (s): generous, the machine is shared.
RUN_TIMEOUT = 120.0
# Bound on reaching a point of a run we wait for (first result, a peer) (s).
WAIT_TIMEOUT = 60.0
# A killed or stopped peer must become a failed case within this (s).
FAULT_BOUND = 10.0
# Processes killed by PR_SET_PDEATHSIG die asynchronously: grace (s).
REAP_GRACE = 5.0

BENCH_KEYS = ("scenario", "transport", "mode", "size", "impl", "batch", "peer_impl",
              "fastsock_schema", "fastsock_version", "fastsock_commit", "fastsock_loaded",
              "kernel", "cpu_model_name", "cpu_count")
DGRAMS = ("udp4", "udp6", "unix-dgram")


# ------------------------------------------------------------ running it


@dataclass
class Where:
    """A run's private places: its working directory and its TMPDIR."""

    cwd: Path
    tmp: Path
    env: dict[str, str]


def where(base: Path, **extra_env: str) -> Where:
    cwd, tmp = base / "cwd", base / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TMPDIR")}
    env.update(PYTHONPATH=str(REPO), TMPDIR=str(tmp), PYTHONIOENCODING="utf-8",
               PYTHONUNBUFFERED="1")
    env.update(extra_env)
    return Where(cwd, tmp, env)


def cmd(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", "bench", "run", *argv]


def run(w: Where, argv: list[str],
        timeout: float = RUN_TIMEOUT) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd(argv), cwd=w.cwd, env=w.env, capture_output=True,
                              text=True, encoding="utf-8", timeout=timeout)
    finally:
        assert_nothing_left(w)


def pyperf(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyperf", *argv], capture_output=True,
                          text=True, encoding="utf-8", timeout=RUN_TIMEOUT)


def start(w: Where, argv: list[str]) -> subprocess.Popen[str]:
    """A run in the background: stdout a pipe (read with Lines), stderr a
    file (read with stderr_of), so that neither can fill up and block it."""
    err = open(w.cwd.parent / "stderr.txt", "w", encoding="utf-8")  # noqa: SIM115 (with below)
    with err:
        return subprocess.Popen(cmd(argv), cwd=w.cwd, env=w.env, stdout=subprocess.PIPE,
                                stderr=err, text=True, encoding="utf-8")


def stderr_of(w: Where) -> str:
    return (w.cwd.parent / "stderr.txt").read_text(encoding="utf-8")


class Lines:
    """A running process's stdout, line by line, each with its arrival time."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.q: queue.Queue[tuple[float, str | None]] = queue.Queue()
        self.seen: list[str] = []
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self.q.put((time.monotonic(), line))
            self.q.put((time.monotonic(), None))

        threading.Thread(target=pump, daemon=True).start()

    def until(self, predicate: Callable[[str], bool], timeout: float) -> tuple[float, str]:
        """The first line (and its time) for which predicate(line) is true."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                when, line = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no such line within {timeout} s; got {self.seen}") from None
            if line is None:
                raise AssertionError(f"the run ended first; its output: {self.seen}")
            self.seen.append(line)
            if predicate(line):
                return when, line

    def rest(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            _when, line = self.q.get(timeout=max(0.0, deadline - time.monotonic()))
            if line is None:
                return "".join(self.seen)
            self.seen.append(line)


def expected_names(argv: list[str]) -> list[str]:
    """The cases a run's selection names, computed here, in-process."""
    return [k.name for k in R.make_plan(R.build_parser().parse_args(argv)).cases]


def progress(stdout: str) -> dict[str, str]:
    """{case name: 'ok' | 'FAILED'} from the '[k/n] name: ...' lines."""
    out = {}
    for line in stdout.splitlines():
        if line.startswith("[") and "/" in line.split("]")[0]:
            name, _, what = line.split("] ", 1)[1].partition(": ")
            out[name] = "FAILED" if what.startswith("FAILED") else "ok"
    return out


# ------------------------------------------------------------ processes


def _parents() -> dict[int, int]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            out[int(d)] = int(stat.rsplit(")", 1)[1].split()[1])
    return out


def descendants(root: int) -> list[int]:
    parents = _parents()
    out = []
    for pid in parents:
        p = parents.get(pid)
        for _ in range(64):
            if p is None or p <= 1:
                break
            if p == root:
                out.append(pid)
                break
            p = parents.get(p)
    return out


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def _carries(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return marker in f.read().split(b"\0")
    except OSError:
        return False


def run_processes(w: Where) -> list[int]:
    """Live processes of a run: everything carrying its private TMPDIR."""
    marker = f"TMPDIR={w.tmp}".encode()
    return [pid for pid in _parents() if pid != os.getpid() and _carries(pid, marker)
            and _alive(pid)]


def wait_gone(pids: list[int], grace: float = REAP_GRACE) -> list[int]:
    deadline = time.monotonic() + grace
    while True:
        left = [p for p in pids if _alive(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.02)


def assert_nothing_left(w: Where) -> None:
    deadline = time.monotonic() + REAP_GRACE
    while run_processes(w) and time.monotonic() < deadline:
        time.sleep(0.02)
    procs = run_processes(w)
    assert not procs, f"processes left by the run: {[(p, _cmdline(p)) for p in procs]}"
    left = [str(p.relative_to(w.tmp)) for p in w.tmp.rglob("*")
            if p.name.startswith("fastsock-") or p.suffix == ".sock" or p.is_socket()]
    assert not left, f"left in TMPDIR: {left}"
    stray = [p.name for p in w.cwd.iterdir() if p.name.startswith(".tmp-")]
    assert not stray, f"partial report files left: {stray}"


def kill_run(proc: subprocess.Popen[str]) -> None:
    """Test clean-up: the run we started, and what it started, by pid."""
    if proc.poll() is None:
        for pid in descendants(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
    proc.wait(timeout=30)


def one_error_line(stderr: str) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    assert lines[0].startswith("fastsock-bench run: error: "), lines[0]
    return lines[0]


# ------------------------------------------------------------ one real run

# stream and pingpong: connect has its own run in test_connect_cli.py
SMOKE = ["--quick", "--scenario", "stream,pingpong", "--transport", "tcp4,unix-dgram",
         "--mode", "blocking,spin", "--impl", IMPLS, *SMALL]


@dataclass
class Smoke:
    proc: subprocess.CompletedProcess[str]
    w: Where
    report: Path
    names: list[str]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Smoke:
    w = where(tmp_path_factory.mktemp("smoke"))
    proc = run(w, [*SMOKE, "-o", "out.json", "--no-html"])
    return Smoke(proc, w, w.cwd / "out.json", expected_names(SMOKE))


def test_run_exits_0_with_progress(smoke: Smoke) -> None:
    p = smoke.proc
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr + p.stdout
    n = len(smoke.names)
    assert n == (18 if not PURE else 8)  # quick: + unix-dgram stream batch 32, compiled
    assert sum(name.endswith("/batch32") for name in smoke.names) == (0 if PURE else 2)
    assert p.stdout.startswith(f"fastsock-bench: {n} cases, preset quick, report out.json")
    assert progress(p.stdout) == dict.fromkeys(smoke.names, "ok")
    for k in range(1, n + 1):
        assert f"[{k}/{n}] " in p.stdout
    assert "ETA" in p.stdout and "elapsed" in p.stdout


def test_run_leaves_the_report_only(smoke: Smoke) -> None:
    assert sorted(x.name for x in smoke.w.cwd.iterdir()) == ["out.json"]  # --no-html
    assert_nothing_left(smoke.w)


def test_report_loads_with_every_case(smoke: Smoke) -> None:
    report = load_report(smoke.report)
    assert [c.name for c in report.cases] == smoke.names
    for case in report.cases:
        assert case.benchmark.get_name() == case.name
        assert case.values and all(v > 0 for v in case.values)


def test_benchmark_metadata(smoke: Smoke) -> None:
    report = load_report(smoke.report)
    for case in report.cases:
        meta = case.metadata
        missing = [k for k in BENCH_KEYS if k not in meta]
        assert not missing, f"{case.name} lacks {missing}"
        k = case.key
        assert (meta["scenario"], meta["transport"], meta["mode"], meta["size"],
                meta["impl"], meta["batch"]) == (k.scenario, k.transport, k.mode, k.size,
                                                 k.impl, k.batch)
        assert k.batch == 1 or (k.impl, k.scenario, k.transport) == ("cython", "stream",
                                                                      "unix-dgram")
        if k.scenario == "stream" and k.transport in DGRAMS:
            # the peer takes datagrams with recvmmsg wherever it is compiled
            assert meta["peer_batch"] == (64 if fastsock.HAVE_MMSG else 1), case.name
        else:
            assert "peer_batch" not in meta, case.name
        assert meta["fastsock_schema"] == SCHEMA_VERSION
        assert meta["fastsock_version"] == fastsock.__version__
        assert meta["fastsock_loaded"] == fastsock.IMPLEMENTATION
        # the peer is compiled wherever the extension is built
        assert meta["peer_impl"] == fastsock.IMPLEMENTATION
        assert meta["fastsock_commit"]
        assert meta["kernel"] == platform.release()
        assert int(meta["cpu_count"]) >= 1 and meta["cpu_model_name"]
        assert meta["unit"] == "second"
        if k.scenario == "pingpong" and k.transport == "tcp4":
            assert meta["tcp_nodelay"]


def test_run_metadata(smoke: Smoke) -> None:
    report = load_report(smoke.report)
    for case in report.cases:
        k = case.key
        assert case.run_metadata, case.name
        for rm in case.run_metadata:
            where_ = f"{case.name}: {rm}"
            assert rm["cpu_per_msg"] > 0, where_
            if k.scenario == "pingpong":
                rtt = [rm[p] for p in PERCENTILES]
                assert all(r > 0 for r in rtt), where_
                assert rtt == sorted(rtt), where_  # p50 <= p90 <= p99 <= p99.9
                assert "sent" not in rm
            elif k.transport in DGRAMS:
                assert rm["sent"] >= rm["delivered"] > 0, where_
                assert 0 <= rm["loss"] < 1, where_
                assert rm["loss"] == pytest.approx(1 - rm["delivered"] / rm["sent"])
            else:  # a stream over TCP: no datagram counts
                assert "sent" not in rm and "loss" not in rm, where_
            if k.scenario == "pingpong" and k.transport in DGRAMS:
                assert 0 <= rm["loss"] < 1, where_  # lost round trips, even when none


def test_pyperf_reads_the_report(smoke: Smoke, tmp_path: Path) -> None:
    for argv in (("show", str(smoke.report)), ("stats", str(smoke.report))):
        p = pyperf(*argv)
        assert p.returncode == 0, p.stderr
        assert smoke.names[0] in p.stdout
    other = tmp_path / "other.json"
    shutil.copy(smoke.report, other)
    p = pyperf("compare_to", str(smoke.report), str(other))
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr


def test_summary(smoke: Smoke) -> None:
    out = smoke.proc.stdout
    summary = out[out.index("stream throughput"):]
    assert "MB = 10^6 B" in summary
    for unit in ("MB/s", "msg/s", "CPU µs/msg", "RTT µs", "p99 µs", "CPU µs/rt", "loss"):
        assert unit in summary, unit
    assert "pingpong round-trip time" in summary
    if not PURE:
        assert "speedup" in summary
        # a speedup on every compiled row with a Python twin (batch 1)
        rows = [ln for ln in summary.splitlines() if ln.split()[:1] in (["tcp4"], ["unix-dgram"])]
        assert len(rows) == len(smoke.names)
        assert sum(ln.rstrip().endswith("x") for ln in rows) == \
            sum(name.endswith("/cython") for name in smoke.names)
        # batched rows say their batch in a column of the stream table
        stream = summary[:summary.index("pingpong round-trip time")]
        assert stream.splitlines()[1].split()[4] == "batch"
        batched = [ln for ln in stream.splitlines()[3:] if ln.strip()
                   and ln.split()[5] == "32"]
        assert len(batched) == 2 and all(" cython " in ln for ln in batched)
    assert out.rstrip().endswith("report: out.json")
    assert f"{len(smoke.names)} of {len(smoke.names)} cases in " in out


# ------------------------------------------------------------ --list


@pytest.mark.parametrize("argv", [
    ["--quick", "--transport", "tcp4,udp4", "--impl", IMPLS],
    ["--full", "--scenario", "stream", "--transport", "unix-dgram", "--mode", "spin",
     "--impl", IMPLS],
    ["--impl", IMPLS],
])
def test_list_prints_the_cases_and_runs_nothing(tmp_path: Path, argv: list[str]) -> None:
    w = where(tmp_path)
    p = run(w, [*argv, "--list"])
    assert p.returncode == 0, p.stderr
    names = expected_names(argv)
    assert p.stdout.splitlines() == names
    assert p.stderr.strip() == f"{len(names)} cases"
    assert list(w.cwd.iterdir()) == []  # no report, no results/


# ------------------------------------------------------------ output


SMALL_RUN = ["--quick", "--scenario", "stream", "--transport", "unix-stream",
             "--mode", "blocking", "--impl", IMPLS, *SMALL]


def test_existing_output_is_refused_then_replaced(tmp_path: Path) -> None:
    w = where(tmp_path)
    out = w.cwd / "out.json"
    out.write_text("not yours to overwrite\n")
    before = out.stat().st_mtime_ns
    p = run(w, [*SMALL_RUN, "-o", "out.json"])
    assert p.returncode == 2
    line = one_error_line(p.stderr)
    assert "out.json" in line and "--overwrite" in line
    assert p.stdout == ""
    assert out.read_text() == "not yours to overwrite\n" and out.stat().st_mtime_ns == before
    assert sorted(x.name for x in w.cwd.iterdir()) == ["out.json"]

    # --overwrite: replaced by a real report (and the HTML page, by default)
    p = run(w, [*SMALL_RUN, "-o", "out.json", "--overwrite"])
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    report = load_report(out)
    assert [c.name for c in report.cases] == expected_names(SMALL_RUN)
    assert (w.cwd / "out.html").is_file()
    assert "HTML report: out.html" in p.stdout
    assert sorted(x.name for x in w.cwd.iterdir()) == ["out.html", "out.json"]


def test_default_output_goes_to_results(tmp_path: Path) -> None:
    w = where(tmp_path)
    p = run(w, [*SMALL_RUN, "--scenario", "pingpong", "--no-html"])
    assert p.returncode == 0, p.stderr
    reports = list((w.cwd / "results").iterdir())
    assert len(reports) == 1 and reports[0].suffix == ".json"
    assert f"report: results/{reports[0].name}" in p.stdout
    assert [c.name for c in load_report(reports[0]).cases] == expected_names(
        [*SMALL_RUN, "--scenario", "pingpong"])


# ------------------------------------------------------------ bad input

# Every case runs a small selection, so a bad input wrongly accepted runs
# a few seconds, not the default matrix.
BASE = [*SMALL_RUN, "-o", "out.json"]


@pytest.mark.parametrize("argv, says", [
    (["--transport", "tcp5"], "unknown transport 'tcp5'"),
    (["--transport", "tcp4,"], "empty item"),
    (["--mode", "fast"], "unknown mode 'fast'"),
    (["--scenario", "latency"], "unknown scenario 'latency'"),
    (["--impl", "pypy"], "unknown impl 'pypy'"),
    (["--size", "0"], "size '0'"),
    (["--size", "-5"], "size '-5'"),
    (["--size=-5"], "size '-5'"),
    (["--size", "abc"], "size 'abc'"),
    (["--size", "70000", "--transport", "udp4"], "65507"),
    (["--size", "64k", "--transport", "udp4,tcp4"], "udp4"),
    (["--full"], "--quick"),  # BASE has --quick
    (["--fast", "--rigorous"], "--fast"),
    (["-o", "missing/out.json"], "does not exist"),
    (["-o", "adir"], "is a directory"),
    (["-o", "newdir/"], "newdir"),
    (["-p", "0"], "--processes"),
    (["-p", "x"], "--processes"),
    (["--min-time", "nan"], "--min-time"),
    (["-w", "-1"], "--warmups"),
    (["--bogus"], "--bogus"),
    (["--batch", "8", "--impl", "python"], "Python's socket module has no"),
    (["--batch", "8", "--impl", "python", "--transport", "udp4"], "sendmmsg"),
    (["--batch", "0"], "batch '0'"),
    (["--batch", "x"], "batch 'x'"),
    (["--batch", "8", "--impl", "cython"], "datagram stream"),  # BASE: unix-stream
])
def test_bad_input_is_one_line_exit_2(tmp_path: Path, argv: list[str], says: str) -> None:
    w = where(tmp_path)
    (w.cwd / "adir").mkdir()
    p = run(w, [*BASE, *argv], timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    line = one_error_line(p.stderr)
    assert says in line, line
    assert "Traceback" not in p.stdout and p.stdout == ""
    assert sorted(x.name for x in w.cwd.iterdir()) == ["adir"]  # nothing written


# ------------------------------------------------------------ the pure-Python switch


def test_purepython_refuses_cython_cases(tmp_path: Path) -> None:
    w = where(tmp_path, FASTSOCK_PUREPYTHON="1")
    for impl in (["--impl", "cython"], ["--impl", "cython,python"], []):
        base = [a for a in BASE if a != IMPLS and a != "--impl"]
        p = run(w, [*base, *impl])
        assert p.returncode == 2, p.stdout
        line = one_error_line(p.stderr)
        assert "compiled extension is not loaded" in line and "--impl python" in line
        assert list(w.cwd.iterdir()) == []


def test_purepython_runs_the_python_cases(tmp_path: Path) -> None:
    w = where(tmp_path, FASTSOCK_PUREPYTHON="1")
    argv = [*SMALL_RUN, "--impl", "python", "--scenario", "pingpong"]
    p = run(w, [*argv, "-o", "out.json", "--no-html"])
    assert p.returncode == 0, p.stderr
    report = load_report(w.cwd / "out.json")
    assert [c.key.impl for c in report.cases] == ["python"]
    for case in report.cases:
        # the workers inherited the switch: nothing compiled ran, peer included
        assert case.metadata["fastsock_loaded"] == "python"
        assert case.metadata["peer_impl"] == "python"


# ------------------------------------------------------------ signals

LONG_RUN = ["--quick", "--transport", "tcp4,unix-dgram", "--mode", "blocking",
            "--impl", IMPLS, "-p", "1", "-n", "2", "-w", "0", "--min-time", "0.05",
            "-o", "out.json", "--no-html"]


@pytest.mark.parametrize("signum, code", [
    pytest.param(signal.SIGINT, 130, id="SIGINT"),
    pytest.param(signal.SIGTERM, 143, id="SIGTERM"),
])
def test_signal_saves_finished_cases_and_leaves_nothing(tmp_path: Path, signum: int,
                                                        code: int) -> None:
    w = where(tmp_path)
    proc = start(w, LONG_RUN)
    try:
        lines = Lines(proc)
        _, first = lines.until(lambda ln: ln.startswith("[1/"), WAIT_TIMEOUT)
        assert "FAILED" not in first, first
        # mid-case: the second case's worker and its peer are running
        _find_peer(proc.pid, WAIT_TIMEOUT, task=1)
        tree = descendants(proc.pid)
        os.kill(proc.pid, signum)
        stdout = lines.rest(RUN_TIMEOUT)
        proc.wait(timeout=RUN_TIMEOUT)
        left = wait_gone(tree)
    finally:
        kill_run(proc)
    stderr = stderr_of(w)
    assert proc.returncode == code, (stdout, stderr)
    name = signal.Signals(signum).name
    assert f"interrupted by {name}" in stderr and "saved out.json" in stderr
    assert "Traceback" not in stderr + stdout
    done = [n for n, what in progress(stdout).items() if what == "ok"]
    assert 1 <= len(done) < len(expected_names(LONG_RUN))
    report = load_report(w.cwd / "out.json")  # valid, with the finished cases
    assert [c.name for c in report.cases] == done
    assert "stream throughput" not in stdout  # no summary after an interrupt
    assert not left, f"children of the run still alive: {left}"
    assert_nothing_left(w)


# ------------------------------------------------------------ faults


def _find_peer(run_pid: int, timeout: float, task: int = 0) -> int:
    """The peer of a case: child of the pyperf worker for its task (index)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parents = _parents()
        workers = [p for p, pp in parents.items() if pp == run_pid
                   and f"--worker-task={task}" in _cmdline(p)]
        for worker in workers:
            peers = [p for p, pp in parents.items() if pp == worker and _alive(p)]
            if peers:
                return peers[0]
        time.sleep(0.01)
    raise AssertionError(f"no peer of the first case within {timeout} s")


@dataclass
class Fault:
    """What a run did after its first case's peer got a signal."""

    line: str  # the run's first progress line
    noticed: float  # seconds from the signal to that line
    stdout: str
    stderr: str
    returncode: int
    peer_left: list[int]  # the peer, if it outlived the run


def fault_first_case(w: Where, argv: list[str], signum: int) -> Fault:
    """Start a run, send ``signum`` to its first case's peer 0.1 s after it
    appears, and follow the run to its end (bounded); clean up by pid."""
    proc = start(w, argv)
    peer = -1
    try:
        lines = Lines(proc)
        peer = _find_peer(proc.pid, WAIT_TIMEOUT)
        time.sleep(0.1)
        os.kill(peer, signum)
        t_fault = time.monotonic()
        t_failed, line = lines.until(lambda ln: ln.startswith("[1/"), WAIT_TIMEOUT)
        stdout = lines.rest(RUN_TIMEOUT)
        proc.wait(timeout=RUN_TIMEOUT)
        peer_left = wait_gone([peer])
    finally:
        kill_run(proc)
        if peer > 0 and _alive(peer):  # only if the run failed to end it
            os.kill(peer, signal.SIGKILL)
    return Fault(line, t_failed - t_fault, stdout, stderr_of(w), proc.returncode, peer_left)


@pytest.mark.parametrize("signum, scenario, transport", [
    pytest.param(signal.SIGKILL, "stream", "tcp4", id="SIGKILL-stream-tcp4"),
    pytest.param(signal.SIGSTOP, "stream", "unix-dgram", id="SIGSTOP-stream-unix-dgram"),
    # a silent UDP peer only makes lost rounds: LOSS_TIMEOUT each, no error
    pytest.param(signal.SIGSTOP, "pingpong", "udp4", id="SIGSTOP-pingpong-udp4"),
    pytest.param(signal.SIGKILL, "pingpong", "unix-stream", id="SIGKILL-pingpong-unix-stream"),
])
def test_dead_or_stopped_peer_fails_its_case_and_the_run_goes_on(
        tmp_path: Path, signum: int, scenario: str, transport: str) -> None:
    w = where(tmp_path)
    # two cases; the first one's worker runs >= 2 x 0.5 s of timed calls, so
    # the fault, sent 0.1 s after its peer appears, lands inside the case
    argv = ["--quick", "--scenario", scenario, "--transport", transport,
            "--mode", "blocking,nonblocking", "--impl", ONE_IMPL, "--batch", "1",
            "-p", "1", "-n", "2", "-w", "0", "--min-time", "0.5",
            "-o", "out.json", "--no-html"]
    first, second = expected_names(argv)
    f = fault_first_case(w, argv, signum)
    line, stdout, stderr, peer_left = f.line, f.stdout, f.stderr, f.peer_left
    assert line.startswith(f"[1/2] {first}: FAILED"), line
    assert f.noticed < FAULT_BOUND, f"{f.noticed:.1f} s to notice"
    assert f.returncode == 1, (stdout, stderr)
    assert "Traceback" not in stderr + stdout
    said = [ln for ln in stderr.splitlines() if ln.startswith("fastsock-bench: case ")]
    assert len(said) == 1 and said[0].startswith(f"fastsock-bench: case {first} failed: "), stderr
    assert said[0].split(" failed: ", 1)[1].strip()  # says what happened
    assert progress(stdout) == {first: "FAILED", second: "ok"}
    assert "1 case(s) failed" in stderr
    assert [c.name for c in load_report(w.cwd / "out.json").cases] == [second]
    assert not peer_left, "the faulty peer is still there"
    assert_nothing_left(w)


def test_workers_import_what_the_main_process_imported(tmp_path: Path) -> None:
    """A cwd holding another `fastsock` (a clone after `pip install .` holds
    the uncompiled tree) must not be what the workers import: they run the
    code the main process measures with."""
    decoy = tmp_path / "fastsock"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the decoy fastsock was imported')\n")
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    # the main process itself does not put the cwd on sys.path, as the
    # `fastsock-bench` console script does not
    launcher = "import sys; del sys.path[0]; from bench.cli import main; sys.exit(main())"
    out = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, "-c", launcher, "run", "--quick", "--scenario", "stream",
         "--transport", "tcp4", "--mode", "blocking", "--impl", ONE_IMPL, "-o", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert "decoy" not in done.stderr
    assert [c.key.impl for c in load_report(out).cases] == [ONE_IMPL]
