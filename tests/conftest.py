"""Fixtures for the loop tests: the twins, connected socket pairs, peers.

Design note
-----------
Every loop test runs once per twin through the ``loops`` fixture ("cython",
"python").  A benchmark must never fall back silently, so a missing compiled
module makes the "cython" case FAIL, not skip; ``FASTSOCK_PUREPYTHON=1``
is the one way to say "only the Python twin here".

Sockets come from ``net``, which owns everything a test opens: the pairs
(tcp4, tcp6, udp4, udp6, unix stream and unix dgram, the Unix ones bound to
real files under ``tmp_path``), the peer threads, and the checks at the end:
no peer still running, no file descriptor leaked, no socket file left.  The
measured end of a pair is ``a``; the peer's end is ``b``.  Peers run in
threads (the compiled loops release the GIL; the Python twin's threads
interleave), or in a forked child where a thread would not do (two spinning
Python loops in one process take turns at the GIL); every wait is bounded
(loop timeouts, ``join(timeout)``, a killed child).
Plain helpers and constants live in ``support.py``.

With ``CI=true`` a skipped test is reported as a failure: CI has every
transport and tool, so a skip there means something is missing.

Which fastsock is tested: ``python -m pytest`` from the clone root puts the
source tree first on ``sys.path``, and the source tree holds no compiled
module after ``pip install .``.  When fastsock is installed elsewhere, that
is the one imported (the source tree is not, the rest of sys.path is kept);
the report header says which one was imported.
"""

from __future__ import annotations

import errno
import importlib
import os
import pickle
import select
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _prefer_installed_fastsock() -> None:
    """Import fastsock from where it is installed, if it is, rather than
    from the source tree that ``python -m pytest`` puts first on sys.path.
    sys.path itself is left as it was (other tests import ``tests.*``)."""
    here = [p for p in sys.path if os.path.abspath(p or os.curdir) == str(ROOT)]
    if not here or "fastsock" in sys.modules:
        return
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if p not in here]
    importlib.invalidate_caches()
    try:
        importlib.import_module("fastsock")  # stays in sys.modules
    except ImportError:
        pass  # not installed: the source tree it is
    finally:
        sys.path[:] = saved


_prefer_installed_fastsock()

from support import (  # noqa: E402
    DGRAM_TRANSPORTS,
    JOIN_TIMEOUT,
    MODES,
    STREAM_TRANSPORTS,
    TIMEOUT,
)

import fastsock  # noqa: E402

PURE = os.environ.get("FASTSOCK_PUREPYTHON", "") not in ("", "0")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
IMPLS = ("python",) if PURE else ("cython", "python")


# ------------------------------------------------------------ the twins


def twin(name: str) -> Any:
    """The loop module of one twin; FAILS the test when it is not built."""
    found = fastsock.implementations()
    if name not in found:
        try:
            importlib.import_module("fastsock._loops")
            why = "importable now, but implementations() does not list it"
        except ImportError as exc:
            why = str(exc)
        pytest.fail(
            f"the compiled loops are missing ({why}); fastsock was imported "
            f"from {os.path.dirname(fastsock.__file__)}. Build them "
            "(pip install '.[test]'), or set FASTSOCK_PUREPYTHON=1 to test "
            "only the Python twin: a benchmark must never fall back silently",
            pytrace=False,
        )
    module = found[name]
    assert name == module.IMPLEMENTATION, (module, module.IMPLEMENTATION)
    return module


@pytest.fixture(params=IMPLS)
def loops(request: pytest.FixtureRequest) -> Any:
    """The loop module of each twin in turn (ids "cython", "python")."""
    return twin(request.param)


@pytest.fixture
def twins() -> dict[str, Any]:
    """Both twins at once, for parity tests."""
    if PURE:
        pytest.skip("FASTSOCK_PUREPYTHON=1: parity needs both twins")
    return {name: twin(name) for name in ("cython", "python")}


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    return request.param


# ------------------------------------------------------------ sockets

@dataclass
class Pair:
    """A connected pair: ``a`` is the measured end, ``b`` the peer's."""

    transport: str
    a: socket.socket
    b: socket.socket


_ipv6: bool | None = None


def have_ipv6() -> bool:
    global _ipv6
    if _ipv6 is None:
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
                s.bind(("::1", 0))
            _ipv6 = True
        except OSError as exc:
            if exc.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL,
                                 errno.EPROTONOSUPPORT):
                raise
            _ipv6 = False
    return _ipv6


def _bufsize(sock: socket.socket, size: int | None) -> None:
    if size is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


class Peer:
    """A function running in a daemon thread; ``join`` returns its result
    or raises its exception."""

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict) -> None:
        self.name = getattr(fn, "__name__", repr(fn))
        self.result: Any = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.result = fn(*args, **kwargs)
            except BaseException as exc:  # handed to join()
                self.error = exc

        self.thread = threading.Thread(target=run, name=f"peer-{self.name}", daemon=True)
        self.thread.start()

    def alive(self) -> bool:
        return self.thread.is_alive()

    def join(self, timeout: float = JOIN_TIMEOUT) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"peer {self.name} still running after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.result

    def end(self) -> bool:
        """At teardown: True when the peer is gone within the bound."""
        self.thread.join(JOIN_TIMEOUT)
        return not self.thread.is_alive()


class ForkPeer:
    """A function running in a forked child, for where a thread would not do
    (two spinning Python loops in one process take turns at the GIL, 5 ms at
    a time).  The result or exception comes back pickled through a pipe."""

    def __init__(self, fn: Callable[..., Any], args: tuple, kwargs: dict,
                 others: list[socket.socket]) -> None:
        self.name = getattr(fn, "__name__", repr(fn))
        self._done = False
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run, report, leave without pytest's atexit
            status = 0
            try:
                os.close(r)
                for s in others:  # so that the parent's close() is an EOF
                    s.close()
                try:
                    out = ("ok", fn(*args, **kwargs))
                except BaseException as exc:
                    out = ("error", exc)
                try:
                    data = pickle.dumps(out)
                except Exception:
                    data = pickle.dumps(("error", RuntimeError(repr(out[1]))))
                with os.fdopen(w, "wb") as f:
                    f.write(data)
            except BaseException:
                status = 70
            finally:
                os._exit(status)
        os.close(w)
        self.pid = pid
        self._r = r

    def alive(self) -> bool:
        return not self._done

    def join(self, timeout: float = JOIN_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        chunks = []
        try:
            while True:
                rest = deadline - time.monotonic()
                if rest <= 0 or not select.select([self._r], [], [], rest)[0]:
                    self._kill()
                    raise AssertionError(f"peer {self.name} (pid {self.pid}) still "
                                         f"running after {timeout} s: killed")
                chunk = os.read(self._r, 1 << 16)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(self._r)
        _, status = os.waitpid(self.pid, 0)
        self._done = True
        if not chunks:
            raise AssertionError(f"peer {self.name} (pid {self.pid}) died: status {status}")
        kind, value = pickle.loads(b"".join(chunks))
        if kind == "error":
            raise value
        return value

    def _kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        self._done = True

    def end(self) -> bool:
        if not self._done:
            try:
                self.join()
            except BaseException:
                pass
        return True


class Net:
    """Everything one test opens, closed and checked at its end."""

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._socks: list[socket.socket] = []
        self._files: list[Path] = []
        self._peers: list[Peer | ForkPeer] = []
        self._dir: Path | None = None

    # -- pairs

    def pair(self, transport: str, bufsize: int | None = None) -> Pair:
        """A connected pair; ``bufsize`` sets SO_SNDBUF/SO_RCVBUF on both
        ends before they connect."""
        if transport in ("tcp4", "tcp6"):
            a, b = self._tcp(transport, bufsize)
        elif transport in ("udp4", "udp6"):
            a, b = self._udp(transport, bufsize)
        elif transport == "unix":
            a, b = self._unix_stream(bufsize)
        elif transport == "unix_dgram":
            a, b = self._unix_dgram(bufsize)
        else:
            raise ValueError(f"unknown transport {transport!r}")
        for s in (a, b):
            s.settimeout(None)
        return Pair(transport, a, b)

    def _sock(self, family: int, kind: int) -> socket.socket:
        s = socket.socket(family, kind)
        self._socks.append(s)
        return s

    def _inet(self, transport: str) -> tuple[int, str]:
        if transport.endswith("6"):
            if not have_ipv6():
                pytest.skip("no IPv6 on this machine")
            return socket.AF_INET6, "::1"
        return socket.AF_INET, "127.0.0.1"

    def _tcp(self, transport: str, bufsize: int | None) -> tuple[socket.socket, socket.socket]:
        family, host = self._inet(transport)
        with socket.socket(family, socket.SOCK_STREAM) as listener:
            _bufsize(listener, bufsize)  # accept() inherits the buffers
            listener.bind((host, 0))
            listener.listen(1)
            listener.settimeout(TIMEOUT)
            a = self._sock(family, socket.SOCK_STREAM)
            _bufsize(a, bufsize)
            a.settimeout(TIMEOUT)
            a.connect(listener.getsockname()[:2])
            b, _ = listener.accept()
            self._socks.append(b)
        return a, b

    def _udp(self, transport: str, bufsize: int | None) -> tuple[socket.socket, socket.socket]:
        family, host = self._inet(transport)
        a = self._sock(family, socket.SOCK_DGRAM)
        b = self._sock(family, socket.SOCK_DGRAM)
        for s in (a, b):
            _bufsize(s, bufsize)
            s.bind((host, 0))
        a.connect(b.getsockname()[:2])
        b.connect(a.getsockname()[:2])
        return a, b

    def _path(self, name: str) -> str:
        if self._dir is None:
            base = self._request.getfixturevalue("tmp_path")
            self._dir = base / "sock"
            self._dir.mkdir()
        path = self._dir / name
        if len(str(path)) >= 100:  # sun_path holds 108 bytes
            raise AssertionError(f"unix socket path too long: {path}")
        self._files.append(path)
        return str(path)

    def _unix_stream(self, bufsize: int | None) -> tuple[socket.socket, socket.socket]:
        path = self._path(f"stream{len(self._files)}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
            listener.bind(path)
            listener.listen(1)
            listener.settimeout(TIMEOUT)
            a = self._sock(socket.AF_UNIX, socket.SOCK_STREAM)
            _bufsize(a, bufsize)
            a.settimeout(TIMEOUT)
            a.connect(path)
            b, _ = listener.accept()
            self._socks.append(b)
            _bufsize(b, bufsize)
        return a, b

    def _unix_dgram(self, bufsize: int | None) -> tuple[socket.socket, socket.socket]:
        n = len(self._files)
        pa, pb = self._path(f"dgram{n}a"), self._path(f"dgram{n}b")
        a = self._sock(socket.AF_UNIX, socket.SOCK_DGRAM)
        b = self._sock(socket.AF_UNIX, socket.SOCK_DGRAM)
        for s, p in ((a, pa), (b, pb)):
            _bufsize(s, bufsize)
            s.bind(p)
        a.connect(pb)
        b.connect(pa)
        return a, b

    # -- peers

    def peer(self, fn: Callable[..., Any], *args: Any, process: bool = False,
             **kwargs: Any) -> Peer | ForkPeer:
        """Run ``fn(*args, **kwargs)`` now, in a thread or (``process=True``)
        in a forked child; ``join()`` it for its result."""
        if process:
            used = [a for a in args if isinstance(a, socket.socket)]
            others = [s for s in self._socks if all(s is not u for u in used)]
            p: Peer | ForkPeer = ForkPeer(fn, args, kwargs, others)
        else:
            p = Peer(fn, args, kwargs)
        self._peers.append(p)
        return p

    # -- the end

    def close(self) -> list[str]:
        problems = []
        # a peer still blocked after a failure: EOF it out, then join
        if any(p.alive() for p in self._peers):
            for s in self._socks:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for p in self._peers:
            if not p.end():
                problems.append(f"peer {p.name} still running after {JOIN_TIMEOUT} s")
        for s in self._socks:
            s.close()
        for path in self._files:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
        if self._dir is not None:
            left = sorted(os.listdir(self._dir))
            if left:
                problems.append(f"files left behind in {self._dir}: {left}")
            else:
                self._dir.rmdir()
        return problems


def _open_fds() -> dict[int, str]:
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the listdir's own fd, closed by now
            pass
    return fds


@pytest.fixture
def net(request: pytest.FixtureRequest) -> Any:
    before = _open_fds()
    n = Net(request)
    yield n
    problems = n.close()
    leaked = {fd: what for fd, what in _open_fds().items() if fd not in before}
    if leaked:
        problems.append(f"file descriptors leaked: {leaked}")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture
def tcp4(net: Net) -> Pair:
    return net.pair("tcp4")


@pytest.fixture
def tcp6(net: Net) -> Pair:
    return net.pair("tcp6")


@pytest.fixture
def udp4(net: Net) -> Pair:
    return net.pair("udp4")


@pytest.fixture
def udp6(net: Net) -> Pair:
    return net.pair("udp6")


@pytest.fixture
def unix_stream(net: Net) -> Pair:
    return net.pair("unix")


@pytest.fixture
def unix_dgram(net: Net) -> Pair:
    return net.pair("unix_dgram")


@pytest.fixture(params=STREAM_TRANSPORTS)
def stream_pair(request: pytest.FixtureRequest, net: Net) -> Pair:
    """One connected stream pair per transport (ids tcp4, tcp6, unix)."""
    return net.pair(request.param)


@pytest.fixture(params=DGRAM_TRANSPORTS)
def dgram_pair(request: pytest.FixtureRequest, net: Net) -> Pair:
    """One connected datagram pair per transport (ids udp4, udp6, unix_dgram)."""
    return net.pair(request.param)


# ------------------------------------------------------------ hooks


def pytest_report_header(config: pytest.Config) -> list[str]:
    found = sorted(fastsock.implementations())
    return [
        f"fastsock: {os.path.dirname(fastsock.__file__)} "
        f"(IMPLEMENTATION={fastsock.IMPLEMENTATION}, twins={','.join(found)}, "
        f"FASTSOCK_PUREPYTHON={'1' if PURE else 'unset'}, CI={IN_CI})"
    ]


def _fail_skip_in_ci(rep: Any) -> None:
    if IN_CI and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped in CI, where nothing may be skipped: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    _fail_skip_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    outcome = yield  # a whole module skipped (importorskip, say)
    _fail_skip_in_ci(outcome.get_result())
