"""``connect_accept``, for both twins: connections set up and torn down.

What is checked, over tcp4, tcp6 and Unix stream sockets in each of the
loop's modes: the count comes back and every accepted socket is the one its
client connected (``verify``: a byte from the client arrives on it; a stray
connection queued first is caught); thousands of connections leak no fd and
leave no socket file; bad arguments are refused before any I/O (nothing is
queued on the listener, its timeout is untouched); a listener that goes
away mid-loop is an ``OSError`` with its errno; a full accept queue ends in
``TimeoutError`` within the timeout; a SIGALRM storm loses no connection;
SIGINT raises ``KeyboardInterrupt`` promptly.  The syscalls per connection
are compared between the twins in ``test_connect_parity.py``.
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from support import TIMEOUT, Elapsed, one_line
from test_signals import Storm

from fastsock import _common

CONNECT_MODES = _common.CONNECT_MODES
TRANSPORTS = ("tcp4", "tcp6", "unix")
# Connections of the leak test, per twin and mode (count): well past any
# fd limit a leak of one per connection would hit (1024 by default).
MANY = 3000
# A short bound for the tests that expect a wait to expire (s).
SHORT = 0.3
# How soon Ctrl-C must take effect, and when it is sent (s).
SIGINT_BOUND = 0.5
SIGINT_AFTER = 0.1


@pytest.fixture(params=CONNECT_MODES)
def cmode(request: pytest.FixtureRequest) -> str:
    return request.param


class Listeners:
    """Listening sockets of one test, closed at its end; Unix ones bound
    under the test's own directory, which must hold nothing else after."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "l"
        self.dir.mkdir()
        self.socks: list[socket.socket] = []

    def make(self, transport: str, backlog: int = 16) -> socket.socket:
        if transport == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.socks.append(s)
            s.bind(str(self.dir / f"l{len(self.socks)}"))
        else:
            from conftest import have_ipv6

            if transport == "tcp6" and not have_ipv6():
                pytest.skip("no IPv6 on this machine")
            family = socket.AF_INET6 if transport == "tcp6" else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            self.socks.append(s)
            s.bind(("::1" if transport == "tcp6" else "127.0.0.1", 0))
        s.listen(backlog)
        return s

    def close(self) -> None:
        for s in self.socks:
            path = s.getsockname() if s.family == socket.AF_UNIX and s.fileno() >= 0 else None
            s.close()
            if path:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


@pytest.fixture
def listeners(net, tmp_path: Path):  # net: the fd-leak check around the test
    ls = Listeners(tmp_path)
    yield ls
    ls.close()
    left = sorted(os.listdir(ls.dir))
    assert not left, f"left in the listeners' directory: {left}"


def queued(listener: socket.socket) -> int:
    """Connections waiting in the listener's accept queue (accepted and
    closed here, so they are counted once)."""
    listener.setblocking(False)
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


# ------------------------------------------------------------ it works


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_every_connection_is_made_and_accepted(loops, listeners, transport, cmode):
    lst = listeners.make(transport)
    assert loops.connect_accept(lst, 500, cmode, timeout=TIMEOUT, verify=True) == 500
    assert queued(lst) == 0, "a connection was left in the accept queue"
    if transport == "unix":
        assert os.listdir(listeners.dir) == [os.path.basename(lst.getsockname())]


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_verify_catches_an_accepted_socket_that_is_not_the_clients(loops, listeners,
                                                                  transport, cmode):
    """A stray connection queued first is what accept() returns: its byte
    is not the loop's client's, and verify says so."""
    lst = listeners.make(transport)
    stray = socket.socket(lst.family, socket.SOCK_STREAM)
    with stray:
        stray.connect(lst.getsockname())
        stray.sendall(bytes([0xEE]))
        with pytest.raises(ValueError) as info:
            loops.connect_accept(lst, 3, cmode, timeout=TIMEOUT, verify=True)
        assert one_line(info.value) == (
            "connection 0: the accepted socket received byte 238, expected byte 0")
    assert queued(lst) == 1  # the loop's own client, never accepted


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_thousands_of_connections_leak_nothing(loops, listeners, transport, cmode):
    """The net fixture fails the test on a leaked fd; the listeners
    fixture on a file left beside the listener."""
    lst = listeners.make(transport)
    for _ in range(2):  # back to back on one listener, as a pyperf worker does
        assert loops.connect_accept(lst, MANY, cmode, timeout=TIMEOUT) == MANY
    assert queued(lst) == 0


def test_one_listener_serves_every_mode_back_to_back(loops, listeners):
    lst = listeners.make("tcp4")
    for _ in range(2):
        for mode in CONNECT_MODES:
            assert loops.connect_accept(lst, 200, mode, timeout=TIMEOUT, verify=True) == 200
    assert queued(lst) == 0


# ------------------------------------------------------------ bad arguments


GOOD = dict(count=3, mode="blocking", timeout=TIMEOUT)


@pytest.mark.parametrize("override, exc, says", [
    (dict(count=0), ValueError, "count must be > 0"),
    (dict(count=-1), ValueError, "count must be > 0"),
    (dict(count=1.5), TypeError, "count must be an int"),
    (dict(count=None), TypeError, "count must be an int"),
    (dict(count=True), TypeError, "count must be an int"),
    (dict(mode="spin"), ValueError, "mode 'spin' does not apply to connect_accept "
                                    "(expected one of: blocking, timeout, nonblocking)"),
    (dict(mode="fast"), ValueError, "unknown mode 'fast'"),
    (dict(mode=None), TypeError, "mode must be a str"),
    (dict(timeout=0), ValueError, "timeout must be > 0"),
    (dict(timeout=float("nan")), ValueError, "timeout must be > 0"),
    (dict(timeout="1"), TypeError, "timeout must be a number"),
], ids=lambda v: str(v) if not isinstance(v, dict) else "-".join(map(str, v.values())))
def test_bad_arguments_are_refused_before_any_io(loops, listeners, override, exc, says):
    lst = listeners.make("tcp4")
    lst.settimeout(1.25)
    with pytest.raises(exc) as info:
        loops.connect_accept(lst, **{**GOOD, **override})
    assert says in one_line(info.value)
    assert lst.gettimeout() == 1.25, "the listener was configured before the check"
    assert queued(lst) == 0, "a connection was made before the check"


def test_a_socket_that_is_not_a_listener_is_refused(loops, net, listeners):
    lst = listeners.make("tcp4")
    bound = socket.socket()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    closed = socket.socket()
    closed.close()
    pair = net.pair("tcp4")
    with bound, udp:
        bound.bind(("127.0.0.1", 0))
        cases = [
            (bound, ValueError, "expected a listening socket (call listen() first)"),
            (pair.a, ValueError, "expected a listening socket"),
            (udp, ValueError, "expected a stream socket"),
            (closed, ValueError, "socket is closed"),
            (lst.fileno(), TypeError, "expected a socket.socket, got int"),
        ]
        for sock, exc, says in cases:
            with pytest.raises(exc) as info:
                loops.connect_accept(sock, 3, "blocking", timeout=TIMEOUT)
            assert says in one_line(info.value), sock
    assert queued(lst) == 0


# ------------------------------------------------------------ going wrong


def test_a_unix_listener_whose_path_is_gone(loops, listeners, cmode):
    lst = listeners.make("unix")
    os.unlink(lst.getsockname())
    with pytest.raises(FileNotFoundError) as info:
        loops.connect_accept(lst, 10, cmode, timeout=TIMEOUT)
    assert info.value.errno == errno.ENOENT


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_a_listener_shut_down_mid_loop_is_an_oserror(loops, listeners, transport, cmode):
    """Another thread shuts the listener down while the loop runs: the loop
    ends with an OSError carrying the errno (connect refused, or accept on
    a socket that no longer listens), within the timeout, leaking nothing."""
    lst = listeners.make(transport)
    timer = threading.Timer(0.05, lst.shutdown, (socket.SHUT_RDWR,))
    timer.start()
    try:
        with Elapsed() as t, pytest.raises(OSError) as info:
            loops.connect_accept(lst, 10**8, cmode, timeout=SHORT)
    finally:
        timer.join(TIMEOUT)
    # which one depends on where the shutdown lands: before connect
    # (refused), between connect and accept (reset, or EINVAL: not listening)
    assert info.value.errno in (errno.ECONNREFUSED, errno.ECONNRESET, errno.EINVAL,
                                errno.ECONNABORTED, errno.ETIMEDOUT), info.value
    assert t.s < 0.05 + SHORT + 2.0


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_a_full_accept_queue_ends_in_a_bounded_wait(loops, listeners, transport, cmode):
    """backlog 0 and a stray connection in the queue: the loop's connect
    cannot complete.  TCP drops the SYN: TimeoutError once the timeout
    passed, in every mode.  A Unix connect waits only when blocking
    (SO_SNDTIMEO); otherwise EAGAIN at once, as CPython's connect gives it."""
    lst = listeners.make(transport, backlog=0)
    stray = socket.socket(lst.family, socket.SOCK_STREAM)
    with stray:
        stray.connect(lst.getsockname())
        with Elapsed() as t, pytest.raises(OSError) as info:
            loops.connect_accept(lst, 3, cmode, timeout=SHORT)
    if transport == "tcp4" or cmode == "blocking":
        assert type(info.value) is TimeoutError and info.value.errno == errno.ETIMEDOUT
        assert SHORT * 0.9 <= t.s < SHORT + 2.0, f"{t.s:.2f} s"
    else:
        assert type(info.value) is BlockingIOError and info.value.errno == errno.EAGAIN
        assert t.s < 2.0, f"{t.s:.2f} s"
    assert queued(lst) == 1  # the stray


# ------------------------------------------------------------ signals


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_a_signal_storm_loses_no_connection(loops, listeners, transport, cmode):
    lst = listeners.make(transport)
    with Storm() as storm:
        done = loops.connect_accept(lst, 2000, cmode, timeout=TIMEOUT, verify=True)
    assert storm.count > 0, "no signal arrived during the loop"
    assert done == 2000
    assert queued(lst) == 0


def _fds() -> set[int]:
    return {int(x) for x in os.listdir("/proc/self/fd")}


def _forgive_the_accept_window(loops, lst: socket.socket, before: set[int]) -> None:
    """CPython's ``socket.accept()`` checks for signals when ``_accept()``
    returns, before the new fd is wrapped in a socket object: a Ctrl-C
    landing there loses that fd (every Python program using accept() has
    this window).  The twin inherits it; the compiled loop must not.  So
    for the twin only, one such fd is allowed, if it is an accepted socket
    of this listener, and closed here (the net fixture then checks the rest)."""
    new = _fds() - before
    if loops.IMPLEMENTATION != "python" or not new:
        return
    assert len(new) == 1, f"more than the one fd of the accept window: {new}"
    fd = new.pop()
    with socket.socket(fileno=os.dup(fd)) as s:
        assert s.getsockname() == lst.getsockname(), "the lost fd is not an accepted socket"
    os.close(fd)


@pytest.mark.parametrize("transport", ("tcp4", "unix"))
def test_sigint_raises_keyboard_interrupt_promptly(loops, listeners, transport, cmode):
    lst = listeners.make(transport)
    before = _fds()
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    sent: list[float] = []

    def kill():
        sent.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(SIGINT_AFTER, kill)
    outcome = "returned"
    try:
        try:
            timer.start()
            loops.connect_accept(lst, 10**8, cmode, timeout=TIMEOUT)
        except KeyboardInterrupt:
            outcome = "KeyboardInterrupt"
        done = time.monotonic()
        timer.join(TIMEOUT)
        try:  # a late SIGINT runs here, in the guard
            time.sleep(0.05)
        except KeyboardInterrupt:
            outcome += " (then a late KeyboardInterrupt)"
    finally:
        signal.signal(signal.SIGINT, old)
    _forgive_the_accept_window(loops, lst, before)
    assert outcome == "KeyboardInterrupt"
    assert done - sent[0] <= SIGINT_BOUND, f"{done - sent[0]:.3f} s after SIGINT"
    assert queued(lst) <= 1  # at most the connection the interrupt cut short
