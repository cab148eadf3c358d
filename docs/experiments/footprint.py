"""Where a TCP ping-pong round trip's time goes: the wait style or the process.

Two experiments behind the README's crosscheck section (the compiled
nonblocking ping-pong at ~1.1x of sockperf's epoll wait):

``inprocess``: one connection, one echo (the compiled loops' nonblocking
``stream_echo``, forked), and the measured side switching, block by block
in random order, between the compiled loop in each wait style and the same
round trip in C (pingpong.c through ctypes): recv first with poll on EAGAIN
(the suite's nonblocking), epoll first (sockperf's), blocking.  The host's
drift cancels in the per-block ratios.

``process``: the same C program run as its own process, inside this Python
process (ctypes), and as its own process with 10 or 40 MiB of memory
touched before it forks its echo (10 MiB also in 4 KiB pages only, "small":
the kernel's transparent huge pages are on here); each run in its own
processes, rounds in random order; and the compiled nonblocking loops in
a bare Python process and in one that first imports what a worker of the
suite imports; and sockperf's epoll ping-pong, when sockperf is installed.

Prints each variant's median per-round ratio to the first with the
interquartile range of the ratios.  Needs a C compiler; Linux.
Run: python docs/experiments/footprint.py inprocess|process [ROUNDS]
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

from fastsock import _loops

HERE = os.path.dirname(os.path.abspath(__file__))
BLOCK = 1000  # round trips per block (inprocess)


def build(tmp: str) -> tuple[str, str]:
    """pingpong.c as a program and as a shared library: their paths."""
    src = os.path.join(HERE, "pingpong.c")
    exe, lib = os.path.join(tmp, "pingpong"), os.path.join(tmp, "libpingpong.so")
    subprocess.run(["cc", "-O2", "-o", exe, src], check=True)
    subprocess.run(["cc", "-O2", "-shared", "-fPIC", "-o", lib, src], check=True)
    return exe, lib


def load(lib: str) -> ctypes.CDLL:
    dll = ctypes.CDLL(lib)
    dll.pp_loop.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_char]
    dll.pp_run.argtypes = [ctypes.c_double, ctypes.c_char, ctypes.c_long, ctypes.c_int]
    dll.pp_run.restype = ctypes.c_double
    return dll


def report(rows: list[dict[str, float]]) -> None:
    first = next(iter(rows[0]))
    for name in rows[0]:
        logs = sorted(math.log(r[name] / r[first]) for r in rows)
        q1, q3 = logs[len(logs) // 4], logs[3 * len(logs) // 4]
        print(f"{name:32s} median {statistics.median(r[name] for r in rows):7.1f} us"
              f"  ratio to {first} {math.exp(statistics.median(logs)):.3f}"
              f"  [IQR {math.exp(q1):.3f}, {math.exp(q3):.3f}]")
    print(f"{len(rows)} rounds")


@contextlib.contextmanager
def echoed() -> Iterator[socket.socket]:
    """A loopback TCP connection (TCP_NODELAY) whose other end a forked
    process echoes with the compiled nonblocking loop until EOF or 30 s of
    silence; closed and the echo reaped on exit."""
    listener = socket.create_server(("127.0.0.1", 0))
    c = socket.create_connection(listener.getsockname())
    s, _ = listener.accept()
    listener.close()
    for sock in (c, s):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pid = os.fork()
    if pid == 0:
        c.close()
        try:
            _loops.stream_echo(s, 64, "nonblocking", 30.0)
        finally:
            os._exit(0)
    s.close()
    try:
        yield c
    finally:
        c.close()
        os.waitpid(pid, 0)


def inprocess(dll: ctypes.CDLL, rounds: int) -> list[dict[str, float]]:
    with echoed() as c:
        return alternate(dll, c, rounds)


def alternate(dll: ctypes.CDLL, c: socket.socket, rounds: int) -> list[dict[str, float]]:
    """``rounds`` of every variant on ``c``, each a block of round trips."""

    def compiled(mode: str) -> Callable[[int], object]:
        return lambda n: _loops.stream_pingpong(c, n, 64, mode, 30.0)

    def in_c(mode: bytes) -> Callable[[int], object]:
        def run(n: int) -> object:
            if dll.pp_loop(c.fileno(), n, mode) != 0:
                raise OSError("pp_loop failed")
            return None
        return run

    variants = {
        "compiled nonblocking": compiled("nonblocking"),
        "compiled blocking": compiled("blocking"),
        "C recv first, poll": in_c(b"t"),
        "C epoll first": in_c(b"e"),
        "C blocking": in_c(b"b"),
    }
    rows = []
    for f in variants.values():
        f(200)
    for _ in range(rounds):
        row = {}
        for name in random.sample(list(variants), len(variants)):
            t = time.perf_counter()
            variants[name](BLOCK)
            row[name] = (time.perf_counter() - t) / BLOCK * 1e6
        rows.append({name: row[name] for name in variants})
    return rows


def process(exe: str, lib: str, rounds: int) -> list[dict[str, float]]:
    here = [sys.executable, __file__, "_ctypes", lib]

    def run(argv: list[str]) -> float:
        out = subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)
        return float(out.stdout.split()[0])

    loop = [sys.executable, __file__, "_loop"]
    variants = {
        "C process": [exe, "1", "t", "0"],
        "C inside Python": here,
        "compiled loop, lean": loop + ["lean"],
        "compiled loop, bench's imports": loop + ["bench"],
        "C process, 10 MiB": [exe, "1", "t", "10"],
        "C process, 10 MiB small": [exe, "1", "t", "10", "small"],
        "C process, 40 MiB": [exe, "1", "t", "40"],
    }
    runs: dict[str, Callable[[], float]] = {
        name: functools.partial(run, argv) for name, argv in variants.items()}
    if shutil.which("sockperf"):
        runs["sockperf, epoll"] = sockperf_epoll
    rows = []
    for _ in range(rounds):
        row = {name: runs[name]() for name in random.sample(list(runs), len(runs))}
        rows.append({name: row[name] for name in runs})
    return rows


def sockperf_epoll() -> float:
    """One second of crosscheck's tcp-pingpong-epoll workload on sockperf
    (64 B, epoll wait at both ends): its mean RTT (us)."""
    from bench.crosscheck.tools import WORKLOADS, run_tool

    (w,) = [w for w in WORKLOADS if w.name == "tcp-pingpong-epoll"]
    return run_tool(w, 1.0, (None, None)).value * 1e6


def loop_run(imports: str) -> None:
    """One run of the compiled nonblocking loops, as pp_run: a forked echo,
    one second of round trips; the mean round trip (us) and this process's
    resident kB.  ``bench``: with what a worker of the suite imports first
    (its resident memory twice a bare interpreter's)."""
    if imports == "bench":
        import bench.cli.run
        import bench.run.runner  # noqa: F401
    with echoed() as c:
        _loops.stream_pingpong(c, 200, 64, "nonblocking", 30.0)
        n, t0 = 0, time.perf_counter()
        t1 = t0
        while t1 - t0 < 1.0:
            _loops.stream_pingpong(c, 100, 64, "nonblocking", 30.0)
            n += 100
            t1 = time.perf_counter()
        with open("/proc/self/status") as f:
            rss = f.read().split("VmRSS:")[1].split()[0]
    print(f"{(t1 - t0) / n * 1e6:.2f} {rss}")


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "_loop":  # one run of the compiled loop in a Python process
        if sys.argv[2:] not in (["lean"], ["bench"]):
            sys.exit("usage: footprint.py _loop lean|bench")
        loop_run(sys.argv[2])
        return
    if what == "_ctypes":  # one run of "C inside Python"
        rt = load(sys.argv[2]).pp_run(1.0, b"t", 0, 0)
        if rt < 0:
            sys.exit("pp_run failed")
        print(f"{rt:.2f}")
        return
    given = sys.argv[2] if len(sys.argv) == 3 else "200" if what == "inprocess" else "30"
    if what not in ("inprocess", "process") or len(sys.argv) > 3 or not given.isdigit() \
            or int(given) < 1:
        sys.exit("usage: footprint.py inprocess|process [ROUNDS]")
    rounds = int(given)
    with tempfile.TemporaryDirectory() as tmp:
        exe, lib = build(tmp)
        rows = inprocess(load(lib), rounds) if what == "inprocess" else process(exe, lib, rounds)
    report(rows)


if __name__ == "__main__":
    main()
