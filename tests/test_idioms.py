"""The standard library's idioms (fastsock._idioms), each against the compiled peer.

What is checked, per idiom:

* every loop test the twins pass, for each function it provides in each
  mode it runs: the conformance checks (bench.run.checks: counts, data
  integrity with pattern/verify, bounded waits, a closed peer, a signal
  storm, Ctrl-C, round numbers and stale replies, bad arguments and the
  modes it leaves out), each a test of its own here;
* the discipline that makes a case's difference from ``python`` the idiom
  and nothing else: under strace, the same calls per message as the
  Python twin (``sendmsg``/``recvmsg`` in place of ``sendto``/``recvfrom``
  for socket-sendmsg), and no wait calls in blocking mode;
* what each idiom must leave behind: a ``makefile()`` file closed on every
  way out (no fd, the socket still usable), also after a timeout, without
  a second wait; the refusals say why, in one line.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from support import TIMEOUT, recv_exactly
from test_parity import TRACED, parse

import fastsock
from bench.run import conformance as C
from bench.run import impls as I
from fastsock._idioms import makefile, sendall, sendmsg

IDIOMS = I.IDIOM_IMPLS
CHILD = Path(__file__).with_name("strace_idioms_child.py")


def _checks() -> list[tuple[str, C.Check]]:
    out = []
    for name in IDIOMS:
        impl = I.get(name)
        out += [(name, check) for check in C.checks_for(impl, impl.load())]
    return out


CHECKS = _checks()


@pytest.mark.parametrize("name, check", CHECKS,
                         ids=[f"{n}-{c.label}" for n, c in CHECKS])
def test_the_loop_tests_the_twins_pass(name: str, check: C.Check) -> None:
    result = C.run_one(check, I.get(name).load())
    assert result.ok, f"{name} {check.label}: {result.detail}"


def test_every_idiom_is_checked_in_every_function_and_mode_it_runs() -> None:
    for name in IDIOMS:
        impl = I.get(name)
        seen = {(c.function, c.mode) for n, c in CHECKS if n == name}
        assert seen == {(f, m) for f in impl.functions for m in impl.modes}, name


# ------------------------------------------------------------ calls per message

# Successful calls of each run, per message (the idiom's in place of the twin's).
CALLS = {
    "stream_send": {"python": {"sendto": 1}, "socket-sendall": {"sendto": 1},
                    "socket-makefile": {"sendto": 1}},
    "stream_pingpong": {impl: {"sendto": 1, "recvfrom": 1} for impl in (
        "python", "socket-sendall", "socket-recv", "socket-makefile")},
    "dgram_send": {"python": {"sendto": 1}, "socket-sendmsg": {"sendmsg": 1}},
    "dgram_pingpong": {"python": {"sendto": 1, "recvfrom": 1},
                       "socket-recv": {"sendto": 1, "recvfrom": 1},
                       "socket-sendmsg": {"sendmsg": 1, "recvmsg": 1}},
}


def test_the_idiom_is_the_only_difference_in_syscalls(tmp_path: Path) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (apt-get install strace)")
    out = tmp_path / "idioms.strace"
    pkg_parent = str(Path(fastsock.__file__).resolve().parent.parent)
    proc = subprocess.run(["strace", "-f", "-qq", "-s", "0", "-e", f"trace={TRACED}", "-o",
                           str(out), sys.executable, str(CHILD)],
                          capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": pkg_parent, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    runs = parse(out.read_text(), lines[0]["tid"])
    assert len(runs) == len(lines) - 1
    for info, calls in zip(lines[1:], runs):
        impl, function, n = info["impl"], info["function"], info["n"]
        want = Counter({k: v * n for k, v in CALLS[function][impl].items()})
        assert calls.ok == want, (impl, function, calls)
        assert not calls.again and not calls.failed and not calls.waits, (impl, function, calls)
        result = info["result"]
        expected = {"stream_send": n * 64, "dgram_pingpong": [n, 0]}.get(function, n)
        assert result == expected, (impl, function, result)


# ------------------------------------------------------------ what is left behind


def echo_thread(sock: socket.socket, rounds: int) -> threading.Thread:
    def run() -> None:
        sock.settimeout(TIMEOUT)
        for _ in range(rounds):
            sock.sendall(recv_exactly(sock, 64))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("mode", makefile.MODES)
def test_makefile_closes_its_file_and_leaves_the_socket_usable(net, mode: str) -> None:
    pair = net.pair("unix")
    t = echo_thread(pair.b, 11)
    assert makefile.stream_pingpong(pair.a, 10, 64, mode, TIMEOUT, pattern=True) == 10
    assert makefile.stream_send(pair.a, 1, 64, mode, TIMEOUT) == 64
    assert pair.a._io_refs == 0  # type: ignore[attr-defined]
    pair.a.settimeout(TIMEOUT)
    assert recv_exactly(pair.a, 64) == bytes(64)  # the socket itself still reads
    t.join(TIMEOUT)


@pytest.mark.parametrize("mode", makefile.MODES)
def test_makefile_after_a_timeout_closes_without_waiting_again(net, mode: str) -> None:
    pair = net.pair("unix", bufsize=4096)  # nobody reads: the first flush waits
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        makefile.stream_send(pair.a, 1000, 65536, mode, 0.2)
    took = time.monotonic() - t0
    assert took < 0.2 * 2 + 0.5, f"{took:.2f} s: closing the file waited again"
    assert pair.a._io_refs == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("module, mode, says", [
    (sendall, "nonblocking", "mode 'nonblocking' does not apply to socket-sendall: CPython's "
     "sendall raises midway on a non-blocking socket (its modes: blocking, timeout)"),
    (makefile, "spin", "mode 'spin' does not apply to socket-makefile: a makefile() file "
     "needs a blocking socket"),
])
def test_an_idiom_refuses_a_mode_with_its_reason(net, module: object, mode: str,
                                                 says: str) -> None:
    pair = net.pair("tcp4")
    with pytest.raises(ValueError) as info:
        module.stream_send(pair.a, 1, 64, mode, TIMEOUT)  # type: ignore[attr-defined]
    assert str(info.value).startswith(says)


def test_sendmsg_sends_one_datagram_per_call(net) -> None:
    pair = net.pair("unix_dgram")
    with pytest.raises(ValueError) as info:
        sendmsg.dgram_send(pair.a, 1, 64, "blocking", TIMEOUT, batch=2)
    assert str(info.value) == "batch=2: socket-sendmsg sends one datagram per call (batch=1 only)"
