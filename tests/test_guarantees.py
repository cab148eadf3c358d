"""What fastsock guarantees, checked broadly: bad input, crashes, hygiene.

Design note
-----------
The CLI tests (test_run_cli.py, test_compare.py) run the real command on
hand-picked bad inputs.  This file widens them in-process:

* property-based tests (hypothesis) feed the report loader arbitrary bytes,
  arbitrary JSON and mutated valid reports, and the run CLI's parser
  arbitrary selection strings and argument lists: the only outcomes allowed
  are a result or the one-line error the CLI prints (ReportError,
  UsageError, MatrixError), never another exception;
* atomic writes: a write that fails midway (in-process) or a writer killed
  by SIGKILL midway (a child) leaves the previous report intact and no
  temporary file;
* hygiene: real cases run through ``bench.run.worker.Case`` in this process
  leave no file descriptor, child process or ``fastsock-*`` directory.

Hypothesis settings stay modest (at most 200 examples, no deadline: the
machine may be busy with a benchmark) so the file runs in seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import bench
from bench.analysis import report as _report
from bench.analysis.report import CaseKey, Report, ReportError, load_report, write_atomic
from bench.cli.run import Plan, UsageError, build_parser, make_plan, pyperf_args
from bench.run import matrix as M
from tests import synth

REPO = Path(bench.__file__).resolve().parent.parent
SETTINGS = settings(max_examples=150, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
KEYS = [CaseKey("stream", "tcp4", "blocking", 64, "cython"),
        CaseKey("pingpong", "udp4", "spin", 64, "python")]


def _one_line(exc: BaseException) -> None:
    text = str(exc)
    assert text.strip(), f"{type(exc).__name__} with an empty message"
    assert len(text.splitlines()) == 1, f"not one line: {text!r}"


# ------------------------------------------------------------ report loader
@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guarantees")


@pytest.fixture(scope="module")
def valid_report(scratch: Path) -> bytes:
    path = scratch / "valid.json"
    synth.write_report(path, KEYS)
    load_report(path)  # the base of the mutations loads
    return path.read_bytes()


def _load_bytes(scratch: Path, data: bytes) -> None:
    path = scratch / "candidate.json"
    path.write_bytes(data)
    try:
        result = load_report(path)
    except ReportError as exc:
        _one_line(exc)
        assert str(path) in str(exc)  # names the file
    else:
        assert isinstance(result, Report) and result.cases


_scalars = (st.none() | st.booleans() | st.integers() | st.floats()
            | st.text(max_size=20))
json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                max_size=4),
    max_leaves=20,
)


@SETTINGS
@given(data=st.binary(max_size=2048))
def test_loader_arbitrary_bytes(scratch: Path, data: bytes) -> None:
    _load_bytes(scratch, data)


@SETTINGS
@given(value=json_values)
def test_loader_arbitrary_json(scratch: Path, value: Any) -> None:
    _load_bytes(scratch, json.dumps(value).encode())


# pyperf-shaped JSON: past the first "is it a pyperf report" check
_pyperf_like = st.fixed_dictionaries(
    {"version": st.sampled_from(["1.0"]) | json_values,
     "benchmarks": st.lists(st.dictionaries(st.sampled_from(["metadata", "runs"]),
                                            json_values, max_size=2), max_size=3)
     | json_values},
    optional={"metadata": json_values},
)


@SETTINGS
@given(value=_pyperf_like)
def test_loader_pyperf_shaped_json(scratch: Path, value: Any) -> None:
    _load_bytes(scratch, json.dumps(value).encode())


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a node of a JSON tree (the root excluded)."""
    out: list[tuple[Any, ...]] = []
    items = (node.items() if isinstance(node, dict)
             else enumerate(node) if isinstance(node, list) else ())
    for k, child in items:
        out.append(prefix + (k,))
        out.extend(_paths(child, prefix + (k,)))
    return out


def _mutate(tree: Any, path: tuple[Any, ...], op: str, value: Any) -> None:
    parent = tree
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if op == "delete":
        del parent[last]
    else:  # retype: any JSON value in its place
        parent[last] = value


@SETTINGS
@given(data=st.data())
def test_loader_mutated_report(scratch: Path, valid_report: bytes, data: st.DataObject) -> None:
    tree = json.loads(valid_report)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        paths = _paths(tree)
        if not paths:
            break
        path = paths[data.draw(st.integers(0, len(paths) - 1), label="node")]
        op = data.draw(st.sampled_from(["delete", "retype"]), label="op")
        _mutate(tree, path, op, data.draw(json_values, label="value"))
    _load_bytes(scratch, json.dumps(tree).encode())


@SETTINGS
@given(data=st.data())
def test_loader_truncated_report(scratch: Path, valid_report: bytes,
                                 data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(valid_report) - 1), label="offset")
    _load_bytes(scratch, valid_report[:cut])


def test_loader_over_the_size_cap(scratch: Path, valid_report: bytes,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = scratch / "big.json"
    path.write_bytes(valid_report)
    monkeypatch.setattr(_report, "MAX_REPORT_BYTES", len(valid_report) - 1)
    with pytest.raises(ReportError, match="cap"):
        load_report(path)


# ------------------------------------------------------------ run CLI parsing
_SELECTION = ("scenario", "transport", "mode", "impl", "size")
# selection-like text: the real words, size syntax, separators, noise
_words = st.sampled_from(list(M.SCENARIOS + M.TRANSPORTS + M.MODES + M.IMPLS)
                         + ["all", "64", "4k", "1M", "0", "-1", "65508", "1e3", "KiB",
                            "", " ", ","])
_selection_text = (st.lists(_words | st.text(max_size=8), max_size=4).map(",".join)
                   | st.text(max_size=30))


def _plan_or_usage_error(argv: list[str]) -> None:
    try:
        args = build_parser().parse_args(argv)
        plan = make_plan(args)
        pyperf_args(args)
    except (UsageError, M.MatrixError) as exc:
        _one_line(exc)
    else:
        assert isinstance(plan, Plan) and plan.cases


@SETTINGS
@given(flag=st.sampled_from(_SELECTION), text=_selection_text)
def test_cli_one_selection_flag(flag: str, text: str) -> None:
    _plan_or_usage_error([f"--{flag}={text}"])


@SETTINGS
@given(values=st.fixed_dictionaries({}, optional=dict.fromkeys(_SELECTION, _selection_text)))
def test_cli_every_selection_flag(values: dict[str, str]) -> None:
    _plan_or_usage_error([f"--{f}={v}" for f, v in values.items()])


def _harmless(item: str) -> bool:
    """Leave out what is not parsing: help (prints and exits 0) and a
    --remote/--token (a network look-up)."""
    if item.startswith("--"):
        return not item.startswith(("--help", "--remote", "--token"))
    return not (item.startswith("-") and "h" in item)


_flags = st.sampled_from(["--scenario", "--transport", "--mode", "--size", "--impl",
                          "--quick", "--full", "--fast", "--rigorous", "--list",
                          "--overwrite", "--fail-fast", "--no-html", "-p", "-n", "-w",
                          "--min-time", "--loops", "-l", "--affinity", "-v", "-o", "--output",
                          "--bogus"])


@SETTINGS
@given(argv=st.lists(_flags | _words | st.text(max_size=10), max_size=8))
@example(argv=["\n"])  # found by hypothesis: argparse quoted it raw, two lines
@example(argv=["--size", "64", "a\r\nb\x0bc\u2028d"])
def test_cli_arbitrary_argv(argv: list[str]) -> None:
    _plan_or_usage_error([a for a in argv if _harmless(a)])


@SETTINGS
@given(text=st.text(max_size=20) | st.from_regex(r"-?[0-9]{1,12}[kKmM]?(i?[bB])?",
                                                  fullmatch=True))
def test_parse_sizes(text: str) -> None:
    try:
        sizes = M.parse_sizes(text)
    except M.MatrixError as exc:
        _one_line(exc)
    else:
        assert sizes and all(s >= M.MIN_SIZE for s in sizes)


@SETTINGS
@given(text=_selection_text)
def test_parse_list(text: str) -> None:
    try:
        items = M.parse_list(text, M.TRANSPORTS, "transport")
    except M.MatrixError as exc:
        _one_line(exc)
    else:
        assert items and set(items) <= set(M.TRANSPORTS)


# ------------------------------------------------------------ atomic writes
def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".tmp-"))


@pytest.mark.parametrize("where", ["write", "fsync", "replace"])
def test_a_failed_write_keeps_the_previous_report(tmp_path: Path, where: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "report.json"
    synth.write_report(path, KEYS)
    before = path.read_bytes()

    def boom(*_a: Any, **_k: Any) -> Any:
        raise OSError(28, "No space left on device")

    if where == "write":  # half the data reaches the temp file, then ENOSPC
        real_fdopen = os.fdopen

        class HalfFull:
            def __init__(self, fd: int, mode: str) -> None:
                self.f = real_fdopen(fd, mode)

            def __enter__(self) -> HalfFull:
                return self

            def __exit__(self, *exc: object) -> None:
                self.f.close()

            def write(self, data: bytes) -> int:
                self.f.write(data[: len(data) // 2])
                self.f.flush()
                return boom()

        monkeypatch.setattr(os, "fdopen", HalfFull)
    else:
        monkeypatch.setattr(os, where, boom)
    with pytest.raises(OSError):
        write_atomic(path, b"{" * 1_000_000)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []
    load_report(path)


def test_a_write_interrupted_by_a_signal_keeps_the_previous_report(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KeyboardInterrupt (SIGINT) inside the write: BaseException, not OSError."""
    path = tmp_path / "report.json"
    synth.write_report(path, KEYS)
    before = path.read_bytes()

    def interrupted(*_a: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, b"x" * 100)
    monkeypatch.undo()
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


# A child writes a large report through write_atomic and is SIGKILLed while
# writing (its file's write() is slowed down so the kill lands inside it).
KILLED_WRITER = textwrap.dedent("""
    import os, sys, time
    from bench.analysis.report import write_atomic
    real_fdopen = os.fdopen
    class Slow:
        def __init__(self, fd, mode):
            self.f = real_fdopen(fd, mode)
        def __enter__(self):
            return self
        def __exit__(self, *exc):
            self.f.close()
        def write(self, data):
            print("writing", flush=True)
            for i in range(0, len(data), 1 << 16):
                self.f.write(data[i:i + (1 << 16)])
                self.f.flush()
                time.sleep(0.01)
            return len(data)
        def flush(self):
            self.f.flush()
        def fileno(self):
            return self.f.fileno()
    os.fdopen = Slow
    write_atomic(sys.argv[1], b"[" * (32 << 20))
    print("done", flush=True)
""")


def test_a_writer_killed_mid_write_leaves_the_previous_report(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    synth.write_report(path, KEYS)
    before = path.read_bytes()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(path)], env=env,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "writing"
        time.sleep(0.2)  # some chunks written, far from all 512
        assert child.poll() is None, "the writer finished before the kill"
        assert _leftovers(tmp_path), "no temporary file while writing"
    finally:
        child.kill()
        child.wait(timeout=10)
        if child.stdout is not None:
            child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    load_report(path)
    # A killed process cannot clean up: its temp file stays, hidden and
    # named .tmp-*.part; the next write does not trip over it.
    write_atomic(path, before)
    assert path.read_bytes() == before


# ------------------------------------------------------------ hygiene
def _fastsock_dirs() -> set[str]:
    tmp = tempfile.gettempdir()
    return {n for n in os.listdir(tmp) if n.startswith("fastsock-")}


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _no_child_left() -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
def test_cases_run_in_process_leak_nothing() -> None:
    """Sockets, the forked peer and Unix socket files (a fastsock-* folder)
    of real cases: gone after close()."""
    import fastsock
    from bench.run import transports as _transports
    from bench.run import worker as _worker
    impl = fastsock.IMPLEMENTATION
    keys = [CaseKey(scenario, transport, "blocking", 256, impl)
            for scenario in ("stream", "pingpong")
            for transport in ("tcp4", "udp4", "unix-stream", "unix-dgram")
            if transport in _transports.available()]
    affinity = os.sched_getaffinity(0)  # setup() pins the measured side
    _no_child_left()
    fds, dirs = _fds(), _fastsock_dirs()
    try:
        for key in keys:
            case = _worker.Case(key)
            try:
                assert case.time_func(8) > 0
                assert case.time_func(8) > 0
            finally:
                case.close()
    finally:
        os.sched_setaffinity(0, affinity)
    assert _fds() == fds, "file descriptors leaked"
    _no_child_left()
    assert _fastsock_dirs() == dirs, "socket folders left"


def test_close_without_a_run_and_twice_is_safe() -> None:
    import fastsock
    from bench.run import worker as _worker
    fds = _fds()
    case = _worker.Case(CaseKey("stream", "unix-stream", "blocking", 64,
                                fastsock.IMPLEMENTATION))
    case.close()
    case.close()
    assert _fds() == fds


# ------------------------------------------------------------ --fail-fast
def test_fail_fast_stops_at_the_first_failed_case(tmp_path: Path) -> None:
    """A killed peer fails the first of two cases: under --fail-fast the
    run stops there (exit 1, the second case never runs, no report)."""
    from tests import test_run_cli as C

    w = C.where(tmp_path)
    argv = ["--quick", "--scenario", "stream", "--transport", "tcp4",
            "--mode", "blocking,nonblocking", "--impl", C.ONE_IMPL,
            "-p", "1", "-n", "2", "-w", "0", "--min-time", "0.5",
            "-o", "out.json", "--no-html", "--fail-fast"]
    first, second = C.expected_names(argv)
    proc = C.start(w, argv)
    peer = -1
    try:
        lines = C.Lines(proc)
        peer = C._find_peer(proc.pid, C.WAIT_TIMEOUT)
        time.sleep(0.1)
        os.kill(peer, signal.SIGKILL)
        t_fault = time.monotonic()
        t_failed, line = lines.until(lambda ln: ln.startswith("[1/"), C.WAIT_TIMEOUT)
        stdout = lines.rest(C.RUN_TIMEOUT)
        proc.wait(timeout=C.RUN_TIMEOUT)
    finally:
        C.kill_run(proc)
    stderr = C.stderr_of(w)
    assert line.startswith(f"[1/2] {first}: FAILED"), line
    assert t_failed - t_fault < C.FAULT_BOUND
    assert proc.returncode == 1, (stdout, stderr)
    assert "Traceback" not in stderr + stdout
    assert second not in stdout
    assert "1 case(s) failed" in stderr
    assert not (w.cwd / "out.json").exists()
    C.assert_nothing_left(w)


def test_every_help_text_reads_as_written() -> None:
    """argparse %-formats argument help but not a description: a "%%" there
    printed as two percent signs."""
    import argparse

    from bench.cli import build_parser
    from bench.cli.run import build_parser as build_run_parser

    top = build_parser()
    subs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    parsers = [build_run_parser(), *(q for n, q in subs.choices.items() if n != "run")]
    assert len(parsers) >= 8
    for parser in parsers:
        text = parser.format_help()
        assert "%%" not in text and "%(" not in text, parser.prog
