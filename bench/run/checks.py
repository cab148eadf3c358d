"""The conformance checks' bodies: the twins' loop tests, against any impl.

Design note
-----------
Each body runs in a process of its own (:func:`bench.run.conformance.run_one`
forks it), calls one contract function of the impl under test, the
measured side, against the suite's compiled loop, the peer, forked once
more (:class:`_Peer`), and returns a one-line detail or raises
:class:`bench.run.conformance.Failed` with the one line a user reads.
What the twins' tests check, per function (``tests/test_stream.py``,
``test_dgram.py``, ``test_errors.py``, ``test_signals.py``):

* counts and integrity: the return value is the contract's, and what the
  compiled peer received (or echoed) is every byte once, in order, checked
  with ``pattern``/``verify``, across sizes and through small socket
  buffers (partial sends, short reads);
* bounded wait: a peer that reads (or sends) nothing ends in
  ``TimeoutError`` near the timeout, not later and not never; a lost
  datagram round is counted, not raised; a datagram round carries its
  number and a stale reply is dropped;
* closed peer: an error (``BrokenPipeError``, ``ConnectionResetError``,
  ``ConnectionRefusedError``), never a success that went nowhere;
* signals: a storm of SIGALRM (every 1 ms) loses and repeats nothing;
  SIGINT raises ``KeyboardInterrupt`` within 0.5 s, in every mode;
* bad arguments (once per function): ``ValueError``/``TypeError`` with a
  one-line message before any I/O (the peer receives nothing, input
  waiting is not consumed, the socket's timeout is left as it was),
  including the contract's modes the impl does not declare.

Every wait here is bounded (the loops' own timeouts, the peer's result);
the check's bound (``PER_MODE``'s third field) is what the runner kills
after.

Limits: UDP may lose, so datagram counts are checked over Unix datagram
sockets (which do not); round trips over UDP allow a few lost rounds.
"""

from __future__ import annotations

import array
import json
import math
import os
import select
import signal
import socket
import threading
import time
from typing import Any, Callable

import fastsock
from bench.run.conformance import Check, Failed
from bench.run.peer import _set_pdeathsig
from bench.run.transports import Listener, make_pair
from fastsock._common import CONNECT_MODES, MODES, PATTERN_PERIOD, STREAM_MAX, UDP4_MAX

# The loops' bound where a check expects success (s).
TIMEOUT = 5.0
# The loops' bound where a check expects the wait to expire (s), and how
# late past it the error may come (s; blocking mode may wait twice).
SHORT = 0.1
SLACK = 1.0
# Ctrl-C: the SIGINT comes this long after the call started waiting (s) and
# must take effect within SIGINT_BOUND (s).
SIGINT_AFTER = 0.05
SIGINT_BOUND = 0.5
# The signal storm: first signal and interval (s).
STORM_FIRST = 0.0001
STORM_INTERVAL = 0.001
# Small socket buffers (bytes): partial sends and short reads.
TINY = 4096

FUNCTIONS = fastsock.LOOP_NAMES


def modes_of(function: str, modes: tuple[str, ...]) -> list[str]:
    """The modes a function of an impl declaring ``modes`` is checked in."""
    if function == "connect_accept":
        return [m for m in modes if m in CONNECT_MODES]
    return list(modes)


def _peer_loops() -> Any:
    """The suite's peer: the compiled loops wherever they are built."""
    found = fastsock.implementations()
    return found.get("cython") or found["python"]


# ------------------------------------------------------------ the peer


class _Peer:
    """``fn(*args)`` in a forked process (the peer's end of a pair; the
    measured end ``mine`` is closed there, so that closing it here is an
    EOF); :meth:`result` returns what it returned or raises Failed with
    its error."""

    def __init__(self, fn: Callable[..., Any], *args: Any,
                 mine: socket.socket | None = None) -> None:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                _set_pdeathsig()
                signal.signal(signal.SIGINT, signal.SIG_IGN)  # the check's Ctrl-C is not ours
                if mine is not None:
                    mine.close()
                try:
                    out = ["ok", fn(*args)]
                except BaseException as exc:
                    out = ["error", f"{type(exc).__name__}: {' '.join(str(exc).split())}"]
                os.write(w, json.dumps(out).encode())
            finally:
                os._exit(0)
        os.close(w)
        self.pid, self._r = pid, r

    def result(self, timeout: float = TIMEOUT + 2) -> Any:
        deadline = time.monotonic() + timeout
        chunks = []
        try:
            while True:
                rest = deadline - time.monotonic()
                if rest <= 0 or not select.select([self._r], [], [], rest)[0]:
                    self.kill()
                    raise Failed(f"the peer did not finish within {timeout:g} s "
                                 "(bytes missing, or no end of stream?)")
                chunk = os.read(self._r, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            self.kill()
        try:
            kind, value = json.loads(b"".join(chunks))
        except ValueError:
            raise Failed("the peer died without a result") from None
        if kind == "error":
            raise Failed(f"the peer failed: {value}")
        return value

    def kill(self) -> None:
        if self.pid > 0:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(self.pid, 0)
            self.pid = -1
        if self._r >= 0:
            os.close(self._r)
            self._r = -1


def _pair(transport: str, tiny: bool = False) -> tuple[socket.socket, socket.socket]:
    mine, theirs = make_pair(transport)
    if transport in ("tcp4", "tcp6"):
        for s in (mine, theirs):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if tiny:
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TINY)
        mine.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TINY)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, TINY)
        theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, TINY)
    return mine, theirs


def _with_peer(transport: str, fn: Callable[..., Any], *args: Any, tiny: bool = False
               ) -> tuple[socket.socket, _Peer]:
    """A pair whose other end is ``fn(theirs, *args)`` in a peer process."""
    mine, theirs = _pair(transport, tiny)
    try:
        peer = _Peer(fn, theirs, *args, mine=mine)
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()
    return mine, peer


def _against(peer: _Peer, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)``, the measured side, against ``peer``; when it
    raises, a peer that failed first (a wrong byte it found) is what is
    reported."""
    try:
        return fn(*args, **kwargs)
    except Exception:
        try:
            peer.result(timeout=1.0)
        except Failed as failed:
            if str(failed).startswith("the peer failed"):
                raise failed from None
        raise


def _returned(what: object, want: object, case: str) -> None:
    if what != want:
        raise Failed(f"{case}: returned {what!r}, expected {want!r}")


def _end(sock: socket.socket) -> None:
    """The measured side's end of a stream: EOF for the peer."""
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError as exc:
        raise Failed(f"the socket is unusable after the call ({exc})") from None


def _end_dgram(sock: socket.socket) -> None:
    """An empty datagram: the end marker of the contract's datagram loops."""
    try:
        sock.setblocking(True)
        sock.settimeout(TIMEOUT)
        sock.send(b"")
    except OSError as exc:
        raise Failed(f"the socket is unusable after the call ({exc})") from None


def _expect(exc_types: tuple[type[BaseException], ...], expected: str,
            call: Callable[[], Any]) -> tuple[BaseException, float]:
    """Run ``call``; it must raise one of ``exc_types``: (that exception,
    seconds it took), or Failed saying what happened instead."""
    t0 = time.monotonic()
    try:
        got = call()
    except exc_types as exc:
        return exc, time.monotonic() - t0
    except Exception as exc:
        raise Failed(f"raised {type(exc).__name__} ({_text(exc)}), expected {expected}") \
            from None
    raise Failed(f"returned {got!r}, expected {expected}")


def _text(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _in_time(took: float, what: str, low: float = SHORT * 0.9,
             high: float = 2 * SHORT + SLACK) -> None:
    if not low <= took <= high:
        raise Failed(f"{what} after {took:.2f} s with a timeout of {SHORT:g} s "
                     f"(expected {low:.2f} to {high:.2f} s)")


class _Storm:
    """SIGALRM every STORM_INTERVAL s, counted by a no-op handler."""

    def __enter__(self) -> _Storm:
        self.count = 0

        def handler(signum: int, frame: Any) -> None:
            self.count += 1

        self.old = signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, STORM_FIRST, STORM_INTERVAL)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, self.old)


def _ctrl_c(call: Callable[[], Any]) -> str:
    """SIGINT (the default handler) SIGINT_AFTER s into ``call``, which waits
    on a peer that does nothing: KeyboardInterrupt within SIGINT_BOUND."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sent_at: list[float] = []

    def kill() -> None:
        sent_at.append(time.monotonic())
        os.kill(os.getpid(), signal.SIGINT)

    timer = threading.Timer(SIGINT_AFTER, kill)
    timer.start()
    outcome = ""
    try:
        call()
        outcome = "returned"
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        outcome = f"raised {type(exc).__name__} ({_text(exc)})"
    done = time.monotonic()
    timer.join(TIMEOUT)
    try:  # a late SIGINT lands here
        time.sleep(0.01)
    except KeyboardInterrupt:
        pass
    if outcome:
        raise Failed(f"{outcome} when SIGINT came, expected KeyboardInterrupt")
    after = done - sent_at[0] if sent_at else math.nan
    if not after <= SIGINT_BOUND:
        raise Failed(f"KeyboardInterrupt {after:.2f} s after SIGINT (at most {SIGINT_BOUND} s)")
    return f"KeyboardInterrupt {after * 1000:.0f} ms after SIGINT"


def _nothing_to_read(sock: socket.socket, wait: float = 0.003) -> bool:
    """No byte (nor EOF) waits at ``sock`` (over loopback, what was sent
    arrives within microseconds)."""
    sock.settimeout(wait)
    try:
        sock.recv(1, socket.MSG_PEEK)
    except TimeoutError:
        return True
    return False


def _samples(count: int) -> array.array[int]:
    return array.array("q", [-1]) * (count + 2)


def _check_samples(samples: array.array[int], done: int) -> None:
    if not all(s > 0 for s in samples[:done]):
        raise Failed("samples: a completed round trip has no time (samples[i] <= 0)")
    if list(samples[done:]) != [-1] * (len(samples) - done):
        raise Failed("samples: written past the round trips done")


# ------------------------------------------------------------ stream_send


SEND_CASES = (("tcp4", 1, 200, False), ("unix-stream", 4099, 100, True),
              ("tcp4", 4 * 65536 + 1, 8, False))


def send_counts(loops: Any, check: Check) -> str:
    peer_loops = _peer_loops()
    for transport, size, count, tiny in SEND_CASES:
        case = f"{transport}, {count} x {size} B" + (" through 4 KiB buffers" if tiny else "")
        mine, peer = _with_peer(transport, peer_loops.stream_recv, None, 65536, "blocking",
                                TIMEOUT, True, tiny=tiny)
        with mine:
            try:
                sent = _against(peer, loops.stream_send, mine, count, size, check.mode, TIMEOUT,
                                pattern=True)
                _end(mine)
                got = peer.result()
            finally:
                peer.kill()
        _returned(sent, count * size, case)
        if got != count * size:
            raise Failed(f"{case}: the peer received {got} of {count * size} bytes")
    return "every byte once, in order: " + "; ".join(
        f"{t} {n} x {s} B" for t, s, n, _ in SEND_CASES)


def send_wait(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-stream")  # nobody reads theirs
    with mine, theirs:
        _, took = _expect((TimeoutError,), "TimeoutError (the peer reads nothing)",
                          lambda: loops.stream_send(mine, 100_000, 65536, check.mode, SHORT))
    _in_time(took, "TimeoutError")
    return f"TimeoutError after {took:.2f} s, timeout {SHORT:g} s"


def send_closed(loops: Any, check: Check) -> str:
    mine, theirs = _pair("tcp4")
    theirs.close()
    with mine:
        exc, _ = _expect((BrokenPipeError, ConnectionResetError),
                         "BrokenPipeError or ConnectionResetError (the peer closed)",
                         lambda: loops.stream_send(mine, 1000, 65536, check.mode, TIMEOUT))
    return f"{type(exc).__name__} (errno {getattr(exc, 'errno', None)})"


def send_storm(loops: Any, check: Check) -> str:
    count, size = 64, 32768
    mine, peer = _with_peer("unix-stream", _peer_loops().stream_recv, None, 65536, "blocking",
                            TIMEOUT, True, tiny=True)
    with mine:
        try:
            with _Storm() as storm:
                sent = _against(peer, loops.stream_send, mine, count, size, check.mode,
                                TIMEOUT, pattern=True)
            _end(mine)
            got = peer.result()
        finally:
            peer.kill()
    _returned(sent, count * size, "under a signal storm")
    if got != count * size:
        raise Failed(f"under a signal storm the peer received {got} of {count * size} bytes")
    return f"{storm.count} SIGALRM during {count} x {size} B, every byte once"


def send_ctrl_c(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-stream")
    with mine, theirs:
        return _ctrl_c(lambda: loops.stream_send(mine, 100_000, 65536, check.mode, TIMEOUT))


# ------------------------------------------------------------ stream_pingpong

PINGPONG_CASES = (("tcp4", 1, 50), ("unix-stream", 64, 50), ("tcp4", 65536, 10))


def pingpong_counts(loops: Any, check: Check) -> str:
    peer_loops = _peer_loops()
    for transport, size, count in PINGPONG_CASES:
        case = f"{transport}, {count} round trips of {size} B"
        mine, peer = _with_peer(transport, peer_loops.stream_echo, size, "blocking", TIMEOUT)
        samples = _samples(count)
        with mine:
            try:
                done = loops.stream_pingpong(mine, count, size, check.mode, TIMEOUT,
                                             samples=samples, pattern=True)
                _end(mine)
                echoed = peer.result()
            finally:
                peer.kill()
        _returned(done, count, case)
        if echoed != count * size:
            raise Failed(f"{case}: the echo saw {echoed} of {count * size} bytes")
        _check_samples(samples, count)
    return "every round trip whole, samples written: " + "; ".join(
        f"{t} {n} x {s} B" for t, s, n in PINGPONG_CASES)


def _corrupting_echo(sock: socket.socket, size: int) -> int:
    """A plain echo that flips byte 10 of the first message."""
    sock.settimeout(TIMEOUT)
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return 0
        data += chunk
    data[10] ^= 0xFF
    sock.sendall(bytes(data))
    return size


def pingpong_integrity(loops: Any, check: Check) -> str:
    mine, peer = _with_peer("tcp4", _corrupting_echo, 64)
    with mine:
        try:
            exc, _ = _expect((ValueError,), "ValueError (pattern=True and the echo changed "
                             "byte 10)", lambda: loops.stream_pingpong(
                                 mine, 3, 64, check.mode, TIMEOUT, pattern=True))
        finally:
            peer.kill()
    if "\n" in str(exc) or not str(exc).strip():
        raise Failed("the ValueError's message is not one line")
    return f"ValueError: {_text(exc)}"


def pingpong_wait(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-stream")  # nobody answers
    with mine, theirs:
        _, took = _expect((TimeoutError,), "TimeoutError (the peer answers nothing)",
                          lambda: loops.stream_pingpong(mine, 10, 64, check.mode, SHORT))
    _in_time(took, "TimeoutError")
    return f"TimeoutError after {took:.2f} s, timeout {SHORT:g} s"


def _echo_once_then_end(sock: socket.socket) -> int:
    sock.settimeout(TIMEOUT)
    got = b""
    while len(got) < 64:
        chunk = sock.recv(64 - len(got))
        if not chunk:
            return 0
        got += chunk
    sock.sendall(got)
    rest = b""
    while len(rest) < 64:  # the second ping, read whole: a clean FIN
        chunk = sock.recv(64 - len(rest))
        if not chunk:
            break
        rest += chunk
    sock.shutdown(socket.SHUT_WR)
    return 1


def pingpong_closed(loops: Any, check: Check) -> str:
    mine, peer = _with_peer("unix-stream", _echo_once_then_end)
    with mine:
        try:
            exc, _ = _expect((ConnectionResetError,),
                             "ConnectionResetError (EOF in the middle of a round trip)",
                             lambda: loops.stream_pingpong(mine, 5, 64, check.mode, TIMEOUT))
        finally:
            peer.kill()
    return f"ConnectionResetError (errno {getattr(exc, 'errno', None)})"


def pingpong_storm(loops: Any, check: Check) -> str:
    count, size = 300, 100
    mine, peer = _with_peer("tcp4", _peer_loops().stream_echo, size, "blocking", TIMEOUT)
    with mine:
        try:
            with _Storm() as storm:
                done = loops.stream_pingpong(mine, count, size, check.mode, TIMEOUT,
                                             pattern=True)
            _end(mine)
            echoed = peer.result()
        finally:
            peer.kill()
    _returned(done, count, "under a signal storm")
    if echoed != count * size:
        raise Failed(f"under a signal storm the echo saw {echoed} of {count * size} bytes")
    return f"{storm.count} SIGALRM during {count} round trips, all whole"


def pingpong_ctrl_c(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-stream")
    with mine, theirs:
        return _ctrl_c(lambda: loops.stream_pingpong(mine, 5, 64, check.mode, TIMEOUT))


# ------------------------------------------------------------ dgram_send

DGRAM_CASES = ((1, 300), (512, 300), (16384, 100))


def dsend_counts(loops: Any, check: Check) -> str:
    peer_loops = _peer_loops()
    for size, count in DGRAM_CASES:
        case = f"unix-dgram, {count} x {size} B"
        mine, peer = _with_peer("unix-dgram", peer_loops.dgram_recv, count + 1, size,
                                "blocking", TIMEOUT, True)
        with mine:
            try:
                sent = _against(peer, loops.dgram_send, mine, count, size, check.mode, TIMEOUT,
                                pattern=True)
                _end_dgram(mine)
                got = peer.result()
            finally:
                peer.kill()
        _returned(sent, count, case)
        if got != count:
            raise Failed(f"{case}: the peer received {got} of {count} datagrams "
                         "(Unix datagrams are not lost)")
    return "every datagram once, intact: " + "; ".join(
        f"{n} x {s} B" for s, n in DGRAM_CASES)


def dsend_wait(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-dgram")  # nobody reads: its queue fills, sends block
    with mine, theirs:
        _, took = _expect((TimeoutError,), "TimeoutError (the peer reads nothing)",
                          lambda: loops.dgram_send(mine, 1_000_000, 4096, check.mode, SHORT))
    _in_time(took, "TimeoutError")
    return f"TimeoutError after {took:.2f} s, timeout {SHORT:g} s"


def dsend_closed(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-dgram")
    theirs.close()
    with mine:
        exc, _ = _expect((ConnectionError, FileNotFoundError),
                         "ConnectionRefusedError (the peer closed)",
                         lambda: loops.dgram_send(mine, 100, 64, check.mode, TIMEOUT))
    return f"{type(exc).__name__} (errno {getattr(exc, 'errno', None)})"


def dsend_storm(loops: Any, check: Check) -> str:
    count, size = 2000, 512
    mine, peer = _with_peer("unix-dgram", _peer_loops().dgram_recv, count + 1, size,
                            "blocking", TIMEOUT, True)
    with mine:
        try:
            with _Storm() as storm:
                sent = _against(peer, loops.dgram_send, mine, count, size, check.mode,
                                TIMEOUT, pattern=True)
            _end_dgram(mine)
            got = peer.result()
        finally:
            peer.kill()
    _returned(sent, count, "under a signal storm")
    if got != count:
        raise Failed(f"under a signal storm the peer received {got} of {count} datagrams")
    return f"{storm.count} SIGALRM during {count} datagrams, each once"


def dsend_ctrl_c(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-dgram")
    with mine, theirs:
        return _ctrl_c(lambda: loops.dgram_send(mine, 1_000_000, 4096, check.mode, TIMEOUT))


# ------------------------------------------------------------ dgram_pingpong

DPINGPONG_CASES = (("unix-dgram", 1, 100), ("unix-dgram", 2048, 100), ("udp4", 64, 100))
# Rounds a loopback UDP round trip check may lose (count).
UDP_LOSS_ALLOWED = 5


def dpingpong_counts(loops: Any, check: Check) -> str:
    peer_loops = _peer_loops()
    for transport, size, count in DPINGPONG_CASES:
        case = f"{transport}, {count} round trips of {size} B"
        mine, peer = _with_peer(transport, peer_loops.dgram_echo, size, "blocking", TIMEOUT)
        samples = _samples(count)
        with mine:
            try:
                got = loops.dgram_pingpong(mine, count, size, check.mode, 1.0,
                                           samples=samples, pattern=True)
                _end_dgram(mine)
                peer.result()
            finally:
                peer.kill()
        if not (isinstance(got, tuple) and len(got) == 2
                and all(isinstance(x, int) for x in got)):
            raise Failed(f"{case}: returned {got!r}, expected (completed, lost)")
        done, lost = got
        if done + lost != count:
            raise Failed(f"{case}: returned {got!r}: completed + lost must be {count}")
        allowed = UDP_LOSS_ALLOWED if transport == "udp4" else 0
        if lost > allowed:
            raise Failed(f"{case}: {lost} rounds lost against a live echo")
        _check_samples(samples, done)
    return "every round trip answered, samples written: " + "; ".join(
        f"{t} {n} x {s} B" for t, s, n in DPINGPONG_CASES)


def dpingpong_lost(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-dgram")  # nobody answers
    count, bound = 2, 0.05
    with mine, theirs:
        t0 = time.monotonic()
        try:
            got = loops.dgram_pingpong(mine, count, 64, check.mode, bound)
        except Exception as exc:
            raise Failed(f"raised {type(exc).__name__} ({_text(exc)}): a round without a reply "
                         "is lost, counted in the result, not an error") from None
        took = time.monotonic() - t0
    if tuple(got) != (0, count):
        raise Failed(f"returned {got!r} with no echo, expected (0, {count})")
    low, high = count * bound * 0.9, 2 * count * bound + SLACK
    if not low <= took <= high:
        raise Failed(f"{count} lost rounds took {took:.2f} s with a timeout of {bound:g} s "
                     f"(expected {low:.2f} to {high:.2f} s)")
    return f"(0, {count}) after {took:.2f} s, timeout {bound:g} s a round"


def _recording_echo(sock: socket.socket, count: int, size: int, copies: int) -> list[int]:
    """A plain echo answering each datagram ``copies`` times (every copy
    after the first is stale in the next round); returns each first byte."""
    sock.settimeout(TIMEOUT)
    firsts = []
    for _ in range(count):
        data = sock.recv(size)
        firsts.append(data[0])
        for _ in range(copies):
            sock.send(data)
    return firsts


def dpingpong_stale(loops: Any, check: Check) -> str:
    # 300 rounds: the round number wraps; 5 rounds answered twice: fewer
    # than a Unix datagram queue holds (10), so a loop that takes stale
    # replies leaves them queued instead of blocking the echo
    for count, copies in ((300, 1), (5, 2)):
        mine, peer = _with_peer("unix-dgram", _recording_echo, count, 64, copies)
        with mine:
            try:
                got = loops.dgram_pingpong(mine, count, 16, check.mode, 1.0)
                firsts = peer.result()
                mine.setblocking(False)
                left = 0
                try:
                    while True:
                        mine.recv(64)
                        left += 1
                except BlockingIOError:
                    pass
            finally:
                peer.kill()
        if firsts != [i % 256 for i in range(count)]:
            wrong = next(i for i, b in enumerate(firsts) if b != i % 256)
            raise Failed(f"round {wrong} began with byte {firsts[wrong]}, expected the round "
                         f"number mod 256 ({wrong % 256})")
        if tuple(got) != (count, 0):
            raise Failed(f"returned {got!r} against an echo answering {copies} time(s), "
                         f"expected ({count}, 0)")
        if left != copies - 1:
            raise Failed(f"{left} replies left unread, expected {copies - 1} (the last "
                         "round's copies): a stale reply was taken for a round's answer")
    return "300 rounds numbered mod 256; stale copies dropped"


def _corrupting_dgram_echo(sock: socket.socket, size: int) -> int:
    sock.settimeout(TIMEOUT)
    data = bytearray(sock.recv(size))
    data[-1] ^= 0xFF
    sock.send(bytes(data))
    return 1


def dpingpong_integrity(loops: Any, check: Check) -> str:
    mine, peer = _with_peer("unix-dgram", _corrupting_dgram_echo, 64)
    with mine:
        try:
            exc, _ = _expect((ValueError,), "ValueError (pattern=True and the echo changed "
                             "a byte)", lambda: loops.dgram_pingpong(
                                 mine, 1, 64, check.mode, 1.0, pattern=True))
        finally:
            peer.kill()
    return f"ValueError: {_text(exc)}"


def dpingpong_storm(loops: Any, check: Check) -> str:
    count, size = 300, 100
    mine, peer = _with_peer("unix-dgram", _peer_loops().dgram_echo, size, "blocking", TIMEOUT)
    with mine:
        try:
            with _Storm() as storm:
                got = loops.dgram_pingpong(mine, count, size, check.mode, 1.0, pattern=True)
            _end_dgram(mine)
            peer.result()
        finally:
            peer.kill()
    if tuple(got) != (count, 0):
        raise Failed(f"under a signal storm returned {got!r}, expected ({count}, 0)")
    return f"{storm.count} SIGALRM during {count} round trips, all answered"


def dpingpong_ctrl_c(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-dgram")
    with mine, theirs:
        return _ctrl_c(lambda: loops.dgram_pingpong(mine, 5, 64, check.mode, TIMEOUT))


# ------------------------------------------------------------ connect_accept


def _fds() -> int:
    return len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else -1


def connect_counts(loops: Any, check: Check) -> str:
    count = 50
    for transport in ("tcp4", "unix-stream"):
        listener = Listener(transport)
        try:
            before = _fds()
            done = loops.connect_accept(listener.sock, count, check.mode, TIMEOUT, verify=True)
            after = _fds()
        finally:
            listener.close()
        _returned(done, count, f"{transport}, {count} connections")
        if after != before:
            raise Failed(f"{transport}: {after - before} file descriptors left open")
    return f"{count} connections verified over tcp4 and unix-stream, no fd left"


# ------------------------------------------------------------ receiving sides
# Not measured (the peer is always the compiled loop), checked when provided.


def recv_counts(loops: Any, check: Check) -> str:
    count, size = 200, 4099
    mine, peer = _with_peer("unix-stream", _send_then_close, count, size, tiny=True)
    with mine:
        try:
            got = loops.stream_recv(mine, None, size, check.mode, TIMEOUT, verify=True)
            peer.result()
        finally:
            peer.kill()
    _returned(got, count * size, f"{count} x {size} B until EOF")
    return f"{count * size} bytes verified until EOF, through 4 KiB buffers"


def _send_then_close(sock: socket.socket, count: int, size: int) -> int:
    n = int(_peer_loops().stream_send(sock, count, size, "blocking", TIMEOUT, pattern=True))
    sock.close()
    return n


def _plain_send_wrong(sock: socket.socket, n: int, bad_at: int) -> int:
    data = bytearray((bytes(range(PATTERN_PERIOD)) * (n // PATTERN_PERIOD + 1))[:n])
    data[bad_at] ^= 0xFF
    sock.settimeout(TIMEOUT)
    sock.sendall(bytes(data))
    return n


def recv_integrity(loops: Any, check: Check) -> str:
    mine, peer = _with_peer("tcp4", _plain_send_wrong, 100_000, 1000)
    with mine:
        try:
            exc, _ = _expect((ValueError,), "ValueError (verify=True and byte 1000 is wrong)",
                             lambda: loops.stream_recv(mine, 100_000, 4096, check.mode, TIMEOUT,
                                                       verify=True))
        finally:
            peer.kill()
    if "1000" not in str(exc):
        raise Failed(f"the ValueError does not name byte 1000: {_text(exc)}")
    return f"ValueError: {_text(exc)}"


def recv_wait(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-stream")
    with mine, theirs:
        _, took = _expect((TimeoutError,), "TimeoutError (the peer sends nothing)",
                          lambda: loops.stream_recv(mine, 100, 64, check.mode, SHORT))
    _in_time(took, "TimeoutError")
    return f"TimeoutError after {took:.2f} s, timeout {SHORT:g} s"


def echo_counts(loops: Any, check: Check) -> str:
    count, size = 100, 1000
    mine, peer = _with_peer("unix-stream", _pingpong_then_close, count, size, tiny=True)
    with mine:
        try:
            echoed = loops.stream_echo(mine, size, check.mode, TIMEOUT)
            done = peer.result()
        finally:
            peer.kill()
    if done != count:
        raise Failed(f"the compiled ping-pong completed {done} of {count} round trips")
    _returned(echoed, count * size, "echo until EOF")
    return f"{count} round trips of {size} B echoed intact"


def _pingpong_then_close(sock: socket.socket, count: int, size: int) -> int:
    n = int(_peer_loops().stream_pingpong(sock, count, size, "blocking", TIMEOUT, pattern=True))
    sock.close()
    return n


def echo_wait(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-stream")
    with mine, theirs:
        _, took = _expect((TimeoutError,), "TimeoutError (the peer sends nothing)",
                          lambda: loops.stream_echo(mine, 64, check.mode, SHORT))
    _in_time(took, "TimeoutError")
    return f"TimeoutError after {took:.2f} s, timeout {SHORT:g} s"


def drecv_counts(loops: Any, check: Check) -> str:
    count, size = 300, 512
    mine, peer = _with_peer("unix-dgram", _dsend_then_end, count, size)
    with mine:
        try:
            got = loops.dgram_recv(mine, count + 1, size, check.mode, TIMEOUT, verify=True)
            peer.result()
        finally:
            peer.kill()
    _returned(got, count, f"{count} x {size} B then an empty datagram")
    return f"{count} datagrams verified, the empty one ends it"


def _dsend_then_end(sock: socket.socket, count: int, size: int) -> int:
    n = int(_peer_loops().dgram_send(sock, count, size, "blocking", TIMEOUT, pattern=True))
    sock.send(b"")
    return n


def drecv_idle(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-dgram")
    with mine, theirs:
        t0 = time.monotonic()
        try:
            got = loops.dgram_recv(mine, 10, 64, check.mode, SHORT)
        except Exception as exc:
            raise Failed(f"raised {type(exc).__name__} ({_text(exc)}): an idle dgram_recv "
                         "returns what it received") from None
        took = time.monotonic() - t0
    _returned(got, 0, "nothing sent")
    _in_time(took, "returned")
    return f"0 after {took:.2f} s idle, timeout {SHORT:g} s"


def decho_counts(loops: Any, check: Check) -> str:
    count, size = 100, 512
    mine, peer = _with_peer("unix-dgram", _dpingpong_then_end, count, size)
    with mine:
        try:
            echoed = loops.dgram_echo(mine, size, check.mode, TIMEOUT)
            done = peer.result()
        finally:
            peer.kill()
    if list(done) != [count, 0]:
        raise Failed(f"the compiled ping-pong returned {done}, expected [{count}, 0]")
    _returned(echoed, count, "echo until the empty datagram")
    return f"{count} datagrams echoed intact, the empty one ends it"


def _dpingpong_then_end(sock: socket.socket, count: int, size: int) -> Any:
    got = _peer_loops().dgram_pingpong(sock, count, size, "blocking", 1.0, pattern=True)
    sock.send(b"")
    sock.settimeout(TIMEOUT)
    while sock.recv(size):  # until the echo of the end: closed earlier, it is refused
        pass
    return got


def decho_idle(loops: Any, check: Check) -> str:
    mine, theirs = _pair("unix-dgram")
    with mine, theirs:
        t0 = time.monotonic()
        try:
            got = loops.dgram_echo(mine, 64, check.mode, SHORT)
        except Exception as exc:
            raise Failed(f"raised {type(exc).__name__} ({_text(exc)}): an idle dgram_echo "
                         "returns what it echoed") from None
        took = time.monotonic() - t0
    _returned(got, 0, "nothing sent")
    _in_time(took, "returned")
    return f"0 after {took:.2f} s idle, timeout {SHORT:g} s"


# ------------------------------------------------------------ bad arguments

# Arguments each function accepts (bar the socket and the mode).
GOOD: dict[str, dict[str, Any]] = {
    "stream_send": dict(count=1, size=64),
    "stream_recv": dict(total=64, size=64),
    "stream_echo": dict(size=64),
    "stream_pingpong": dict(count=1, size=64),
    "dgram_send": dict(count=1, size=64),
    "dgram_recv": dict(count=1, size=64),
    "dgram_echo": dict(size=64),
    "dgram_pingpong": dict(count=1, size=64),
    "connect_accept": dict(count=1),
}
NAN = float("nan")


def _bad_cases(function: str, check: Check) -> list[tuple[str, dict[str, Any],
                                                          type[Exception]]]:
    """(what, overrides, exception) for one function."""
    good = GOOD[function]
    out: list[tuple[str, dict[str, Any], type[Exception]]] = [
        ("mode 'fast'", dict(mode="fast"), ValueError),
        ("mode None", dict(mode=None), TypeError),
        ("timeout 0", dict(timeout=0), ValueError),
        ("timeout -1", dict(timeout=-1.0), ValueError),
        ("timeout nan", dict(timeout=NAN), ValueError),
        ("timeout '1'", dict(timeout="1"), TypeError),
        ("not a socket (a file descriptor)", dict(sock="fd"), TypeError),
        ("a closed socket", dict(sock="closed"), ValueError),
    ]
    if "size" in good:
        out += [("size 0", dict(size=0), ValueError), ("size -1", dict(size=-1), ValueError),
                ("size 1.5", dict(size=1.5), TypeError), ("size '64'", dict(size="64"), TypeError),
                ("size True", dict(size=True), TypeError)]
    if "count" in good:
        out += [("count 0", dict(count=0), ValueError), ("count -3", dict(count=-3), ValueError),
                ("count 2.0", dict(count=2.0), TypeError),
                ("count None", dict(count=None), TypeError)]
    if function.endswith("pingpong"):
        out += [("samples too short", dict(count=3, samples=array.array("q", [0, 0])),
                 ValueError),
                ("samples int32", dict(samples=array.array("i", [0, 0])), TypeError),
                ("samples read-only", dict(samples=bytes(8)), TypeError)]
    if function == "stream_recv":
        out += [("total -1", dict(total=-1), ValueError), ("total 1.5", dict(total=1.5),
                                                           TypeError)]
    if function == "stream_send":
        out += [("size over STREAM_MAX", dict(size=STREAM_MAX + 1), ValueError)]
    if function.startswith("dgram"):
        out += [("size 65508 over udp4", dict(size=UDP4_MAX + 1, sock="udp4"), ValueError),
                ("a stream socket", dict(sock="tcp4"), ValueError)]
    elif function.startswith("stream"):
        out += [("a datagram socket", dict(sock="udp4"), ValueError)]
    if function in ("dgram_send", "dgram_recv"):
        out += [("batch 0", dict(batch=0), ValueError)]
        if not check.batching:
            out += [("batch 2 (no sendmmsg/recvmmsg here)", dict(batch=2), ValueError)]
    if function == "connect_accept":
        out += [("mode 'spin' (no spin for connect)", dict(mode="spin"), ValueError),
                ("a socket that does not listen", dict(sock="tcp4"), ValueError)]
    modes = CONNECT_MODES if function == "connect_accept" else MODES
    for mode in modes:
        if mode not in check.modes:
            out.append((f"mode {mode!r}, which it does not declare", dict(mode=mode),
                        ValueError))
    return out


def bad_arguments(loops: Any, check: Check) -> str:
    fn = getattr(loops, check.function)
    dgram = check.function.startswith("dgram")
    cases = _bad_cases(check.function, check)
    for what, over, exc_type in cases:
        over = dict(over)
        transport = over.pop("sock", None)
        home = "udp4" if dgram else "tcp4"
        if check.function == "connect_accept":
            _bad_connect(fn, check, what, over, exc_type, transport)
            continue
        mine, theirs = _pair(home if transport in (None, "fd", "closed") else transport)
        with mine, theirs:
            theirs.send(b"m")  # waiting input: must still be there afterwards
            mine.settimeout(7.0)
            target: Any = mine
            if transport == "fd":
                target = mine.fileno()
            elif transport == "closed":
                target = socket.socket(mine.family, mine.type)
                target.close()
            kwargs = dict(GOOD[check.function], mode=check.mode, timeout=TIMEOUT)
            kwargs.update(over)
            _expect_refusal(fn, target, kwargs, what, exc_type)
            if not _nothing_to_read(theirs):
                raise Failed(f"{what}: the peer received something before the error")
            if mine.gettimeout() != 7.0:
                raise Failed(f"{what}: the socket's mode was changed before the error")
            mine.settimeout(TIMEOUT)
            if mine.recv(16) != b"m":
                raise Failed(f"{what}: waiting input was consumed before the error")
    return f"{len(cases)} bad arguments refused before any I/O, one line each"


def _bad_connect(fn: Callable[..., Any], check: Check, what: str, over: dict[str, Any],
                 exc_type: type[Exception], transport: str | None) -> None:
    kwargs = dict(GOOD["connect_accept"], mode=check.mode, timeout=TIMEOUT)
    kwargs.update(over)
    if transport == "tcp4":  # not listening
        with socket.socket() as plain:
            _expect_refusal(fn, plain, kwargs, what, exc_type)
        return
    listener = Listener("tcp4")
    try:
        target: Any = listener.sock
        if transport == "fd":
            target = listener.sock.fileno()
        elif transport == "closed":
            target = socket.socket()
            target.close()
        _expect_refusal(fn, target, kwargs, what, exc_type)
    finally:
        listener.close()


def _expect_refusal(fn: Callable[..., Any], sock: Any, kwargs: dict[str, Any], what: str,
                    exc_type: type[Exception]) -> None:
    try:
        got = fn(sock, **kwargs)
    except exc_type as exc:
        text = str(exc)
        if not text.strip() or "\n" in text:
            raise Failed(f"{what}: {exc_type.__name__} without a one-line message") from None
        return
    except Exception as exc:
        raise Failed(f"{what}: raised {type(exc).__name__} ({_text(exc)}), expected "
                     f"{exc_type.__name__}") from None
    raise Failed(f"{what}: returned {got!r}, expected {exc_type.__name__}")


# ------------------------------------------------------------ the catalogue

Body = Callable[[Any, Check], str]
# Bounds (s): what a check takes at most when the impl keeps the contract.
_QUICK, _WAIT, _SIGINT = 10.0, 2 * SHORT + SLACK + 1.0, TIMEOUT + 1.0
PER_MODE: dict[str, list[tuple[str, Body, float]]] = {
    "stream_send": [("counts and integrity", send_counts, 3 * _QUICK),
                    ("bounded wait", send_wait, _WAIT),
                    ("closed peer", send_closed, _QUICK),
                    ("signal storm", send_storm, _QUICK),
                    ("Ctrl-C", send_ctrl_c, _SIGINT)],
    "stream_pingpong": [("counts and integrity", pingpong_counts, 3 * _QUICK),
                        ("a wrong echo", pingpong_integrity, _QUICK),
                        ("bounded wait", pingpong_wait, _WAIT),
                        ("closed peer", pingpong_closed, _QUICK),
                        ("signal storm", pingpong_storm, _QUICK),
                        ("Ctrl-C", pingpong_ctrl_c, _SIGINT)],
    "dgram_send": [("counts and integrity", dsend_counts, 3 * _QUICK),
                   ("bounded wait", dsend_wait, _WAIT),
                   ("closed peer", dsend_closed, _QUICK),
                   ("signal storm", dsend_storm, _QUICK),
                   ("Ctrl-C", dsend_ctrl_c, _SIGINT)],
    "dgram_pingpong": [("counts and integrity", dpingpong_counts, 3 * _QUICK),
                       ("lost rounds counted", dpingpong_lost, _WAIT + 1.0),
                       ("round numbers, stale replies", dpingpong_stale, _QUICK),
                       ("a wrong echo", dpingpong_integrity, _QUICK),
                       ("signal storm", dpingpong_storm, _QUICK),
                       ("Ctrl-C", dpingpong_ctrl_c, _SIGINT)],
    "connect_accept": [("counts", connect_counts, _QUICK)],
    "stream_recv": [("counts and integrity", recv_counts, _QUICK),
                    ("a wrong byte", recv_integrity, _QUICK),
                    ("bounded wait", recv_wait, _WAIT)],
    "stream_echo": [("counts and integrity", echo_counts, _QUICK),
                    ("bounded wait", echo_wait, _WAIT)],
    "dgram_recv": [("counts and integrity", drecv_counts, _QUICK),
                   ("idle end", drecv_idle, _WAIT)],
    "dgram_echo": [("counts and integrity", decho_counts, _QUICK),
                   ("idle end", decho_idle, _WAIT)],
}
BAD_ARGUMENTS: tuple[str, Body, float] = ("bad arguments", bad_arguments, 3 * _QUICK)
