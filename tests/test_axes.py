"""The tuning axes (issue 15): socket buffer, connections in threads, Nagle.

Design note
-----------
What each axis promises, checked where it is kept:

* names and metadata: a suffix only off the default (today's names stay),
  every field in metadata, a schema 1 report read at the defaults and
  compared case by case with a schema 2 one;
* ``--sockbuf``: both ends asked before they connect, what the kernel
  granted recorded on both ends (twice the request below the cap), a
  request above ``net.core.wmem_max``/``rmem_max`` recorded as capped and
  said in the summary, never silently shrunk;
* ``--threads``: every connection delivers every byte (counted by its
  peer, and the loops' contents checked in N threads at once), the values
  and CPU use recorded, nothing left behind; a dead or stopped peer, or
  Ctrl-C, ends a threaded case as promptly as a single one;
* ``--nodelay``: the stream sender's TCP_NODELAY, recorded;
* bad values: one line, exit 2.

Speed is never asserted: only that what is recorded is there and sane.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from test_run_cli import (
    FAULT_BOUND,
    IMPLS,
    ONE_IMPL,
    PURE,
    RUN_TIMEOUT,
    WAIT_TIMEOUT,
    Lines,
    _find_peer,
    assert_nothing_left,
    descendants,
    expected_names,
    fault_first_case,
    kill_run,
    load_report,
    one_error_line,
    progress,
    run,
    start,
    stderr_of,
    wait_gone,
    where,
)

import fastsock
from bench.analysis import compare as _compare
from bench.analysis.report import CaseKey, dump_suite
from bench.present import figures as _plot
from bench.present import summary as _summary
from bench.run import axes as A
from bench.run import matrix as M
from bench.run import transports as T
from bench.run import worker as _worker

SMALL = ["-p", "1", "-n", "1", "-w", "0", "--min-time", "0.005"]
MAX_DGRAM = {"udp4": 65507, "udp6": 65527, "unix-dgram": 65536}


def sysctl(name: str) -> int:
    with open(f"/proc/sys/net/core/{name}") as f:
        return int(f.read())


# ------------------------------------------------------------ names, selection


def test_names_gain_a_suffix_only_off_the_default() -> None:
    key = CaseKey("stream", "tcp4", "blocking", 65536, "cython")
    assert key.name == "stream/tcp4/blocking/65536/cython"  # schema 1's name
    assert CaseKey("stream", "tcp4", "blocking", 64, "cython", sockbuf=4096, threads=4,
                   nodelay=True).name == \
        "stream/tcp4/blocking/64/cython/sockbuf4096/threads4/nodelay-on"
    assert CaseKey("stream", "udp4", "spin", 64, "cython", 32, threads=2).name == \
        "stream/udp4/spin/64/cython/batch32/threads2"
    # the twins of a case differ by impl only
    assert key.other_impl("python") == CaseKey("stream", "tcp4", "blocking", 65536, "python")
    k4 = CaseKey("pingpong", "tcp4", "blocking", 64, "cython", threads=4)
    assert k4.other_impl("python").threads == 4


def test_parse_the_axes() -> None:
    assert A.parse_sockbufs("4k,64k,default,4m") == (4096, 65536, 0, 4 << 20)
    assert A.parse_sockbufs("default") == (0,)
    assert A.parse_threads("1,2,4") == (1, 2, 4)
    assert A.parse_nodelays("on") == (True,) and A.parse_nodelays("off,on") == (False, True)


def cases(**axes: object) -> list[CaseKey]:
    sel = M.Selection(scenarios=("stream", "pingpong", "connect"),
                      transports=("tcp4", "udp4", "unix-stream"), modes=("blocking",),
                      sizes=(64,), batches=(1,), axes=A.Axes(**axes))  # type: ignore[arg-type]
    return M.cases(sel, max_dgram=MAX_DGRAM)


def test_given_axes_multiply_the_cases_they_apply_to() -> None:
    got = cases(sockbufs=(0, 8192), threads=(1, 3), nodelays=(False, True))
    connect = [k for k in got if k.scenario == "connect"]
    assert connect and all(A.case_axes(A.Axes(), "default", "connect", k.transport, k.mode,
                                       0, k.impl) == [(0, 1, False)] for k in connect)
    assert all((k.sockbuf, k.threads, k.nodelay) == (0, 1, False) for k in connect)
    stream_tcp = [k for k in got if k.scenario == "stream" and k.transport == "tcp4"]
    assert len(stream_tcp) == 2 * 2 * 2 * 2  # sockbuf x threads x nodelay x impl
    # nodelay: stream over TCP only
    assert {k.nodelay for k in got if k.scenario == "pingpong" or k.transport != "tcp4"} \
        == {False}
    # the impls of one combination stay adjacent
    for a, b in zip(got[::2], got[1::2]):
        assert a.other_impl(b.impl) == b


def test_presets_keep_their_budgets_and_full_sweeps_each_axis() -> None:
    default = M.cases(M.Selection(preset="default", transports=M.PRESET_TRANSPORTS["default"],
                                  impls=M.select_impls(None, "default", uvloop=False)),
                      max_dgram=MAX_DGRAM)
    assert len(default) == 120  # the default run's cases: no axis sweep
    assert all((k.sockbuf, k.threads, k.nodelay) == (0, 1, False) for k in default)
    full = M.cases(M.Selection(preset="full", impls=M.ALL_IMPLS), max_dgram=MAX_DGRAM)
    swept = [k for k in full if (k.sockbuf, k.threads, k.nodelay) != (0, 1, False)]
    assert {k.sockbuf for k in swept} >= {4096, 65536, 4 << 20}
    assert {k.threads for k in swept} == {1, 2, 4}
    assert any(k.nodelay for k in swept)
    # one axis at a time, on a slice: not the product
    assert all(sum((bool(k.sockbuf), k.threads != 1, k.nodelay)) == 1 for k in swept)
    assert {k.transport for k in swept} <= {"tcp4", "tcp6", "unix-stream"}
    assert all(k.mode == "blocking" for k in swept if k.impl in M.IMPLS)
    assert all(k.threads != 1 for k in swept if k.impl in M.ASYNC_IMPLS)
    assert len({k.name for k in full}) == len(full)


@pytest.mark.parametrize("argv, says", [
    (["--sockbuf", "0"], "socket buffer '0'"),
    (["--sockbuf=-4k"], "socket buffer '-4k'"),
    (["--sockbuf", "lots"], "socket buffer 'lots'"),
    (["--sockbuf", "4k,"], "empty item in --sockbuf"),
    (["--sockbuf", "1024m"], "over"),
    (["--threads", "0"], "threads '0'"),
    (["--threads", "65"], "threads '65'"),
    (["--threads", "two"], "threads 'two'"),
    (["--nodelay", "maybe"], "--nodelay 'maybe'"),
    (["--nodelay", "on", "--scenario", "pingpong"], "--nodelay"),
    (["--nodelay", "on", "--transport", "unix-stream"], "stream cases over TCP"),
    (["--threads", "2", "--scenario", "connect", "--transport", "tcp4"],
     "--threads: applies to stream and pingpong"),
    (["--threads", "2", "--remote", "127.0.0.1:1"], "--remote"),
    (["--placement", "near"], "--placement"),
])
def test_bad_axis_values_are_one_line_exit_2(tmp_path: Path, argv: list[str], says: str) -> None:
    w = where(tmp_path)
    base = ["--quick", "--scenario", "stream", "--transport", "tcp4", "--mode", "blocking",
            "--impl", ONE_IMPL, *SMALL, "-o", "out.json"]
    # later flags win: an argv's own --scenario / --transport replace the base's
    p = run(w, [*base, *argv], timeout=60)
    assert p.returncode == 2, (p.stdout, p.stderr)
    line = one_error_line(p.stderr)
    assert says in line, line
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert list(w.cwd.iterdir()) == []


# ------------------------------------------------------------ reports


def test_a_schema_1_report_reads_at_the_defaults_and_compares(tmp_path: Path) -> None:
    import random

    import pyperf
    from synth import make_benchmark

    rng = random.Random(1)
    keys = [CaseKey("stream", "tcp4", "blocking", 64, impl) for impl in ("cython", "python")]
    old = []
    for key in keys:
        bench = make_benchmark(key, 1e-6, rng=rng, extra_meta={"fastsock_schema": 1})
        old.append(bench)
    path_old = tmp_path / "old.json"
    dump_suite(pyperf.BenchmarkSuite(old), path_old)
    new = [make_benchmark(k, 1e-6, rng=rng, extra_meta={"sockbuf": 0, "threads": 1,
                                                          "nodelay": 0}) for k in keys]
    new.append(make_benchmark(CaseKey("stream", "tcp4", "blocking", 64, "cython", threads=2),
                              1e-6, rng=rng, extra_meta={"threads": 2}))
    path_new = tmp_path / "new.json"
    dump_suite(pyperf.BenchmarkSuite(new), path_new)
    r_old, r_new = load_report(path_old), load_report(path_new)
    assert [c.key for c in r_old.cases] == keys
    assert r_old.cases[0].metadata["threads"] == 1  # the default, filled in
    cmp = _compare.compare_reports(r_old, r_new)
    assert [r.key for r in cmp.cases] == keys  # matched on the full key
    assert [k.threads for k in cmp.only_new] == [2]


# ------------------------------------------------------------ socket buffers


@pytest.mark.parametrize("transport", [t for t in ("tcp4", "tcp6", "udp4", "unix-stream",
                                                   "unix-dgram") if t in T.available()])
def test_both_ends_get_the_buffer_asked_for(transport: str) -> None:
    asked = 32768  # well under any cap: the kernel doubles it
    mine, theirs = T.make_pair(transport, asked)
    with mine, theirs:
        assert T.granted(mine) == (2 * asked, 2 * asked)
        assert T.granted(theirs) == (2 * asked, 2 * asked)
        facts = T.buffer_facts(mine, theirs, asked)
        assert facts == {"peer_sndbuf": 2 * asked, "peer_rcvbuf": 2 * asked,
                         "sockbuf_capped": 0}
    # sockbuf 0: the kernel's defaults, nothing asked, no capped key
    mine, theirs = T.make_pair(transport)
    with mine, theirs:
        assert "sockbuf_capped" not in T.buffer_facts(mine, theirs, 0)


def test_a_request_above_the_cap_is_recorded_as_capped() -> None:
    cap = min(sysctl("wmem_max"), sysctl("rmem_max"))
    mine, theirs = T.make_pair("tcp4", 2 * cap)
    with mine, theirs:
        facts = T.buffer_facts(mine, theirs, 2 * cap)
        assert facts["sockbuf_capped"] == 1
        assert max(T.granted(mine)) <= 2 * max(sysctl("wmem_max"), sysctl("rmem_max"))


def test_the_summary_says_a_capped_request(tmp_path: Path) -> None:
    """A real run (both twins would be slow: compiled only) at two sizes,
    one above the cap: granted sizes in the table, one note line."""
    cap = max(sysctl("wmem_max"), sysctl("rmem_max"))
    over = 2 * cap
    w = where(tmp_path)
    argv = ["--quick", "--scenario", "stream", "--transport", "tcp4,unix-stream", "--mode",
            "blocking", "--size", "64k", "--impl", ONE_IMPL, "--sockbuf", f"16k,{over}",
            *SMALL, "-o", "out.json", "--no-html"]
    p = run(w, argv)
    assert p.returncode == 0, p.stderr
    report = load_report(w.cwd / "out.json")
    assert sorted({c.key.sockbuf for c in report.cases}) == [16384, over]
    for c in report.cases:
        meta = c.metadata
        assert meta["sockbuf"] == c.key.sockbuf
        for k in ("sndbuf", "rcvbuf", "peer_sndbuf", "peer_rcvbuf", "sockbuf_capped"):
            assert isinstance(meta[k], int), k
        assert meta["sockbuf_capped"] == (c.key.sockbuf == over)
        if c.key.sockbuf == 16384:
            assert meta["sndbuf"] == meta["peer_sndbuf"] == 32768
    notes = [ln for ln in p.stdout.splitlines() if ln.startswith("note: sockbuf")]
    assert len(notes) == 1, p.stdout
    assert "capped" in notes[0] or "less than" in notes[0]
    assert "SO_SNDBUFFORCE is not used" in notes[0]
    assert "granted snd/rcv" in p.stdout and "32 KiB/32 KiB" in p.stdout
    fig = _plot.sockbuf_figure(report)
    assert fig is not None and len(fig.axes) >= 2


# ------------------------------------------------------------ Nagle


def test_nodelay_on_is_the_stream_senders_and_recorded() -> None:
    key = CaseKey("stream", "tcp4", "blocking", 64, fastsock.IMPLEMENTATION, nodelay=True)
    case = _worker.Case(key)
    affinity = os.sched_getaffinity(0)
    try:
        assert case.time_func(100) > 0
        assert case.ends is not None and case.ends.sock is not None
        assert case.ends.meta["tcp_nodelay"] == 1
        # not toggled back off after a value
        assert case.ends.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        case.close()
        os.sched_setaffinity(0, affinity)


# ------------------------------------------------------------ threads


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _no_child_left() -> None:
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)


@pytest.mark.parametrize("scenario, transport", [
    ("stream", "tcp4"), ("stream", "unix-stream"), ("stream", "udp4"),
    ("pingpong", "tcp4"), ("pingpong", "unix-dgram"),
])
def test_threads_each_connection_delivers_and_nothing_leaks(
        scenario: str, transport: str) -> None:
    """Three connections, each in its thread: every value > 0, every
    connection's peer confirmed all its bytes (Stream.end raises
    otherwise), the records there; after close() no fd, no child, no thread."""
    key = CaseKey(scenario, transport, "blocking", 256, fastsock.IMPLEMENTATION, threads=3)
    affinity = os.sched_getaffinity(0)
    fds, threads = _fds(), threading.active_count()
    _no_child_left()
    hook = _worker.StatsHook()
    case = _worker.Case(key)
    try:
        for _ in range(3):
            assert case.time_func(50) > 0
        assert len(case.group) == 3
        assert len({e.sock.fileno() for e in case.group if e.sock}) == 3
        assert len({e.peer.pid for e in case.group if e.peer}) == 1  # one peer process
        meta: dict[str, object] = {}
        hook.teardown(meta)
        assert hook.msgs == 3 * 3 * 50  # every message of every connection
        assert 0 < float(meta["cpu_use"]) < (os.cpu_count() or 1) + 0.5  # type: ignore[arg-type]
        assert float(meta["peer_cpu_per_msg"]) > 0  # type: ignore[arg-type]
        assert meta["measured_cpus"] and meta["peer_cpu"] == "any"
        if scenario == "stream" and transport == "udp4":
            assert 0 < hook.delivered <= hook.sent == 3 * 3 * 50
        if scenario == "pingpong":
            assert sum(len(s) for s in hook.samples) == 3 * 3 * 50
    finally:
        case.close()
        os.sched_setaffinity(0, affinity)
    assert _fds() == fds, "file descriptors leaked"
    _no_child_left()
    deadline = time.monotonic() + 5
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == threads, "connection threads left"


@pytest.mark.parametrize("transport", ["tcp4", "unix-stream"])
def test_n_connections_in_n_threads_carry_every_byte_intact(loops: object,
                                                            transport: str) -> None:
    """The contents, not only the counts: N senders and N receivers, a
    thread each, the loops' pattern checked byte by byte by each receiver."""
    n, count, size = 4, 200, 1000
    pairs = [T.make_pair(transport) for _ in range(n)]
    got: list[object] = [None] * (2 * n)

    def send(i: int) -> None:
        try:
            got[i] = loops.stream_send(pairs[i][0], count, size, "blocking",  # type: ignore[attr-defined]
                                       10.0, pattern=True)
        except BaseException as exc:
            got[i] = exc

    def recv(i: int) -> None:
        try:
            got[n + i] = loops.stream_recv(pairs[i][1], count * size, size,  # type: ignore[attr-defined]
                                           "blocking", 10.0, verify=True)
        except BaseException as exc:
            got[n + i] = exc

    workers = [threading.Thread(target=f, args=(i,)) for i in range(n) for f in (send, recv)]
    try:
        for t in workers:
            t.start()
        for t in workers:
            t.join(30)
        assert not any(t.is_alive() for t in workers)
    finally:
        for a, b in pairs:
            a.close()
            b.close()
    assert got == [count * size] * (2 * n), got


def test_threads_summary_and_figure_show_cpu_use(tmp_path: Path) -> None:
    w = where(tmp_path)
    argv = ["--quick", "--scenario", "stream,pingpong", "--transport", "tcp4", "--mode",
            "blocking", "--impl", IMPLS, "--threads", "1,2", *SMALL, "-o", "out.json",
            "--no-html"]
    p = run(w, argv)
    assert p.returncode == 0, p.stderr
    report = load_report(w.cwd / "out.json")
    assert [c.name for c in report.cases] == expected_names(argv)
    for c in report.cases:
        assert c.metadata["threads"] == c.key.threads
        assert all("cpu_use" in m for m in c.run_metadata)
    assert "threads" in p.stdout and "CPU use" in p.stdout
    fig = _plot.threads_figure(report)
    assert fig is not None
    text = _summary.render_report(report)
    assert text.count("CPU use") == 2  # stream and pingpong tables


@pytest.mark.parametrize("signum, scenario, transport, impl", [
    pytest.param(signal.SIGKILL, "stream", "tcp4", ONE_IMPL, id="SIGKILL-stream-tcp4"),
    pytest.param(signal.SIGSTOP, "pingpong", "unix-stream", ONE_IMPL,
                 id="SIGSTOP-pingpong-unix-stream"),
    pytest.param(signal.SIGSTOP, "stream", "udp4", ONE_IMPL, id="SIGSTOP-stream-udp4"),
    pytest.param(signal.SIGKILL, "pingpong", "tcp4", "asyncio-sock",
                 id="SIGKILL-pingpong-tcp4-asyncio-sock"),
])
def test_a_dead_or_stopped_peer_ends_a_threaded_case_at_once(
        tmp_path: Path, signum: int, scenario: str, transport: str, impl: str) -> None:
    w = where(tmp_path)
    mode = "nonblocking" if impl.startswith("asyncio") else "blocking"
    second = "asyncio-streams" if impl.startswith("asyncio") else "python"
    if PURE and second == "python":
        second, mode = "asyncio-sock", "nonblocking"
    argv = ["--quick", "--scenario", scenario, "--transport", transport, "--mode", mode,
            "--impl", f"{impl},{second}", "--threads", "3", "--batch", "1",
            "-p", "1", "-n", "2", "-w", "0", "--min-time", "0.5", "-o", "out.json",
            "--no-html"]
    first, other = expected_names(argv)
    f = fault_first_case(w, argv, signum)
    assert f.line.startswith(f"[1/2] {first}: FAILED"), f.line
    assert f.noticed < FAULT_BOUND, f"{f.noticed:.1f} s to notice"
    assert f.returncode == 1, (f.stdout, f.stderr)
    assert "Traceback" not in f.stderr + f.stdout
    said = [ln for ln in f.stderr.splitlines() if ln.startswith("fastsock-bench: case ")]
    assert len(said) == 1 and said[0].startswith(f"fastsock-bench: case {first} failed: ")
    assert progress(f.stdout) == {first: "FAILED", other: "ok"}
    assert not f.peer_left
    assert_nothing_left(w)


def test_ctrl_c_ends_a_threaded_run_at_once(tmp_path: Path) -> None:
    """SIGINT mid-case (to the whole process group, as a terminal's Ctrl-C
    is): exit 130 within seconds, the finished case saved, nothing left."""
    w = where(tmp_path)
    argv = ["--quick", "--scenario", "stream,pingpong", "--transport", "tcp4", "--mode",
            "blocking", "--impl", ONE_IMPL, "--threads", "4", "-p", "1", "-n", "4", "-w", "0",
            "--min-time", "0.5", "-o", "out.json", "--no-html"]
    proc = start(w, argv)
    try:
        lines = Lines(proc)
        _, first = lines.until(lambda ln: ln.startswith("[1/"), WAIT_TIMEOUT)
        assert "FAILED" not in first, first
        _find_peer(proc.pid, WAIT_TIMEOUT, task=1)  # the second case is running
        time.sleep(0.3)
        tree = descendants(proc.pid)
        t0 = time.monotonic()
        for pid in [proc.pid, *tree]:  # a terminal's Ctrl-C reaches every process
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        lines.rest(RUN_TIMEOUT)
        proc.wait(timeout=RUN_TIMEOUT)
        took = time.monotonic() - t0
        left = wait_gone(tree)
    finally:
        kill_run(proc)
    assert proc.returncode == 130, stderr_of(w)
    assert took < FAULT_BOUND, f"{took:.1f} s to stop"
    assert [c.name for c in load_report(w.cwd / "out.json").cases] == \
        expected_names(argv)[:1]
    assert not left, f"children of the run still alive: {left}"
    assert_nothing_left(w)


# ------------------------------------------------------------ placement


def test_placement_auto_is_apart_for_spin_and_the_kernels_otherwise() -> None:
    from bench.run.peer import choose_cpus, placement_for

    assert placement_for("auto", "spin") == "apart"
    assert {placement_for("auto", m) for m in ("blocking", "timeout", "nonblocking")} == {"os"}
    assert placement_for("apart", "blocking") == "apart"
    assert placement_for("os", "spin") == "os"
    assert choose_cpus("os") == (None, None)
    if len(os.sched_getaffinity(0)) >= 2:
        worker, peer = choose_cpus("apart")
        assert worker and peer is not None and peer not in worker


@pytest.mark.parametrize("mode, placement, pinned", [
    ("blocking", "auto", False), ("spin", "auto", True), ("blocking", "apart", True),
])
def test_where_a_case_ran_is_recorded(mode: str, placement: str, pinned: bool) -> None:
    key = CaseKey("pingpong", "unix-stream", mode, 64, fastsock.IMPLEMENTATION)
    affinity = os.sched_getaffinity(0)
    case = _worker.Case(key, placement=placement)
    try:
        assert case.time_func(20) > 0
        assert case.ends is not None
        meta = case.ends.meta
        apart = pinned and len(affinity) >= 2
        assert meta["placement"] == ("apart" if pinned else "os")
        assert (meta["peer_cpu"] != "any") == apart
        assert len(meta["measured_cpus"].split(",")) == (1 if apart else len(affinity))
    finally:
        case.close()
        os.sched_setaffinity(0, affinity)


def test_crosscheck_places_the_tools_as_the_suite() -> None:
    from bench.crosscheck import check as X
    from bench.crosscheck import tools as XT

    for w in XT.WORKLOADS:  # blocking and nonblocking: the kernel's placement
        assert X.tool_cpus(w) == (None, None)
        _, client = XT.tool_command(w, 5201, 1, X.tool_cpus(w), "feed")
        assert "-A" not in client


def test_a_stream_case_warms_up_untimed_and_says_so() -> None:
    from bench.run import scenarios as S

    key = CaseKey("stream", "unix-stream", "blocking", 1024, fastsock.IMPLEMENTATION)
    affinity = os.sched_getaffinity(0)
    hook = _worker.StatsHook()
    case = _worker.Case(key)
    try:
        t0 = time.perf_counter()
        assert case.time_func(10) > 0
        assert time.perf_counter() - t0 >= S.WARM_UP  # the warm-up ran, in the first call
        assert hook.msgs == 10  # and counted nowhere
        meta: dict[str, object] = {}
        hook.teardown(meta)
        assert meta["warm_up"] == S.WARM_UP
    finally:
        case.close()
        os.sched_setaffinity(0, affinity)
    assert not S.warms_up(CaseKey("pingpong", "tcp4", "blocking", 64, "cython"))
    assert not S.warms_up(CaseKey("stream", "udp4", "blocking", 64, "cython"))
