"""What both twins share: the loop contract, argument checks, socket set-up.

Design note
-----------
fastsock has two implementations of the same loops: ``_loops`` (Cython,
compiled) and ``_pyloops`` (pure Python).  The comparison is only honest if
they do the same syscalls per message, so everything that is not the
per-message loop lives here, in plain Python, and both twins call it:

* ``check_*``: argument validation, done before any I/O, raising
  ``ValueError``/``TypeError`` with a one-line message;
* ``configure``: puts the socket in the mode's state (blocking flag,
  timeouts) with the same syscalls for both twins.

The contract (both twins, same names, same signatures, same results)
--------------------------------------------------------------------
The contract is public and versioned (:data:`CONTRACT_VERSION`): any module
that keeps it is an *impl* fastsock can measure, the twins, the standard
library's idioms (``fastsock._idioms``) and users' own modules alike.  An
impl declares ``FASTSOCK_CONTRACT = 1``, provides some of the functions
below (those it defines) and may declare the modes it runs (``MODES``);
what else it must and may do, and the version policy, are in
``docs/impls.md``; ``fastsock.contract`` re-exports the helpers below for
impls to use.

All functions take a *connected* ``socket.socket``.  ``mode`` is one of
``MODES``; ``timeout`` (seconds, > 0) bounds every wait.  Sizes are bytes.

Stream sockets (TCP, Unix stream):

``stream_send(sock, count, size, mode, timeout=DEFAULT_TIMEOUT, pattern=False) -> int``
    Send ``count`` messages of ``size`` bytes, each sent completely
    (partial sends are continued).  Returns the bytes sent
    (``count * size``).
``stream_recv(sock, total, size, mode, timeout=DEFAULT_TIMEOUT, verify=False) -> int``
    ``recv_into`` a ``size``-byte buffer until ``total`` bytes arrived
    (``total=None``: until EOF) or EOF.  Returns the bytes received.
``stream_echo(sock, size, mode, timeout=DEFAULT_TIMEOUT) -> int``
    Receive up to ``size`` bytes, send them back completely, until EOF.
    Returns the bytes echoed.
``stream_pingpong(sock, count, size, mode, timeout=DEFAULT_TIMEOUT, samples=None,
pattern=False) -> int``
    ``count`` round trips: send ``size`` bytes, receive ``size`` bytes.  With
    ``samples`` (a writable int64 buffer, e.g. ``array('q')``, of length
    >= ``count``) each round trip's time in ns goes to ``samples[i]``.
    EOF in the middle raises ``ConnectionResetError``.  Returns ``count``.

Datagram sockets (UDP, Unix datagram); datagram payloads are >= 1 byte,
and an empty datagram means "end":

``dgram_send(sock, count, size, mode, timeout=DEFAULT_TIMEOUT, pattern=False, batch=1) -> int``
    Send ``count`` datagrams of ``size`` bytes.  Returns datagrams sent.
``dgram_recv(sock, count, size, mode, timeout=DEFAULT_TIMEOUT, verify=False, batch=1) -> int``
    Receive up to ``count`` datagrams into a ``size``-byte buffer; stops
    early on an empty datagram or when none arrives for ``timeout``
    seconds (UDP loses: this is the bound on waiting, not an error).
    Returns datagrams received (the empty one not counted).
``dgram_echo(sock, size, mode, timeout=DEFAULT_TIMEOUT) -> int``
    Echo datagrams until an empty one (echoed too) or ``timeout`` idle.
    Returns datagrams echoed (the empty one not counted).
``dgram_pingpong(sock, count, size, mode, timeout=DEFAULT_TIMEOUT, samples=None,
pattern=False) -> tuple[int, int]``
    ``count`` rounds: send a datagram whose first byte is the round number
    mod 256, wait up to ``timeout`` for the reply carrying that byte
    (stale replies are dropped); no reply in time counts the round lost.
    Returns ``(completed, lost)``; samples of completed rounds are written
    contiguously to ``samples[0:completed]``.

Connections (TCP, Unix stream); the one loop that takes a *listening*
socket and plays both ends itself, so the measure needs no peer:

``connect_accept(listener, count, mode, timeout=DEFAULT_TIMEOUT, verify=False) -> int``
    ``count`` times: create a client socket of the listener's family and
    type, connect it to the listener's address, accept the connection,
    close the accepted socket, then the client.  No payload; with
    ``verify`` (tests, off when measuring) the client sends one byte, the
    iteration number mod 256, and the accepted socket must receive it
    (``ValueError`` otherwise): proof that what was accepted is what
    connected.  Modes: ``CONNECT_MODES`` (no ``spin``: on loopback the
    handshake completes inside ``connect``, there is nothing to spin on).
    Returns ``count``.

Batching (``batch``, datagrams per syscall, 1 to ``MAX_BATCH``): 1 is one
``send``/``recv`` per datagram, in both twins.  ``batch > 1`` uses Linux's
``sendmmsg``/``recvmmsg`` and only the compiled twin has it (``HAVE_MMSG``
of each twin, ``fastsock.HAVE_MMSG`` for the loaded one): the standard
library has no such call, so the pure-Python twin, and the compiled one
off Linux, raise ``ValueError`` before any I/O.  Batched, ``dgram_send``
sends in calls of up to ``batch`` datagrams (the last call smaller; a
call that sent only part of its datagrams is continued with the rest) and
``dgram_recv`` takes up to ``min(batch, count - received)`` per call with
``MSG_WAITFORONE`` (it waits for the first datagram only, never for a full
batch).  Each call waits the mode's way, exactly as one ``send``/``recv``
does (recvmmsg's own timeout argument is not used: it is only checked
between datagrams).  One difference the kernel makes: a blocking
``sendmmsg`` whose wait expires after it sent part of its batch returns
that part (the error is dropped), and only the next call's wait reports
it, so a stalled receiver ends a batched ``blocking`` send after up to two
timeouts.  An empty datagram inside a batch ends ``dgram_recv``; the
datagrams before it count, those after it in the same batch are consumed
and dropped.  Results, ``pattern`` and ``verify`` are the same as with
``batch=1``.

Modes (what each call does when the kernel is not ready):

``blocking``    blocking fd; ``SO_RCVTIMEO``/``SO_SNDTIMEO`` = timeout, so a
                stalled peer ends in ``TimeoutError`` without an extra syscall.
``timeout``     what ``sock.settimeout(t)`` does in CPython: O_NONBLOCK fd,
                ``poll(fd, t)`` before every send/recv, retried on EAGAIN.
``nonblocking`` O_NONBLOCK; call first, on EAGAIN ``poll(fd, t)``, retry.
``spin``        O_NONBLOCK; on EAGAIN retry at once (user-space busy
                polling), checking signals and the clock every
                ``SPIN_CHECK`` failed tries.

``connect_accept`` makes per connection the calls CPython's socket module
makes for ``socket()``, ``connect()``, ``accept()`` and ``close()`` in each
mode (the compiled loop repeats them, so that the interpreter is the only
difference):

``blocking``    ``socket(SOCK_CLOEXEC)``; ``SO_SNDTIMEO`` = timeout on the
                client (``connect`` waits up to it; the listener has
                ``SO_RCVTIMEO``, which bounds ``accept``); ``connect``;
                ``accept4(SOCK_CLOEXEC)``, then ``getsockname`` on the new fd
                (CPython's check that ``socket(fileno=fd)`` is a socket).
``timeout``     ``settimeout``: ``socket``, ``ioctl(FIONBIO)``, ``connect`` ->
                EINPROGRESS, ``poll`` (POLLOUT|POLLERR), ``SO_ERROR``; the
                listener polls before ``accept4``, and the accepted socket is
                made blocking again (``ioctl``), as ``socket.accept`` does for
                a listener with a timeout.
``nonblocking`` ``socket(SOCK_NONBLOCK)``, ``connect`` -> EINPROGRESS, ``poll``
                (POLLOUT), ``SO_ERROR``; ``accept4``, on EAGAIN ``poll``, retry.

Close order: the accepted socket first.  Its side then holds TCP's
TIME_WAIT, keyed by the listener's port and the client's ephemeral port;
the client, closing second, goes straight to CLOSED and its port is free
at once, so a long loop never runs out of ephemeral ports (the client
closing first leaves its port in TIME_WAIT: this kernel's
``tcp_tw_reuse=2`` recycles it only after ``tcp_tw_reuse_delay``, 1 s,
and the port search slows down as the range fills).  When ``connect``
picks a port again, its SYN meets the listener side's TIME_WAIT, which
TCP timestamps (RFC 6191, on by default) let the new connection take over:
TIME_WAIT entries stay bounded by the ports in use, about half the
ephemeral range per listener (``connect`` takes even ports).  Nothing
here changes a system setting.  Measured on Linux 6.18 (tcp_tw_reuse=2,
range 32768-60999): 100,000 connections of a plain Python loop ran at
28,000/s with the accepted side closing first and left 14,114 TIME_WAIT
entries, at 15,600/s with the client first (30,000 entries, its port
search slowed by them).  Listeners of successive processes add up to
``tcp_max_tw_buckets`` (131,072 there; a default run reaches it); beyond,
the kernel keeps no TIME_WAIT for new closes (an informational log line),
which did not change the CPU time per connection (within 2%).  An
abortive close (SO_LINGER 0, an RST) would avoid TIME_WAIT altogether,
but it measures an abort, not a close, and costs one more call.

Integrity (tests, off when measuring): with ``pattern`` the sender's byte at
stream offset ``i`` is ``i % PATTERN_PERIOD``; datagram byte ``j`` is
``(first + j) % PATTERN_PERIOD``.  With ``verify`` the receiver checks it
and raises ``ValueError`` on the first wrong byte.

Errors: errno becomes ``OSError(errno, strerror)`` (hence the right
subclass); EINTR is retried after running signal handlers (PEP 475), so
Ctrl-C raises ``KeyboardInterrupt`` promptly; an expired wait raises
``TimeoutError``.
"""

from __future__ import annotations

import errno
import socket
import struct

# The contract's version: an impl declares the one it keeps
# (``FASTSOCK_CONTRACT``); see docs/impls.md for the version policy.
CONTRACT_VERSION = 1

MODES = ("blocking", "timeout", "nonblocking", "spin")
# The modes of connect_accept: spin has nothing to spin on (see above).
CONNECT_MODES = ("blocking", "timeout", "nonblocking")

# Default bound on any single wait, in seconds.
DEFAULT_TIMEOUT = 5.0
# Failed tries between two signal/clock checks in spin mode (count).
SPIN_CHECK = 1024
# Period of the integrity pattern, in bytes: a prime, so that it never lines
# up with the power-of-two sizes the suite uses.
PATTERN_PERIOD = 251
# Largest datagram payloads, in bytes: 65535 - 20 (IPv4) - 8 (UDP);
# IPv6's payload length excludes its own header: 65535 - 8.
UDP4_MAX = 65507
UDP6_MAX = 65527
# Largest stream message accepted (bytes): a sanity bound on the buffer.
STREAM_MAX = 1 << 30
# Address families connect_accept takes.
CONNECT_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)

# Largest batch (datagrams per sendmmsg/recvmmsg): the kernel caps vlen at
# UIO_MAXIOV (1024) anyway; the receiver's buffer is batch * size bytes.
MAX_BATCH = 1024


def _fd(sock: socket.socket) -> int:
    if not isinstance(sock, socket.socket):
        raise TypeError(f"expected a socket.socket, got {type(sock).__name__}")
    fd = sock.fileno()
    if fd < 0:
        raise ValueError("socket is closed")
    return fd


def _positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def check_mode(mode: object) -> int:
    """Return the mode's index in MODES, or raise ValueError."""
    if not isinstance(mode, str):
        raise TypeError(f"mode must be a str, got {type(mode).__name__}")
    try:
        return MODES.index(mode)
    except ValueError:
        raise ValueError(
            f"unknown mode {mode!r} (expected one of: {', '.join(MODES)})"
        ) from None


def check_mode_of(mode: object, modes: tuple[str, ...], impl: str, why: str) -> int:
    """``check_mode`` for an impl that runs only ``modes`` (its ``MODES``):
    ValueError naming ``impl`` and ``why`` for a contract mode it leaves out."""
    index = check_mode(mode)
    if mode not in modes:
        raise ValueError(f"mode {mode!r} does not apply to {impl}: {why} "
                         f"(its modes: {', '.join(modes)})")
    return index


def check_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout must be a number, got {type(timeout).__name__}")
    if not timeout > 0 or timeout != timeout or timeout > 1e6:
        raise ValueError(f"timeout must be > 0 and finite seconds, got {timeout}")
    return float(timeout)


def max_datagram(sock: socket.socket) -> int | None:
    """The transport's largest datagram payload in bytes, when known up front.

    Unix datagram sockets are bounded by the send buffer, which the kernel
    checks (EMSGSIZE); ``None`` means "let the kernel say".
    """
    if sock.family == socket.AF_INET:
        return UDP4_MAX
    if sock.family == socket.AF_INET6:
        return UDP6_MAX
    return None


def check_stream(sock: socket.socket, size: object, count: object = 1) -> int:
    """Validate a stream call; returns the fd."""
    fd = _fd(sock)
    if sock.type != socket.SOCK_STREAM:
        raise ValueError("expected a stream socket (SOCK_STREAM)")
    _positive("count", count)
    _positive("size", size)
    if size > STREAM_MAX:  # type: ignore[operator]
        raise ValueError(f"size must be <= {STREAM_MAX} bytes, got {size}")
    return fd


def check_dgram(sock: socket.socket, size: object, count: object = 1) -> int:
    """Validate a datagram call; returns the fd."""
    fd = _fd(sock)
    if sock.type != socket.SOCK_DGRAM:
        raise ValueError("expected a datagram socket (SOCK_DGRAM)")
    _positive("count", count)
    _positive("size", size)
    limit = max_datagram(sock)
    if limit is not None and size > limit:  # type: ignore[operator]
        raise ValueError(
            f"size {size} exceeds the largest datagram of this transport ({limit} bytes)"
        )
    return fd


def check_listener(sock: socket.socket, count: object) -> int:
    """Validate a ``connect_accept`` call's listener and count; returns the fd."""
    fd = _fd(sock)
    if sock.type != socket.SOCK_STREAM:
        raise ValueError("expected a stream socket (SOCK_STREAM)")
    if sock.family not in CONNECT_FAMILIES:
        raise ValueError(f"expected an AF_INET, AF_INET6 or AF_UNIX socket, got {sock.family!r}")
    _positive("count", count)
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ValueError("expected a listening socket (call listen() first)")
    return fd


def check_connect_mode(mode: object) -> int:
    """Return the mode's index in MODES, or raise ValueError for a mode
    ``connect_accept`` does not have."""
    index = check_mode(mode)
    if mode not in CONNECT_MODES:
        raise ValueError(
            f"mode {mode!r} does not apply to connect_accept "
            f"(expected one of: {', '.join(CONNECT_MODES)})"
        )
    return index


def not_accepted(index: int, got: int, want: int) -> ValueError:
    """``verify``: the accepted socket did not get its client's byte."""
    what = "nothing (EOF)" if got < 0 else f"byte {got}"
    return ValueError(f"connection {index}: the accepted socket received {what}, "
                      f"expected byte {want}")

def check_batch(batch: object, mmsg: bool, impl: str) -> int:
    """Datagrams per syscall, 1 to MAX_BATCH; ``batch > 1`` needs a twin
    with sendmmsg/recvmmsg (``mmsg``): else ValueError, before any I/O."""
    if isinstance(batch, bool) or not isinstance(batch, int):
        raise TypeError(f"batch must be an int, got {type(batch).__name__}")
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"batch must be 1 to {MAX_BATCH} datagrams per call, got {batch}")
    if batch > 1 and not mmsg:
        if impl == "python":
            raise ValueError(
                f"batch={batch}: Python's socket module has no sendmmsg/recvmmsg; "
                "only the compiled loops (fastsock._loops) batch"
            )
        if impl == "cython":
            raise ValueError(f"batch={batch} needs sendmmsg/recvmmsg, which only Linux has")
        raise ValueError(f"batch={batch}: {impl} sends one datagram per call (batch=1 only)")
    return batch


def check_total(total: object) -> int:
    """``stream_recv``'s total: None (until EOF) becomes -1."""
    if total is None:
        return -1
    if isinstance(total, bool) or not isinstance(total, int):
        raise TypeError(f"total must be an int or None, got {type(total).__name__}")
    if total < 0:
        raise ValueError(f"total must be >= 0 or None, got {total}")
    return total


def check_samples(samples: object, count: int) -> memoryview | None:
    """A writable int64 buffer of at least ``count`` items, as a memoryview."""
    if samples is None:
        return None
    try:
        view = memoryview(samples)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError("samples must be a writable int64 buffer (array('q'))") from None
    if view.readonly or view.format not in ("q", "l", "<q", "=q") or view.itemsize != 8:
        raise TypeError("samples must be a writable int64 buffer (array('q'))")
    if view.ndim != 1 or not view.c_contiguous:
        raise TypeError("samples must be one-dimensional and contiguous")
    if len(view) < count:
        raise ValueError(f"samples holds {len(view)} items, needs {count}")
    return view


def configure(sock: socket.socket, mode: str, timeout: float) -> None:
    """Put ``sock`` in ``mode``'s state; the same syscalls for both twins."""
    if mode == "blocking":
        sock.setblocking(True)
        tv = _timeval(timeout)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
    elif mode == "timeout":
        # CPython keeps the fd O_NONBLOCK and polls before every call.
        sock.settimeout(timeout)
    else:
        sock.setblocking(False)


def _timeval(seconds: float) -> bytes:
    sec = int(seconds)
    usec = round((seconds - sec) * 1e6)
    return struct.pack("@ll", sec, usec)


def timed_out() -> TimeoutError:
    """The error both twins raise when a wait expires."""
    return TimeoutError(errno.ETIMEDOUT, "timed out")


def peer_closed() -> ConnectionResetError:
    """EOF in the middle of a round trip: the peer went away."""
    return ConnectionResetError(errno.ECONNRESET, "connection closed by peer")


def pattern_buffer(size: int) -> bytearray:
    """``size + PATTERN_PERIOD`` bytes of the pattern: any message of
    ``size`` bytes starting at stream offset ``o`` is the slice
    ``[o % PATTERN_PERIOD : o % PATTERN_PERIOD + size]``."""
    n = size + PATTERN_PERIOD
    period = bytes(range(PATTERN_PERIOD))
    reps = n // PATTERN_PERIOD + 1
    return bytearray((period * reps)[:n])


def pattern_error(offset: int, got: int, want: int) -> ValueError:
    return ValueError(
        f"integrity check failed at byte {offset}: got {got}, expected {want}"
    )
