"""Event-loop comparators: the stream loops driven by asyncio (or uvloop).

Design note
-----------
The twins (``_loops``, ``_pyloops``) answer "what does the interpreter
cost?"; these loops answer "what does an event loop cost on top?", so that a
user sees where asyncio stands between raw Python and the compiled loops.
Two APIs, each on two event loops (``EVENT_LOOPS``):

``streams``  what most asyncio code uses: ``open_connection(sock=...)`` /
             ``open_unix_connection(sock=...)``; per message
             ``writer.write(buf); await writer.drain()``; a round trip adds
             ``await reader.readexactly(size)``.
``sock``     the closest to the raw loops: ``loop.sock_sendall(sock, buf)``
             and ``loop.sock_recv_into(sock, view)`` until the message is
             complete (both try the syscall first and wait on EAGAIN, as
             the twins' ``nonblocking`` mode does).

``asyncio`` is the standard library's selector loop
(``asyncio.SelectorEventLoop``, epoll on Linux), whatever event-loop policy
is installed; ``uvloop`` (libuv) is optional: ``pip install
'fastsock[uvloop]'``.

:class:`AsyncConn` holds one connected stream socket, its event loop and,
for ``streams``, the reader and writer: they are made once (a benchmark's
set-up), so each ``stream_send`` / ``stream_pingpong`` call runs exactly one
coroutine on a loop that already exists.  The two methods have the twins'
names and signatures (``fastsock._common``), for the two loops the event
loops are compared on (the measured side of stream and pingpong); ``sock``
must be the connection's own socket and ``mode`` must be ``nonblocking``
(an event loop is non-blocking I/O plus a selector).  The argument checks,
``pattern`` (verified by the receiving peer; a round trip checks its echo),
RTT ``samples`` (``time.perf_counter_ns``, as the Python twin) and the
errors are the contract's: ``ConnectionResetError`` on EOF in a round trip,
``TimeoutError`` on a stalled peer, ``ValueError`` on a wrong echoed byte.

Bounded waits without a timer per message: a per-call ``asyncio.wait_for``
would cost a task and a timer handle per wait, more than the syscall being
measured.  A :class:`_Watchdog` instead wakes ``WATCH_TICKS`` times per
``timeout`` and cancels the call when its progress counter (messages done)
has not moved for ``timeout`` seconds; the cancellation becomes the
contract's ``TimeoutError``.  So a stall is noticed within ``timeout`` to
``timeout * (1 + 1/WATCH_TICKS)`` seconds, and one message must complete
within ``timeout``.  :meth:`AsyncConn.abort` ends a running call with a
given exception the same way (the benchmark's dead-peer watch uses it).

Socket options stay the caller's: asyncio and uvloop turn TCP_NODELAY on
for every TCP transport they make, and the connection puts back the value
the socket had (a benchmark case decides it, the same for every impl).

``stream_send`` over ``streams`` ends with the transport's buffer flushed to
the kernel: ``drain()`` returns below the low-water mark, and the bytes
still buffered are part of the send (like ``sendall``); the benchmark then
stops the event loop, which would never send them.

Limits: stream sockets only (no datagram loops); the receive side of a
stream and the echo are the peer's (the compiled loops), not measured here.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Coroutine
from typing import Any, Callable

from fastsock._common import (
    DEFAULT_TIMEOUT,
    PATTERN_PERIOD,
    check_mode,
    check_samples,
    check_stream,
    check_timeout,
    configure,
    pattern_buffer,
    pattern_error,
    peer_closed,
    timed_out,
)

EVENT_LOOPS = ("asyncio", "uvloop")
APIS = ("streams", "sock")
MODE = "nonblocking"  # the only mode an event loop has
# Watchdog wake-ups per timeout (count): a stall is noticed at most
# timeout / WATCH_TICKS seconds late.
WATCH_TICKS = 4
# Bound on closing a connection (s): cancelled calls finishing, the
# transport flushing to a peer that may no longer read.
CLOSE_TIMEOUT = 1.0
UVLOOP_HINT = "pip install 'fastsock[uvloop]'"

_now_ns = time.perf_counter_ns


class EventLoopError(RuntimeError):
    """An error the event loop reported outside the running call (a failed
    callback); ``str()`` is one line."""


def new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of ``kind`` (one of ``EVENT_LOOPS``); ImportError
    with the install hint when uvloop is asked for and missing."""
    if kind == "asyncio":
        # the class, not asyncio.new_event_loop(): an installed policy
        # (uvloop's, say) must not change what "asyncio" measures
        return asyncio.SelectorEventLoop()
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:
            raise ImportError(f"uvloop is not installed ({UVLOOP_HINT})") from None
        return uvloop.new_event_loop()
    raise ValueError(f"unknown event loop {kind!r} (expected one of: {', '.join(EVENT_LOOPS)})")


def describe(loop: asyncio.AbstractEventLoop) -> str:
    """One line naming an event loop: asyncio's loop class and selector,
    or uvloop's version."""
    cls = type(loop)
    if cls.__module__.split(".")[0] == "uvloop":
        import uvloop

        return f"uvloop {getattr(uvloop, '__version__', '(version unknown)')}"
    selector = getattr(loop, "_selector", None)  # private: shown when present
    where = f"/{type(selector).__name__}" if selector is not None else ""
    return f"asyncio {cls.__name__}{where}"


class _Watchdog:
    """Cancels ``task`` when ``progress`` has not changed for ``timeout`` s."""

    __slots__ = (
        "_handle",
        "_loop",
        "_seen",
        "_since",
        "_task",
        "_tick",
        "_timeout",
        "expired",
        "progress",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.progress = 0  # written by the running call after each message
        self.expired = False
        self._loop = loop
        self._task: asyncio.Task[Any] | None = None
        self._timeout = timeout
        self._tick = timeout / WATCH_TICKS
        self._seen = -1
        self._since = loop.time()
        self._handle = loop.call_later(self._tick, self._check)

    def watch(self, task: asyncio.Task[Any]) -> None:
        self._task = task

    def _check(self) -> None:
        now = self._loop.time()
        if self.progress != self._seen:
            self._seen, self._since = self.progress, now
        elif now - self._since >= self._timeout and self._task is not None:
            self.expired = True
            self._task.cancel()
            return
        self._handle = self._loop.call_later(self._tick, self._check)

    def close(self) -> None:
        self._handle.cancel()


def _mismatch(got: bytes | memoryview, want: memoryview, base: int) -> ValueError:
    for j in range(len(want)):
        if got[j] != want[j]:
            return pattern_error(base + j, got[j], want[j])
    return pattern_error(base, -1, -1)  # unreachable when called on a mismatch


class AsyncConn:
    """One connected stream socket driven by an event loop.

    ``AsyncConn(sock, "asyncio", "streams")`` puts ``sock`` in non-blocking
    mode, makes the loop and (``streams``) the reader and writer.  The
    connection owns the socket from then on: :meth:`close` closes it (with
    ``streams``, through the transport).  One call at a time, from the
    thread that made it.
    """

    def __init__(self, sock: socket.socket, event_loop: str = "asyncio",
                 api: str = "streams", timeout: float = DEFAULT_TIMEOUT,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        """``loop``: an event loop of ``event_loop``'s kind to share with
        other connections (:class:`AsyncGroup`), which then owns it (this
        connection's :meth:`close` leaves it open); None: a loop of its own."""
        check_stream(sock, 1)
        timeout = check_timeout(timeout)
        if api not in APIS:
            raise ValueError(f"unknown API {api!r} (expected one of: {', '.join(APIS)})")
        self.sock = sock
        self.api = api
        self.kind = event_loop
        self._owns_loop = loop is None
        self.loop = new_event_loop(event_loop) if loop is None else loop
        self.event_loop = describe(self.loop)
        self._closed = False
        if self._owns_loop:
            self.loop.set_exception_handler(self._on_loop_error)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[Any] | None = None
        self._abort: BaseException | None = None
        try:
            configure(sock, MODE, timeout)
            if api == "streams":
                unix = sock.family == getattr(socket, "AF_UNIX", None)
                opener = asyncio.open_unix_connection if unix else asyncio.open_connection

                async def _open(dog: _Watchdog) -> tuple[Any, Any]:
                    return await opener(sock=sock)

                tcp = sock.family in (socket.AF_INET, socket.AF_INET6)
                nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) if tcp else 0
                self.reader, self.writer = self._run(_open, timeout)
                if tcp:  # asyncio and uvloop set it on every TCP transport
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, nodelay)
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self._closed or self.loop.is_closed()

    def __enter__(self) -> AsyncConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ loops

    def _check(self, sock: socket.socket, size: object, count: object, mode: object,
               timeout: object) -> float:
        if self.closed:
            raise ValueError("the connection is closed")
        check_stream(sock, size, count)
        if sock is not self.sock:
            raise ValueError("not the socket this connection was opened on")
        check_mode(mode)
        if mode != MODE:
            raise ValueError(
                f"an event loop is non-blocking I/O: mode must be {MODE!r}, got {mode!r}")
        return check_timeout(timeout)

    def stream_send(self, sock: socket.socket, count: int, size: int, mode: str,
                    timeout: float = DEFAULT_TIMEOUT, pattern: bool = False) -> int:
        """Send ``count`` messages of ``size`` bytes; returns the bytes sent."""
        timeout = self._check(sock, size, count, mode, timeout)
        return self._run(self._send_body(count, size, pattern), timeout)  # type: ignore[no-any-return]

    def _send_body(self, count: int, size: int, pattern: bool
                   ) -> Callable[[_Watchdog], Coroutine[Any, Any, int]]:
        """The coroutine function of a checked :meth:`stream_send`."""
        sock = self.sock
        pat = memoryview(pattern_buffer(size)) if pattern else None
        if self.api == "streams":
            writer = self.writer
            assert writer is not None

            async def body(dog: _Watchdog) -> int:
                msg = memoryview(bytearray(size))
                write, drain = writer.write, writer.drain
                off = 0
                for i in range(count):
                    if pat is not None:
                        msg = pat[off:off + size]
                        off = (off + size) % PATTERN_PERIOD
                    write(msg)
                    await drain()
                    dog.progress = i
                await _flush(writer)
                return count * size
        else:
            loop = self.loop

            async def body(dog: _Watchdog) -> int:
                msg = memoryview(bytearray(size))
                sendall = loop.sock_sendall
                off = 0
                for i in range(count):
                    if pat is not None:
                        msg = pat[off:off + size]
                        off = (off + size) % PATTERN_PERIOD
                    await sendall(sock, msg)
                    dog.progress = i
                return count * size
        return body

    def stream_pingpong(self, sock: socket.socket, count: int, size: int, mode: str,
                        timeout: float = DEFAULT_TIMEOUT, samples: Any = None,
                        pattern: bool = False) -> int:
        """``count`` round trips of ``size`` bytes; returns ``count``."""
        timeout = self._check(sock, size, count, mode, timeout)
        out = check_samples(samples, count)
        return self._run(self._pingpong_body(count, size, out, pattern),  # type: ignore[no-any-return]
                         timeout)

    def _pingpong_body(self, count: int, size: int, out: Any, pattern: bool
                       ) -> Callable[[_Watchdog], Coroutine[Any, Any, int]]:
        """The coroutine function of a checked :meth:`stream_pingpong`."""
        sock = self.sock
        pat = memoryview(pattern_buffer(size)) if pattern else None
        now = _now_ns
        if self.api == "streams":
            reader, writer = self.reader, self.writer
            assert reader is not None and writer is not None

            async def body(dog: _Watchdog) -> int:
                msg = memoryview(bytearray(size))
                write, drain, readexactly = writer.write, writer.drain, reader.readexactly
                off = 0
                t0 = 0
                for i in range(count):
                    if pat is not None:
                        msg = pat[off:off + size]
                        off = (off + size) % PATTERN_PERIOD
                    if out is not None:
                        t0 = now()
                    write(msg)
                    await drain()
                    try:
                        data = await readexactly(size)
                    except asyncio.IncompleteReadError:
                        raise peer_closed() from None
                    if out is not None:
                        out[i] = now() - t0
                    if pat is not None and data != msg:
                        raise _mismatch(data, msg, i * size)
                    dog.progress = i
                return count
        else:
            loop = self.loop

            async def body(dog: _Watchdog) -> int:
                msg = memoryview(bytearray(size))
                rbuf = memoryview(bytearray(size))
                sendall, recv_into = loop.sock_sendall, loop.sock_recv_into
                off = 0
                t0 = 0
                for i in range(count):
                    if pat is not None:
                        msg = pat[off:off + size]
                        off = (off + size) % PATTERN_PERIOD
                    if out is not None:
                        t0 = now()
                    await sendall(sock, msg)
                    got = 0
                    while got < size:
                        n = await recv_into(sock, rbuf[got:] if got else rbuf)
                        if n == 0:
                            raise peer_closed()
                        got += n
                    if out is not None:
                        out[i] = now() - t0
                    if pat is not None and rbuf != msg:
                        raise _mismatch(rbuf, msg, i * size)
                    dog.progress = i
                return count
        return body

    # ------------------------------------------------------------ running

    def _run(self, body: Callable[[_Watchdog], Coroutine[Any, Any, Any]],
             timeout: float) -> Any:
        """Run ``body`` as one task, bounded by a watchdog."""
        loop = self.loop
        dog = _Watchdog(loop, timeout)
        task = loop.create_task(body(dog))
        dog.watch(task)
        self._task, self._abort = task, None
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if self._abort is not None:
                raise self._abort from None
            if dog.expired:
                raise timed_out() from None
            raise
        finally:
            dog.close()
            self._task = None
            if not task.done():  # left by an exception from outside (Ctrl-C)
                task.cancel()

    def abort(self, exc: BaseException) -> None:
        """End the running call with ``exc`` (from a callback of this loop,
        e.g. a signal handler added with ``loop.add_signal_handler``)."""
        if self._task is not None and not self._task.done() and self._abort is None:
            self._abort = exc
            self._task.cancel()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # A callback failed outside the running call (a transport's, say):
        # end the call with it, in one line, rather than print a traceback
        # and carry on.  Outside a call (closing), it is dropped.
        self.abort(_loop_error(context))

    def close(self) -> None:
        """Close the streams, the socket and the loop (a shared loop stays
        open: its group closes it); idempotent, bounded by
        ``CLOSE_TIMEOUT`` per step."""
        loop = self.loop
        if self._closed:
            return
        self._closed = True
        if loop.is_closed():  # a group's loop, closed before this connection
            self.sock.close()
            return
        writer = self.writer

        async def closing() -> None:
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in pending:
                t.cancel()
            if pending:
                await asyncio.wait(pending, timeout=CLOSE_TIMEOUT)
            if writer is None:
                return
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), CLOSE_TIMEOUT)
            except asyncio.TimeoutError:  # still flushing to a peer that stopped reading
                writer.transport.abort()
            except Exception:  # the connection's own error: it is closed
                pass
            for _ in range(2):  # the transport's close callbacks run in these turns
                await asyncio.sleep(0)

        try:
            loop.run_until_complete(closing())
            if self._owns_loop:
                loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            self.reader = self.writer = None
            if self._owns_loop:
                loop.close()
            self.sock.close()  # the streams' transport closed it already: a no-op then


class AsyncGroup:
    """N connections on one event loop, driven together: what an event-loop
    program does with N clients (one loop, a task each), where the twins
    would need a thread each.

    ``AsyncGroup(socks, "asyncio", "sock")`` makes the loop and an
    :class:`AsyncConn` per socket on it.  :meth:`stream_send` and
    :meth:`stream_pingpong` take a list of sockets (the group's, in order)
    and run the connections' calls as one task (``asyncio.gather``) under
    one watchdog, so a call ends when every connection is done; their
    checks, errors and bounds are :class:`AsyncConn`'s (a stall of any
    connection stops the group's progress).  :meth:`close` closes every
    connection, then the loop.
    """

    def __init__(self, socks: list[socket.socket], event_loop: str = "asyncio",
                 api: str = "streams", timeout: float = DEFAULT_TIMEOUT) -> None:
        if not socks:
            raise ValueError("a group needs at least one socket")
        self.loop = new_event_loop(event_loop)
        self.event_loop = describe(self.loop)
        self.loop.set_exception_handler(self._on_loop_error)
        self.conns: list[AsyncConn] = []
        self._task: asyncio.Task[Any] | None = None
        self._abort: BaseException | None = None
        try:
            for sock in socks:
                self.conns.append(AsyncConn(sock, event_loop, api, timeout, loop=self.loop))
        except BaseException:
            self.close()
            raise

    @property
    def closed(self) -> bool:
        return self.loop.is_closed()

    def _checked(self, socks: list[socket.socket], size: object, count: object, mode: object,
                 timeout: object) -> float:
        if len(socks) != len(self.conns):
            raise ValueError(f"{len(socks)} sockets for a group of {len(self.conns)}")
        out = 0.0
        for conn, sock in zip(self.conns, socks):
            out = conn._check(sock, size, count, mode, timeout)
        return out

    def stream_send(self, socks: list[socket.socket], count: int, size: int, mode: str,
                    timeout: float = DEFAULT_TIMEOUT, pattern: bool = False) -> int:
        """Each connection sends ``count`` messages of ``size`` bytes, all
        at once; returns the bytes sent by all."""
        timeout = self._checked(socks, size, count, mode, timeout)
        bodies = [c._send_body(count, size, pattern) for c in self.conns]
        return sum(self._run(bodies, timeout))

    def stream_pingpong(self, socks: list[socket.socket], count: int, size: int, mode: str,
                        timeout: float = DEFAULT_TIMEOUT, samples: Any = None,
                        pattern: bool = False) -> int:
        """Each connection makes ``count`` round trips, all at once;
        ``samples``: None or a buffer per connection.  Returns ``count``."""
        timeout = self._checked(socks, size, count, mode, timeout)
        outs = [check_samples(s, count) for s in (samples or [None] * len(self.conns))]
        bodies = [c._pingpong_body(count, size, out, pattern)
                  for c, out in zip(self.conns, outs)]
        self._run(bodies, timeout)
        return count

    def _run(self, bodies: list[Callable[[_Watchdog], Coroutine[Any, Any, int]]],
             timeout: float) -> list[int]:
        loop = self.loop
        dog = _Watchdog(loop, timeout)

        async def together() -> list[int]:
            return list(await asyncio.gather(*(body(dog) for body in bodies)))

        task = loop.create_task(together())
        dog.watch(task)
        self._task, self._abort = task, None
        try:
            return loop.run_until_complete(task)
        except asyncio.CancelledError:
            if self._abort is not None:
                raise self._abort from None
            if dog.expired:
                raise timed_out() from None
            raise
        finally:
            dog.close()
            self._task = None
            if not task.done():  # left by an exception from outside (Ctrl-C)
                task.cancel()

    def abort(self, exc: BaseException) -> None:
        """End the running call with ``exc`` (see :meth:`AsyncConn.abort`)."""
        if self._task is not None and not self._task.done() and self._abort is None:
            self._abort = exc
            self._task.cancel()

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        self.abort(_loop_error(context))  # as AsyncConn's

    def close(self) -> None:
        """Close every connection, then the loop; idempotent."""
        if self.loop.is_closed():
            return
        try:
            for conn in self.conns:
                conn.close()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()


def _loop_error(context: dict[str, Any]) -> BaseException:
    """An event loop's error context as one exception: its OSError as is,
    anything else an EventLoopError of one line."""
    exc = context.get("exception")
    text = context.get("message", "")
    if exc is not None:
        what = f"{type(exc).__name__}: {exc}"
        text = f"{text}: {what}" if text else what
    line = " ".join(str(text).split()) or "unknown event loop error"
    return exc if isinstance(exc, OSError) else EventLoopError(line)


async def _flush(writer: asyncio.StreamWriter) -> None:
    """Wait until the transport has handed every buffered byte to the
    kernel: with both water marks at 0, ``drain()`` returns only then."""
    tr = writer.transport
    if not tr.get_write_buffer_size():
        return
    low, high = tr.get_write_buffer_limits()
    tr.set_write_buffer_limits(high=0, low=0)
    try:
        await writer.drain()
    finally:
        if not tr.is_closing():
            tr.set_write_buffer_limits(high=high, low=low)
